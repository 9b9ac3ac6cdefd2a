"""The Lightning module that drives a task: it steps, logs, gathers predictions over processes
and asks the task for its loss, metrics and optimisation."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch

from deeplense.core.contract import ModelContract
from deeplense.tasks import TASKS, Task
from deeplense.tasks.base import task_state_dict

__all__ = ["TaskModule"]


class TaskModule(L.LightningModule):
    """``contract`` (a version 1 contract dictionary) and ``train`` (the config's ``train``
    section) are the checkpoint's hyper-parameters, so a checkpoint alone rebuilds the task."""

    def __init__(self, contract: dict[str, Any], train: dict[str, Any]):
        super().__init__()
        self.save_hyperparameters()
        self.cfg = train
        self.task: Task = TASKS.create(contract["task"], ModelContract.from_dict(contract), train)
        self._outputs: dict[str, list[dict[str, torch.Tensor]]] = {"val": [], "test": []}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.task(x)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Runs written before tasks existed resume: their weights are renamed into the task."""
        state = checkpoint["state_dict"]
        if not any(k.startswith("task.") for k in state):
            checkpoint["state_dict"] = {f"task.{k}": v for k, v in task_state_dict(state, self.task).items()}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.task.training_loss(batch, int(self.global_step))
        n = len(batch["image"])
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.task.after_step()

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        out = self.task(batch["image"])
        loss = self.task.loss(out, batch)
        self.log(f"{stage}_loss", loss, on_epoch=True, prog_bar=stage == "val", batch_size=len(out), sync_dist=True)
        pred = self.task.decode(out)
        pred.update(label=batch["label"], target=batch["target"], index=batch["index"])
        self._outputs[stage].append({k: v.detach() for k, v in pred.items()})

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def gathered(self, stage: str) -> dict[str, np.ndarray]:
        """Predictions of an evaluation epoch from every process, as numpy arrays (emptied)."""
        parts, self._outputs[stage] = self._outputs[stage], []
        if not parts:
            return {}
        merged = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        if self._trainer is not None and self.trainer.world_size > 1:
            gathered = self.all_gather(merged)
            merged = {k: v.reshape(v.shape[0] * v.shape[1], *v.shape[2:]) for k, v in gathered.items()}
            # a distributed sampler pads the last batches with repeated images: keep each once
            _, first = np.unique(merged["index"].cpu().numpy(), return_index=True)
            keep = torch.as_tensor(first, device=merged["index"].device)
            merged = {k: v[keep] for k, v in merged.items()}
        return {k: v.cpu().numpy() for k, v in merged.items()}

    def on_validation_epoch_end(self) -> None:
        got = self.gathered("val")
        if got:
            self.task.fit_to_validation(got)
            for k, v in self.task.epoch_metrics("val", got).items():
                self.log(k, v, prog_bar=True, rank_zero_only=False, sync_dist=False)

    def configure_optimizers(self) -> Any:
        return self.task.configure_optimizers(int(self.trainer.estimated_stepping_batches))
