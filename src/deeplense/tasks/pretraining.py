"""What the self-supervised pretraining tasks share: they learn from images alone, select
checkpoints on their own validation loss, and are judged by the encoder they leave behind.

``evaluate`` on a pretraining run reports the test loss and, where the evaluation images have
labels, a k-nearest-neighbour probe of the frozen encoder features (cross-fitted: the neighbours
of each half of the images are looked up in the other half), and draws a 2-D map of the features
coloured by class. The labels are read only there, after training; they never choose a
checkpoint. A later task starts from the encoder with ``model.init_from``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
from torch import Tensor

from deeplense.core.config import ConfigError
from deeplense.core.contract import ModelContract, OutputSpec
from deeplense.tasks.base import Task
from deeplense.tasks.metrics import knn_probe

__all__ = ["Pretraining"]


class Pretraining(Task):
    """Base of the self-supervised tasks: ``forward`` gives ``(B, 1 + F)``, the per-image loss
    then the encoder's pooled features."""

    head = "none"
    needs = frozenset({"images"})
    monitor = ("val_loss", "min")
    ranking = (("loss",), True)
    figures = ()  # evaluate draws the feature map of every task whose predictions hold features
    train_defaults: ClassVar[dict[str, Any]] = {}

    @classmethod
    def validate(cls, config: dict[str, Any]) -> None:
        if config["data"]["targets"]:
            raise ConfigError("data.targets", f"a {config['task']} task learns from images alone; targets are unused")
        if config["train"]["freeze_encoder"]:
            raise ConfigError("train.freeze_encoder", "pretraining trains the encoder; it cannot be frozen")

    @classmethod
    def check_data(cls, data: Any) -> None:
        if data.val is None:
            raise ConfigError("data.splits.val", "pretraining chooses its checkpoints on validation images; give some")

    @classmethod
    def output_spec(cls, data: Any) -> OutputSpec:
        return OutputSpec(class_names=list(data.class_names))

    @staticmethod
    def n_outputs(contract: ModelContract) -> int:
        return 0

    def loss(self, out: Tensor, batch: dict[str, Tensor]) -> Tensor:
        return out[:, 0].mean()

    def decode(self, out: Tensor) -> dict[str, Tensor]:
        return {"loss": out[:, 0], "features": out[:, 1:]}

    def epoch_metrics(self, stage: str, got: dict[str, np.ndarray]) -> dict[str, float]:
        return {}

    def metrics(self, pred: dict[str, np.ndarray], truth: dict[str, np.ndarray], n_boot: int = 0) -> dict[str, Any]:
        out: dict[str, Any] = {"n": int(len(pred["loss"])), "loss": float(np.mean(pred["loss"]))}
        probe = knn_probe(pred["features"], truth["label"], self.contract.output.class_names, n_boot)
        if probe:
            out["knn_probe"] = probe
        return out

    def predictions_table(self, pred: dict[str, np.ndarray], truth: dict[str, np.ndarray] | None) -> pd.DataFrame:
        table = pd.DataFrame({"label": truth["label"]} if truth is not None else {})
        table["loss"] = pred["loss"]
        return table

    def combine_members(
        self,
        preds: list[dict[str, np.ndarray]],
        method: str,
        val_preds: list[dict[str, np.ndarray]] | None = None,
        val_truth: dict[str, np.ndarray] | None = None,
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        raise ConfigError("runs", "pretraining runs are not ensembled; fine-tune them and ensemble the results")

    @staticmethod
    def headline(metrics: dict[str, Any]) -> dict[str, Any]:
        row = {"loss": metrics["loss"]}
        if "knn_probe" in metrics:
            row["knn_auc_macro"] = metrics["knn_probe"]["auc_macro"]
        return row

    @staticmethod
    def describe(metrics: dict[str, Any]) -> list[str]:
        lines = [f"loss {metrics['loss']:.4f} on {metrics['n']} images"]
        probe = metrics.get("knn_probe")
        if probe:
            ci = probe.get("auc_macro_ci")
            interval = f" ({ci[0]:.4f}-{ci[1]:.4f})" if ci else ""
            lines.append(
                f"k-NN probe of the frozen features (k={probe['k']}, cross-fitted): macro AUC "
                f"{probe['auc_macro']:.4f}{interval}, accuracy {probe['accuracy']:.4f}"
            )
        return lines
