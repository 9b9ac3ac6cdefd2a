"""Load a trained model from its checkpoint alone and predict, without Lightning."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from deeplense.core.checkpoint import read_checkpoint
from deeplense.core.contract import ModelContract
from deeplense.core.errors import DataFormatError
from deeplense.core.run_dir import resolve_checkpoint
from deeplense.data.transforms import DIHEDRAL_GROUPS, Pipeline, build_pipeline, dihedral
from deeplense.tasks import TASKS, Task
from deeplense.tasks.base import task_state_dict

__all__ = ["Predictor", "load_predictor"]


class Predictor:
    """A trained task (eval mode) with its contract and evaluation transforms."""

    def __init__(self, task: Task, contract: ModelContract, pipeline: Pipeline, path: Path):
        self.task, self.contract, self.pipeline, self.path = task, contract, pipeline, path

    @property
    def n_parameters(self) -> int:
        return int(sum(p.numel() for p in self.task.net.parameters()))

    @torch.no_grad()
    def predict(
        self, images: np.ndarray | torch.Tensor, batch_size: int = 256, tta: str | None = None
    ) -> dict[str, np.ndarray]:
        """Raw images ``(N, C, H, W)`` -> the task's predictions (probabilities, or mean and sigma
        in target units).

        ``tta="d2"`` or ``"d4"`` combines the predictions over the images' transforms by that group
        (after the evaluation transforms) as the task's equal-weight mixture.
        """
        if tta is not None and tta not in DIHEDRAL_GROUPS:
            raise ValueError(f"tta must be one of {sorted(DIHEDRAL_GROUPS)} or None, got {tta!r}")
        elements = DIHEDRAL_GROUPS[tta] if tta else (0,)
        device = next(self.task.parameters()).device
        out: dict[str, list[np.ndarray]] = {}
        for lo in range(0, len(images), batch_size):
            x = self.pipeline(torch.as_tensor(np.asarray(images[lo : lo + batch_size]), dtype=torch.float32))
            views = [self.task.predict((dihedral(x, e) if e else x).to(device)) for e in elements]
            combined = views[0] if len(views) == 1 else self.task.combine_views(views)
            for k, v in combined.items():
                out.setdefault(k, []).append(v.cpu().numpy())
        return {k: np.concatenate(v) for k, v in out.items()}


def load_predictor(path: str | Path, device: str = "cpu") -> Predictor:
    """Rebuild the task's networks from a checkpoint's contract (no config, no data needed); the
    file is read as tensors and plain data only."""
    path = resolve_checkpoint(path)
    state = read_checkpoint(path)
    try:
        hparams = state["hyper_parameters"]
        raw_contract, train_cfg, weights = hparams["contract"], hparams["train"], state["state_dict"]
    except (KeyError, TypeError) as exc:
        raise DataFormatError(f"{path}: not a deeplense checkpoint (missing {exc})") from None
    contract = ModelContract.from_dict(raw_contract, f"{path}: contract")
    if contract.task not in TASKS:
        raise DataFormatError(f"{path}: task {contract.task!r} is not one this deeplense knows ({TASKS.names()})")
    # the weights come from the checkpoint, never from a pretrained file
    task = TASKS.create(contract.task, replace(contract, model=replace(contract.model, pretrained=False)), train_cfg)
    try:
        task.load_state_dict(task_state_dict(weights, task))
    except RuntimeError as exc:
        raise DataFormatError(
            f"{path}: weights do not fit the contract's network ({str(exc).splitlines()[0]})"
        ) from None
    task.eval().to(device)
    pipeline = build_pipeline(contract.input.transforms).train(False)
    return Predictor(task, contract, pipeline, path)
