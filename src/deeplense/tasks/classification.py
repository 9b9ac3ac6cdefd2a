"""Classification: class probabilities from labelled images (dark-matter models, lens finding)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from deeplense.core.config import ConfigError
from deeplense.core.contract import ModelContract, OutputSpec
from deeplense.data.transforms import mixup
from deeplense.tasks.base import TASKS, Task
from deeplense.tasks.metrics import classification_metrics

__all__ = ["Classification"]


@TASKS.register("classification")
class Classification(Task):
    """Cross-entropy on the labels, with class weights, label smoothing and mixup."""

    head = "linear"
    needs = frozenset({"labels"})
    monitor = ("val_auc_macro", "max")
    ranking = (("auc_macro", "auc"), False)  # two classes have the one AUC
    figures = ("roc", "confusion", "reliability", "examples")
    train_defaults: ClassVar[dict[str, Any]] = {
        "class_weights": "balanced",  # or none
        "label_smoothing": 0.0,
        "mixup_alpha": 0.0,
    }
    train_choices: ClassVar[dict[str, tuple[str, ...]]] = {"train.class_weights": ("balanced", "none")}
    class_weight: Tensor | None

    def __init__(self, contract: ModelContract, train: dict[str, Any]):
        super().__init__(contract, train)
        weights = contract.training.get("class_weights")
        self.register_buffer("class_weight", torch.tensor(weights, dtype=torch.float32) if weights else None)

    @classmethod
    def validate(cls, config: dict[str, Any]) -> None:
        if config["data"]["targets"]:
            raise ConfigError("data.targets", "targets are for regression; a classification task predicts the labels")

    @classmethod
    def check_train_keys(cls, train: dict[str, Any]) -> None:
        smoothing = train["label_smoothing"]
        if not isinstance(smoothing, int | float) or not 0 <= smoothing < 1:
            raise ConfigError("train.label_smoothing", f"must be in [0, 1), got {smoothing!r}")
        alpha = train["mixup_alpha"]
        if not isinstance(alpha, int | float) or alpha < 0:
            raise ConfigError("train.mixup_alpha", f"must be >= 0, got {alpha!r}")

    @classmethod
    def output_spec(cls, data: Any) -> OutputSpec:
        return OutputSpec(class_names=list(data.class_names))

    @classmethod
    def training_state(cls, config: dict[str, Any], data: Any) -> dict[str, Any]:
        weights = None
        if config["train"]["class_weights"] == "balanced":
            counts = np.maximum(np.asarray(data.class_counts, dtype=np.float64), 1)
            weights = (counts.sum() / (len(counts) * counts)).tolist()
        return {"class_weights": weights}

    @staticmethod
    def n_outputs(contract: ModelContract) -> int:
        return len(contract.output.class_names)

    # ---------------------------------------------------------------------------- training
    def loss(self, out: Tensor, batch: dict[str, Tensor], soft: Tensor | None = None) -> Tensor:
        if soft is not None:
            logp = out.float().log_softmax(-1)
            w = self.class_weight[None] if self.class_weight is not None else 1.0
            return -(soft * logp * w).sum(-1).mean()
        return F.cross_entropy(
            out.float(), batch["label"], weight=self.class_weight, label_smoothing=self.cfg["label_smoothing"]
        )

    def training_loss(self, batch: dict[str, Tensor], step: int) -> Tensor:
        x, soft = batch["image"], None
        if self.cfg["mixup_alpha"] > 0:
            g = torch.Generator().manual_seed(int(self.cfg["seed"]) * 1_000_003 + int(step))
            onehot = F.one_hot(batch["label"], len(self.contract.output.class_names)).float()
            x, soft = mixup(x, onehot, self.cfg["mixup_alpha"], g)
        return self.loss(self.net(self._prepare(x)), batch, soft)

    def decode(self, out: Tensor) -> dict[str, Tensor]:
        return {"probs": out.float().softmax(-1)}

    # ----------------------------------------------------------------------------- metrics
    def epoch_metrics(self, stage: str, got: dict[str, np.ndarray]) -> dict[str, float]:
        m = classification_metrics(got["probs"], got["label"], self.contract.output.class_names)
        out = {f"{stage}_acc": m["accuracy"]}
        if "auc_macro" in m:
            out[f"{stage}_auc_macro"] = m["auc_macro"]
        elif "auc" in m:
            out[f"{stage}_auc_macro"] = m["auc"]
        return out

    def metrics(self, pred: dict[str, np.ndarray], truth: dict[str, np.ndarray], n_boot: int = 0) -> dict[str, Any]:
        return classification_metrics(pred["probs"], truth["label"], self.contract.output.class_names, n_boot=n_boot)

    def predictions_table(self, pred: dict[str, np.ndarray], truth: dict[str, np.ndarray] | None) -> pd.DataFrame:
        table = pd.DataFrame({"label": truth["label"]} if truth is not None else {})
        names = self.contract.output.class_names
        for c, name in enumerate(names):
            table[f"p_{name}"] = pred["probs"][:, c]
        predicted = np.asarray(names, dtype=object)[np.nan_to_num(pred["probs"], nan=-1).argmax(1)]
        table["predicted"] = np.where(np.isfinite(pred["probs"]).all(1), predicted, "")
        return table

    def combine_views(self, views: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        return {"probs": torch.stack([v["probs"] for v in views]).mean(0)}

    def combine_members(
        self,
        preds: list[dict[str, np.ndarray]],
        method: str,
        val_preds: list[dict[str, np.ndarray]] | None = None,
        val_truth: dict[str, np.ndarray] | None = None,
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """``mean`` averages the probabilities; ``stack`` fits a multinomial logistic regression
        on the members' validation log-probabilities."""
        probs = np.stack([p["probs"] for p in preds])  # (M, N, K)
        if method != "stack":
            return {"probs": probs.mean(0)}, {}
        from sklearn.linear_model import LogisticRegression

        assert val_preds is not None and val_truth is not None
        features = np.concatenate([np.log(p["probs"] + 1e-7) for p in val_preds], axis=1)
        stacker = LogisticRegression(max_iter=2000, C=1.0).fit(features, val_truth["label"])
        combined = stacker.predict_proba(np.concatenate([np.log(p + 1e-7) for p in probs], axis=1))
        return {"probs": combined}, {
            "stacker": {"coef": stacker.coef_.tolist(), "intercept": stacker.intercept_.tolist()}
        }

    @staticmethod
    def describe(metrics: dict[str, Any]) -> list[str]:
        key = "auc_macro" if "auc_macro" in metrics else "auc" if "auc" in metrics else None
        interval = metrics.get(f"{key}_ci") if key else None
        first = f"{key} {metrics[key]:.4f}" if key else "AUC undefined (a class is missing)"
        first += f" (95% CI {interval[0]:.4f}-{interval[1]:.4f})" if interval else ""
        lines = [f"{first}, accuracy {metrics['accuracy']:.4f}, n={metrics['n']}"]
        if metrics.get("auc_per_class"):
            lines.append("per class: " + ", ".join(f"{c} {v:.4f}" for c, v in metrics["auc_per_class"].items()))
        return lines

    @staticmethod
    def headline(metrics: dict[str, Any]) -> dict[str, Any]:
        keys = ("auc_macro", "auc", "auc_micro", "accuracy", "ece", "average_precision", "tpr_0", "tpr_10")
        row = {k: metrics[k] for k in keys if k in metrics}
        row.update({f"auc_{c}": v for c, v in metrics.get("auc_per_class", {}).items()})
        return row
