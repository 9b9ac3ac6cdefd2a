"""Anomaly detection: an autoencoder learns the normal class alone (``no_sub`` by default) and
scores every image by how far it lies from what it learnt; higher means more anomalous.

Four scores, all computed for every image:

- ``reconstruction``: the mean squared residual per pixel of the network's reconstruction;
- ``filtered``: the same after the residual is smoothed by a Gaussian of
  ``train.residual_filter_px`` pixels (standard deviation): white pixel noise averages out while
  residual structure as wide as the point-spread function, such as a subhalo's perturbation of
  the arcs, stays;
- ``latent``: the Mahalanobis distance (squared) of the image's latent code from the codes of
  the normal validation images (a Gaussian density with Ledoit-Wolf shrinkage of its covariance);
- ``combined``: the sum of the two, each centred and scaled by the median and the median absolute
  deviation of the normal validation images' scores;
- ``profile``: the Mahalanobis distance of the image's radial light profile (the fraction of each
  band's flux in :data:`PROFILE_BINS` rings about the image centre) from the profiles of the
  normal validation images. Subhalos and vortices add mass near the Einstein ring and so move
  and widen it; the profile does not depend on the source's structure, which dominates the
  reconstruction error of complex sources. It needs cutouts centred on the lens.

``train.anomaly_score`` picks the one the task reports first and ranks on; it is a choice made
before training, never after looking at labelled anomalies. Checkpoints are selected on the
validation loss of normal images, and the latent density and score scales are fitted on them.
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from deeplense.core.config import ConfigError
from deeplense.core.contract import ModelContract, OutputSpec
from deeplense.models.autoencoders import Autoencoder
from deeplense.tasks.base import TASKS, Task
from deeplense.tasks.metrics import anomaly_metrics

__all__ = ["AnomalyDetection", "SCORES"]

#: The anomaly scores every anomaly model gives.
SCORES = ("reconstruction", "filtered", "latent", "combined", "profile")
#: Rings of the radial light profile, of equal width out to half the image size.
PROFILE_BINS = 16
#: Columns of the network output before the radial profile and the latent code.
_LEADING = 3


def gaussian_kernel(sigma_px: float) -> Tensor:
    """``(1, 1, k, k)``: a normalised 2-D Gaussian of standard deviation ``sigma_px`` pixels,
    ``k = 2 ceil(3 sigma) + 1``."""
    radius = max(1, int(np.ceil(3 * sigma_px)))
    offsets = np.arange(-radius, radius + 1)
    g = np.exp(-0.5 * (offsets / sigma_px) ** 2)
    kernel = np.outer(g, g)
    return torch.as_tensor(kernel / kernel.sum(), dtype=torch.float32)[None, None]


def ring_matrix(img_size: int, n_bins: int = PROFILE_BINS) -> Tensor:
    """``(img_size**2, n_bins)``: which ring about the image centre each pixel lies in (pixels
    beyond ``img_size / 2`` from the centre, the corners, lie in none)."""
    centre = (img_size - 1) / 2
    yy, xx = np.mgrid[:img_size, :img_size]
    ring = (np.hypot(yy - centre, xx - centre) / (img_size / 2) * n_bins).astype(np.int64).ravel()
    matrix = np.zeros((img_size * img_size, n_bins), np.float32)
    inside = ring < n_bins
    matrix[np.flatnonzero(inside), ring[inside]] = 1.0
    return torch.as_tensor(matrix)


def filtered_power(residual: Tensor, kernel: Tensor) -> Tensor:
    """Per image: the mean square of ``residual`` ``(B, C, H, W)`` after each band is convolved
    with ``kernel`` ``(1, 1, k, k)`` (zero padding)."""
    bands = residual.flatten(0, 1)[:, None]
    smoothed = torch.nn.functional.conv2d(bands, kernel, padding=kernel.shape[-1] // 2)
    return smoothed.pow(2).reshape(-1, residual[0].numel()).mean(1)  # no traced batch size: exportable


@TASKS.register("anomaly")
class AnomalyDetection(Task):
    """An autoencoder (``model.name``: ``conv_ae``, ``conv_vae``, ``conv_aae``) trained on the
    normal class; scores by reconstruction, latent density or both."""

    head = "none"
    encoder_attribute = "encoder"
    needs = frozenset({"images"})
    monitor = ("val_loss", "min")
    ranking = (("auc",), False)
    figures = ("anomaly_roc", "score_histograms", "reconstructions")
    train_defaults: ClassVar[dict[str, Any]] = {
        "normal_class": "no_sub",
        "anomaly_score": "reconstruction",
        "residual_filter_px": 0.7,
    }
    train_choices: ClassVar[dict[str, tuple[str, ...]]] = {"train.anomaly_score": SCORES}
    latent_mean: Tensor
    latent_precision: Tensor
    profile_mean: Tensor
    profile_precision: Tensor
    rings: Tensor
    residual_filter: Tensor
    score_center: Tensor
    score_scale: Tensor

    def __init__(self, contract: ModelContract, train: dict[str, Any]):
        super().__init__(contract, train)
        dim = self.autoencoder.latent_dim
        self.register_buffer("latent_mean", torch.zeros(dim))
        self.register_buffer("latent_precision", torch.eye(dim))
        self.n_profile = contract.input.in_chans * PROFILE_BINS
        self.register_buffer("profile_mean", torch.zeros(self.n_profile))
        self.register_buffer("profile_precision", torch.eye(self.n_profile))
        self.register_buffer("rings", ring_matrix(contract.input.img_size), persistent=False)
        filter_px = float(contract.training.get("residual_filter_px", train.get("residual_filter_px", 0.7)))
        self.register_buffer("residual_filter", gaussian_kernel(filter_px), persistent=False)
        self.register_buffer("score_center", torch.zeros(2))
        self.register_buffer("score_scale", torch.ones(2))
        self.normal_class = str(contract.training.get("normal_class", train.get("normal_class", "no_sub")))
        self.score_name = str(contract.training.get("anomaly_score", train.get("anomaly_score", "reconstruction")))

    def build_net(self, contract: ModelContract) -> Any:
        from deeplense.models.autoencoders import build_autoencoder

        return build_autoencoder(
            contract.model.name, contract.input.in_chans, contract.input.img_size, **contract.model.kwargs
        )

    # ------------------------------------------------------------------------- declared
    @classmethod
    def validate(cls, config: dict[str, Any]) -> None:
        from deeplense.models.autoencoders import AUTOENCODERS

        if config["model"]["name"] not in AUTOENCODERS:
            raise ConfigError(
                "model.name",
                f"an anomaly task trains an autoencoder: one of {AUTOENCODERS.names()}, got "
                f"{config['model']['name']!r}",
            )
        if config["data"]["targets"]:
            raise ConfigError("data.targets", "an anomaly task learns images alone; targets are for regression")
        if config["model"].get("pretrained"):
            raise ConfigError("model.pretrained", "the autoencoders have no pretrained weights")

    @classmethod
    def check_train_keys(cls, train: dict[str, Any]) -> None:
        if not isinstance(train["normal_class"], str) or not train["normal_class"]:
            raise ConfigError("train.normal_class", f"expected a class name, got {train['normal_class']!r}")
        px = train["residual_filter_px"]
        if not isinstance(px, int | float) or isinstance(px, bool) or not 0.1 <= px <= 10:
            raise ConfigError("train.residual_filter_px", f"expected a width in pixels in [0.1, 10], got {px!r}")

    @classmethod
    def training_classes(cls, config: dict[str, Any], class_names: list[str]) -> list[str] | None:
        normal = config["train"]["normal_class"]
        if normal not in class_names:
            raise ConfigError("train.normal_class", f"no class {normal!r} in the data; they have {class_names}")
        return [normal]

    @classmethod
    def check_data(cls, data: Any) -> None:
        if data.val is None:
            raise ConfigError(
                "data.splits.val",
                "an anomaly task needs validation images of the normal class: its checkpoints are chosen "
                "and its latent density fitted on them",
            )

    @classmethod
    def output_spec(cls, data: Any) -> OutputSpec:
        return OutputSpec(class_names=list(data.class_names))

    @classmethod
    def training_state(cls, config: dict[str, Any], data: Any) -> dict[str, Any]:
        return {key: config["train"][key] for key in ("normal_class", "anomaly_score", "residual_filter_px")}

    @staticmethod
    def n_outputs(contract: ModelContract) -> int:
        return 0

    # -------------------------------------------------------------------------- network
    @property
    def autoencoder(self) -> Autoencoder:
        """The trained network (every registered autoencoder is an :class:`Autoencoder`)."""
        return cast(Autoencoder, self.net)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3 + bands * PROFILE_BINS + latent_dim)``: the per-image loss, the mean squared
        residual per pixel before and after the Gaussian filter, the radial light profile and the
        latent code."""
        x = self._prepare(x)
        reconstruction, z, penalty = self.inference_net()(x)
        squared = self.autoencoder.squared_error(x, reconstruction)
        objective = squared / (2 * self.autoencoder.pixel_sigma**2) + penalty
        per_value = squared / x[0].numel()
        filtered = filtered_power(x.float() - reconstruction.float(), self.residual_filter)
        columns = [objective[:, None], per_value[:, None], filtered[:, None]]
        return torch.cat([*columns, self.radial_profile(x), z.float()], dim=1)

    def radial_profile(self, x: Tensor) -> Tensor:
        """``(B, bands * PROFILE_BINS)``: the fraction of each band's flux (inside the largest
        ring) in each ring about the image centre."""
        rings = x.float().flatten(2) @ self.rings
        return (rings / rings.sum(-1, keepdim=True).abs().clamp_min(1e-12)).flatten(1)

    def training_loss(self, batch: dict[str, Tensor], step: int) -> Tensor:
        return self.autoencoder.training_loss(self._prepare(batch["image"])).mean()

    def loss(self, out: Tensor, batch: dict[str, Tensor]) -> Tensor:
        return out[:, 0].mean()

    def decode(self, out: Tensor) -> dict[str, Tensor]:
        profile, z = out[:, _LEADING : _LEADING + self.n_profile], out[:, _LEADING + self.n_profile :]
        latent = _mahalanobis(z, self.latent_mean, self.latent_precision)
        reconstruction = out[:, 1]
        pair = (torch.stack([reconstruction, latent], 1) - self.score_center) / self.score_scale
        scores = {
            "reconstruction": reconstruction,
            "filtered": out[:, 2],
            "latent": latent,
            "combined": pair.sum(1),
            "profile": _mahalanobis(profile, self.profile_mean, self.profile_precision),
        }
        return {
            "score": scores[self.score_name],
            **{f"score_{k}": v for k, v in scores.items()},
            "objective": out[:, 0],
            "latent": z,
            "profile": profile,
        }

    def features(self, x: Tensor) -> Tensor:
        """The latent codes ``(B, latent_dim)``."""
        return cast(Autoencoder, self.inference_net()).encode(self._prepare(x))

    def explain(self, x: Tensor) -> dict[str, Tensor]:
        """The input (after the transforms), its reconstruction and the residual (input minus
        reconstruction), each ``(B, C, H, W)``."""
        reconstruction, _, _ = self.inference_net()(self._prepare(x))
        return {"input": x, "reconstruction": reconstruction, "residual": x - reconstruction}

    @torch.no_grad()
    def fit_to_validation(self, got: dict[str, np.ndarray]) -> None:
        """Fit the latent and profile densities and the score scales on the normal validation
        images."""
        from sklearn.covariance import LedoitWolf

        z = np.asarray(got["latent"], dtype=np.float64)
        if len(z) < 2:
            return
        latent_fit = LedoitWolf().fit(z)
        profile_fit = LedoitWolf().fit(np.asarray(got["profile"], dtype=np.float64))
        latent = latent_fit.mahalanobis(z)
        pair = np.stack([np.asarray(got["score_reconstruction"], np.float64), latent], 1)
        center = np.median(pair, 0)
        scale = np.maximum(np.median(np.abs(pair - center), 0), 1e-12)
        fitted = {
            "latent_mean": latent_fit.location_,
            "latent_precision": latent_fit.precision_,
            "profile_mean": profile_fit.location_,
            "profile_precision": profile_fit.precision_,
            "score_center": center,
            "score_scale": scale,
        }
        for name, value in fitted.items():
            buffer = getattr(self, name)
            buffer.copy_(torch.as_tensor(value, dtype=buffer.dtype))

    # --------------------------------------------------------------------------- metrics
    def epoch_metrics(self, stage: str, got: dict[str, np.ndarray]) -> dict[str, float]:
        return {f"{stage}_reconstruction_median": float(np.median(got["score_reconstruction"]))}

    def metrics(self, pred: dict[str, np.ndarray], truth: dict[str, np.ndarray], n_boot: int = 0) -> dict[str, Any]:
        scores = {name: pred[f"score_{name}"] for name in SCORES}
        out = anomaly_metrics(scores, truth["label"], self.contract.output.class_names, self.normal_class, n_boot)
        out["score"] = self.score_name
        return out

    def predictions_table(self, pred: dict[str, np.ndarray], truth: dict[str, np.ndarray] | None) -> pd.DataFrame:
        table = pd.DataFrame({"label": truth["label"]} if truth is not None else {})
        table["anomaly_score"] = pred["score"]
        for name in SCORES:
            table[f"score_{name}"] = pred[f"score_{name}"]
        return table

    def example_indices(self, pred: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> np.ndarray:
        """Per class, the image of median score and the one of highest score."""
        picked = []
        for c in range(len(self.contract.output.class_names)):
            rows = np.flatnonzero(truth["label"] == c)
            if len(rows):
                order = rows[np.argsort(pred["score"][rows], kind="stable")]
                picked += [order[len(order) // 2], order[-1]]
        return np.asarray(picked, dtype=np.int64)

    def combine_members(
        self,
        preds: list[dict[str, np.ndarray]],
        method: str,
        val_preds: list[dict[str, np.ndarray]] | None = None,
        val_truth: dict[str, np.ndarray] | None = None,
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The members' scores, each first divided by its spread (median absolute deviation)
        over the images, then averaged (``stack`` needs labelled anomalies and is refused)."""
        if method == "stack":
            raise ConfigError("method", "an anomaly ensemble cannot be stacked: that would fit on labelled anomalies")
        keys = ["score", *(f"score_{name}" for name in SCORES)]
        combined = {}
        for key in keys:
            columns = np.stack([p[key] for p in preds])
            spread = np.median(np.abs(columns - np.median(columns, 1, keepdims=True)), 1, keepdims=True)
            combined[key] = (columns / np.maximum(spread, 1e-12)).mean(0)
        return combined, {}

    @staticmethod
    def headline(metrics: dict[str, Any]) -> dict[str, Any]:
        entry = metrics.get("scores", {}).get(metrics.get("score", "reconstruction"), {})
        if not entry:
            return {}
        row = {"auc": entry["auc"], "tpr_at_1pct_fpr": entry["tpr_at_1pct_fpr"]}
        row["tpr_at_10pct_fpr"] = entry["tpr_at_10pct_fpr"]
        row.update({f"auc_{c}": v["auc"] for c, v in entry["per_class"].items()})
        for name, other in metrics["scores"].items():
            if name != metrics.get("score"):
                row[f"auc_{name}_score"] = other["auc"]
        return row

    @staticmethod
    def describe(metrics: dict[str, Any]) -> list[str]:
        if not metrics.get("scores"):
            return [f"AUC undefined: the data need images of the normal class and of another (n={metrics['n']})"]
        lines = []
        for name, entry in metrics["scores"].items():
            first = "*" if name == metrics.get("score") else " "
            ci = entry.get("auc_ci")
            line = f"{first}{name:15s} AUC {entry['auc']:.4f}" + (f" ({ci[0]:.4f}-{ci[1]:.4f})" if ci else "")
            line += ", " + ", ".join(f"{c} {v['auc']:.4f}" for c, v in entry["per_class"].items())
            line += f"; TPR {entry['tpr_at_1pct_fpr']:.3f} at 1% FPR, {entry['tpr_at_10pct_fpr']:.3f} at 10%"
            lines.append(line)
        counts = ", ".join(f"{c} {n}" for c, n in metrics["n_per_class"].items())
        lines.append(f"normal class {metrics['normal_class']}; images: {counts} (* the model's score)")
        return lines


def _mahalanobis(x: Tensor, mean: Tensor, precision: Tensor) -> Tensor:
    """Squared Mahalanobis distance of each row of ``x``."""
    centred = x - mean
    return ((centred @ precision) * centred).sum(1)
