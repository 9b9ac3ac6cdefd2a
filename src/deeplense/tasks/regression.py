"""Regression with calibrated uncertainty: a Gaussian mean and sigma per target (e.g. log10 m_a)."""

from __future__ import annotations

from typing import Any, ClassVar, cast

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from deeplense.core.config import ConfigError
from deeplense.core.contract import ModelContract, OutputSpec
from deeplense.models.heads import GaussianHead
from deeplense.tasks.base import TASKS, Task
from deeplense.tasks.metrics import regression_metrics

__all__ = ["Regression"]


def _default_sigma_scale(state_dict: dict[str, Tensor], prefix: str, *args: Any) -> None:
    """Checkpoints written before sigma scaling existed load with a scale of one."""
    if f"{prefix}target_std" in state_dict and f"{prefix}sigma_scale" not in state_dict:
        state_dict[f"{prefix}sigma_scale"] = torch.ones_like(state_dict[f"{prefix}target_std"])


@TASKS.register("regression")
class Regression(Task):
    """Gaussian NLL (or beta-NLL, or MSE) on standardised targets; sigma scaling on validation."""

    head = "gaussian"
    needs = frozenset({"targets"})
    monitor = ("val_mae", "min")
    ranking = (("mae",), True)
    figures = ("pred_vs_true",)
    train_defaults: ClassVar[dict[str, Any]] = {
        "loss": "gaussian_nll",  # gaussian_nll | beta_nll | mse
        "nll_beta": 0.5,  # beta_nll: each sample's NLL weighted by its detached predicted variance ** beta
        "recalibrate": True,  # scale the predicted sigma to fit the validation split each epoch
    }
    train_choices: ClassVar[dict[str, tuple[str, ...]]] = {"train.loss": ("gaussian_nll", "beta_nll", "mse")}
    target_mean: Tensor
    target_std: Tensor
    sigma_scale: Tensor

    def __init__(self, contract: ModelContract, train: dict[str, Any]):
        super().__init__(contract, train)
        out = contract.output
        self.register_buffer("target_mean", torch.tensor(out.target_mean or [0.0]))
        self.register_buffer("target_std", torch.tensor(out.target_std or [1.0]))
        # factor on the predicted sigma, fitted on the validation split (see _recalibrate)
        self.register_buffer("sigma_scale", torch.ones_like(self.target_std))
        self._register_load_state_dict_pre_hook(_default_sigma_scale)

    @classmethod
    def validate(cls, config: dict[str, Any]) -> None:
        if not config["data"]["targets"]:
            raise ConfigError("data.targets", "a regression task needs at least one target column")

    @classmethod
    def check_train_keys(cls, train: dict[str, Any]) -> None:
        beta = train["nll_beta"]
        if not isinstance(beta, int | float) or not 0 <= beta <= 1:
            raise ConfigError("train.nll_beta", f"must be in [0, 1], got {beta!r}")

    @classmethod
    def output_spec(cls, data: Any) -> OutputSpec:
        return OutputSpec(
            targets=list(data.targets),
            target_units=list(data.target_units),
            target_mean=list(data.target_mean),
            target_std=list(data.target_std),
        )

    @staticmethod
    def n_outputs(contract: ModelContract) -> int:
        return len(contract.output.targets)

    @property
    def _head(self) -> GaussianHead:
        return cast(GaussianHead, self.net.head)

    # ---------------------------------------------------------------------------- training
    def loss(self, out: Tensor, batch: dict[str, Tensor]) -> Tensor:
        y = (batch["target"] - self.target_mean) / self.target_std
        mean, var = self._head.split(out.float())
        if self.cfg["loss"] == "mse":
            return F.mse_loss(mean, y)
        nll = F.gaussian_nll_loss(mean, y, var, full=True, reduction="none")
        if self.cfg["loss"] == "beta_nll":
            # Seitzer et al. 2022: weighting by var**beta (no gradient) keeps samples the network
            # calls uncertain from being ignored by the mean; beta = 0 is the plain NLL, 1 the MSE
            # gradient for the mean.
            nll = nll * var.detach() ** self.cfg["nll_beta"]
        return nll.mean()

    def decode(self, out: Tensor) -> dict[str, Tensor]:
        mean, var = self._head.split(out.float())
        sigma = var.sqrt() * self.target_std * self.sigma_scale
        return {"mean": mean * self.target_std + self.target_mean, "sigma": sigma}

    # ----------------------------------------------------------------------------- metrics
    def epoch_metrics(self, stage: str, got: dict[str, np.ndarray]) -> dict[str, float]:
        if stage == "val" and self.cfg.get("recalibrate", False):
            got["sigma"] = self._recalibrate(got)
        out = self.contract.output
        m = regression_metrics(got["mean"], got["sigma"], got["target"], out.targets, out.target_units)
        first = m[out.targets[0]]
        return {f"{stage}_mae": first["mae"], f"{stage}_coverage_68": first["coverage_68"]}

    def _recalibrate(self, got: dict[str, np.ndarray]) -> np.ndarray:
        """Sigma scaling (Laves et al. 2020): set ``sigma_scale`` per target to the factor that
        maximises the Gaussian likelihood of these validation predictions, sqrt(mean(z**2)) of the
        unscaled standardised errors; saved with the checkpoint of this epoch. Returns the
        rescaled sigma."""
        current = self.sigma_scale.cpu().numpy()
        raw = got["sigma"] / current
        scale = np.sqrt(np.mean(((got["target"] - got["mean"]) / raw) ** 2, axis=0))
        self.sigma_scale.copy_(torch.as_tensor(scale, dtype=self.sigma_scale.dtype))
        return raw * scale

    def metrics(self, pred: dict[str, np.ndarray], truth: dict[str, np.ndarray], n_boot: int = 0) -> dict[str, Any]:
        out = self.contract.output
        return regression_metrics(pred["mean"], pred["sigma"], truth["target"], out.targets, out.target_units)

    def predictions_table(self, pred: dict[str, np.ndarray], truth: dict[str, np.ndarray] | None) -> pd.DataFrame:
        table = pd.DataFrame(index=range(len(pred["mean"])))
        for t, name in enumerate(self.contract.output.targets):
            if truth is not None:
                table[f"true_{name}"] = truth["target"][:, t]
            table[f"mean_{name}"], table[f"sigma_{name}"] = pred["mean"][:, t], pred["sigma"][:, t]
        return table

    def combine_views(self, views: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        means = torch.stack([v["mean"] for v in views])
        variances = torch.stack([v["sigma"] for v in views]) ** 2
        return {"mean": means.mean(0), "sigma": (variances.mean(0) + means.var(0, unbiased=False)).sqrt()}

    def usable_part(self, source: Any, where: str) -> Any:
        """The classes whose images all carry this model's targets (a DeepLense class-folder set
        stores the axion mass only with its axion images)."""
        from deeplense.data.views import ClassView

        targets = self.contract.output.targets
        meta = source.metadata
        if not targets or any(t not in meta for t in targets):
            return source  # target_table names the missing column
        finite = np.isfinite(meta[list(targets)].to_numpy(np.float64)).all(axis=1)
        keep = [
            c
            for i, c in enumerate(source.class_names)
            if finite[source.labels == i].all() and (source.labels == i).any()
        ]
        if not keep:
            raise ConfigError("data", f"{where}: no class has {targets} for every image")
        return source if len(keep) == len(source.class_names) else ClassView(source, keep)

    def truth_from_source(self, source: Any, where: str) -> dict[str, np.ndarray]:
        from deeplense.data.datasets import target_table

        return {"label": source.labels, "target": target_table(source, self.contract.output.targets)}

    def combine_members(
        self,
        preds: list[dict[str, np.ndarray]],
        method: str,
        val_preds: list[dict[str, np.ndarray]] | None = None,
        val_truth: dict[str, np.ndarray] | None = None,
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The weighted Gaussian mixture of the members: ``mean`` weighs them equally; ``stack``
        fits non-negative weights of their means on the validation split (least squares)."""
        means, sigmas = np.stack([p["mean"] for p in preds]), np.stack([p["sigma"] for p in preds])
        n_members, n_targets = means.shape[0], means.shape[2]
        weights = np.full((n_members, n_targets), 1.0 / n_members)
        fitted: dict[str, Any] = {}
        if method == "stack":
            from scipy.optimize import nnls

            assert val_preds is not None and val_truth is not None
            val_means = np.stack([p["mean"] for p in val_preds])
            for t in range(n_targets):
                w, _ = nnls(val_means[:, :, t].T, val_truth["target"][:, t])
                weights[:, t] = w / w.sum() if w.sum() > 0 else 1.0 / n_members
            fitted["weights"] = weights.tolist()
        w = weights[:, None, :]
        mean = (w * means).sum(0)
        var = (w * (sigmas**2 + (means - mean[None]) ** 2)).sum(0)
        return {"mean": mean, "sigma": np.sqrt(var)}, fitted

    @staticmethod
    def describe(metrics: dict[str, Any]) -> list[str]:
        lines = []
        for name, e in metrics.items():
            if isinstance(e, dict) and "mae" in e:
                line = f"{name}: MAE {e['mae']:.4f} {e['unit']}, RMSE {e['rmse']:.4f}, R2 {e['r2']:.3f}"
                if "coverage_68" in e:
                    line += f", coverage 68% {e['coverage_68']:.3f}, 95% {e['coverage_95']:.3f}"
                lines.append(line)
                bins = [f"[{r['lo']:.3g}, {r['hi']:.3g}) {r['mae']:.3f}" for r in e["by_truth"] if r["mae"] is not None]
                lines.append("  MAE by true value: " + ", ".join(bins))
        return lines

    @staticmethod
    def headline(metrics: dict[str, Any]) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for name, entry in metrics.items():
            if isinstance(entry, dict) and "mae" in entry:
                for k in ("mae", "rmse", "r2", "bias", "coverage_68", "coverage_95"):
                    if k in entry:
                        row[f"{name}:{k}"] = entry[k]
        return row
