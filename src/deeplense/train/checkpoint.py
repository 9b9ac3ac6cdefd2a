"""Load a trained model from a checkpoint alone (the contract it carries is all that is needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from deeplense.data.transforms import DIHEDRAL_GROUPS, Pipeline, build_pipeline, dihedral

__all__ = ["load_model", "resolve_checkpoint", "run_dir_of", "LoadedModel"]


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory (its best checkpoint, else the last) or a checkpoint file."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.ckpt", "last.ckpt"):
            if (path / "checkpoints" / name).exists():
                return path / "checkpoints" / name
        raise FileNotFoundError(f"{path}: no checkpoints/best.ckpt or last.ckpt")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    return path


def run_dir_of(path: str | Path) -> Path:
    """The run directory of a run directory or of one of its checkpoints."""
    path = Path(path)
    return path if path.is_dir() else resolve_checkpoint(path).parent.parent


class LoadedModel:
    """A checkpoint's module (eval mode), contract and evaluation transforms."""

    def __init__(self, module, contract: dict[str, Any], pipeline: Pipeline, path: Path):
        self.module, self.contract, self.pipeline, self.path = module, contract, pipeline, path

    @torch.no_grad()
    def predict(
        self, images: np.ndarray | torch.Tensor, batch_size: int = 256, tta: str | None = None
    ) -> dict[str, np.ndarray]:
        """Raw images ``(N, C, H, W)`` -> probabilities, or mean and sigma in target units.

        ``tta="d2"`` or ``"d4"`` averages the predictions over the images' transforms by that group
        (after the evaluation transforms): probabilities are averaged; for regression the mean is
        the average and the variance that of the equal-weight mixture (mean variance plus the
        variance of the means).
        """
        if tta is not None and tta not in DIHEDRAL_GROUPS:
            raise ValueError(f"tta must be one of {sorted(DIHEDRAL_GROUPS)} or None, got {tta!r}")
        elements = DIHEDRAL_GROUPS[tta] if tta else (0,)
        device = next(self.module.parameters()).device
        out: dict[str, list] = {}
        for lo in range(0, len(images), batch_size):
            x = self.pipeline(torch.as_tensor(np.asarray(images[lo : lo + batch_size]), dtype=torch.float32))
            views = [self.module.predict_batch((dihedral(x, e) if e else x).to(device)) for e in elements]
            for k, v in _combine(views).items():
                out.setdefault(k, []).append(v.cpu().numpy())
        return {k: np.concatenate(v) for k, v in out.items()}


def _combine(views: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Equal-weight mixture of the predictions of several views of the same images."""
    if len(views) == 1:
        return views[0]
    if "probs" in views[0]:
        return {"probs": torch.stack([v["probs"] for v in views]).mean(0)}
    means = torch.stack([v["mean"] for v in views])
    variances = torch.stack([v["sigma"] for v in views]) ** 2
    return {"mean": means.mean(0), "sigma": (variances.mean(0) + means.var(0, unbiased=False)).sqrt()}


def load_model(path: str | Path, device: str = "cpu") -> LoadedModel:
    """Rebuild the network from the checkpoint's contract (no config, no data needed); the file
    is read with ``weights_only=True``."""
    from deeplense.train.module import LensingModule

    path = resolve_checkpoint(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        hparams = state["hyper_parameters"]
        contract, train_cfg = hparams["contract"], hparams["train"]
    except KeyError as exc:
        raise ValueError(f"{path}: not a deeplense checkpoint (missing {exc})") from None
    model_spec = dict(contract["model"], pretrained=False)  # weights come from the checkpoint
    module = LensingModule({**contract, "model": model_spec}, train_cfg)
    module.load_state_dict(state["state_dict"])
    module.eval().to(device)
    pipeline = build_pipeline(contract["transforms"]).train(False)
    return LoadedModel(module, contract, pipeline, path)
