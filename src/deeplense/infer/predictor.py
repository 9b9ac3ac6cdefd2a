"""Load a trained model (checkpoint, exported ONNX model or shipped pretrained weights) and
predict, without Lightning."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from deeplense.core.checkpoint import read_checkpoint
from deeplense.core.contract import ModelContract
from deeplense.core.errors import DataFormatError
from deeplense.core.run_dir import resolve_checkpoint
from deeplense.data.transforms import DIHEDRAL_GROUPS, Pipeline, build_pipeline, dihedral
from deeplense.infer.conform import Conformer, ImageFacts
from deeplense.tasks import TASKS, Task
from deeplense.tasks.base import task_state_dict

__all__ = ["Predictor", "load_predictor", "build_task"]

Forward = Callable[[Tensor], dict[str, Tensor]]


class Predictor:
    """A trained task (eval mode) with its contract and evaluation transforms.

    ``forward`` maps a transformed batch to the task's predictions: the task itself, or an
    exported model's runtime (:mod:`deeplense.infer.export`). ``name`` and ``sha256`` identify
    the model in catalogues."""

    def __init__(
        self,
        task: Task,
        contract: ModelContract,
        pipeline: Pipeline,
        path: Path,
        *,
        name: str | None = None,
        sha256: str = "",
        forward: Forward | None = None,
        backend: str = "torch",
    ):
        self.task, self.contract, self.pipeline, self.path = task, contract, pipeline, path
        self.name = name or path.stem
        self.sha256, self.backend = sha256, backend
        self.forward: Forward = forward or task.predict

    @property
    def n_parameters(self) -> int:
        return int(sum(p.numel() for p in self.task.net.parameters()))

    @property
    def version(self) -> str:
        """The deeplense version that trained the model."""
        return self.contract.provenance.deeplense_version

    def as_batch(self, images: np.ndarray | Tensor) -> np.ndarray:
        """``(H, W)``, ``(C, H, W)`` or ``(N, C, H, W)`` -> ``(N, C, H, W)`` float32, or a
        ``ValueError`` naming the shape expected."""
        spec = self.contract.input
        array = images.detach().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
        if array.ndim == 2 and spec.in_chans == 1:
            array = array[None, None]
        elif array.ndim == 3 and array.shape[0] == spec.in_chans:
            array = array[None]
        elif array.ndim != 4:
            raise ValueError(
                f"images of shape {array.shape}: expected one image (H, W) (single-band models), (C, H, W), "
                f"or a batch (N, C, H, W), with C = {spec.in_chans} band(s)"
            )
        if array.shape[1] != spec.in_chans:
            raise ValueError(f"images of shape {array.shape}: the model reads C = {spec.in_chans} band(s)")
        return array.astype(np.float32, copy=False)

    def conform(self, batch: np.ndarray, pixel_scale: float | None, where: str = "images") -> np.ndarray:
        """Bring a batch to the model's pixel scale and raw size (see :mod:`deeplense.infer.conform`);
        different sizes with no ``pixel_scale`` are refused rather than guessed, and so are NaNs."""
        spec = self.contract.input
        same_size = spec.raw_size is None or batch.shape[-2:] == (spec.raw_size, spec.raw_size)
        if pixel_scale is None and same_size and np.isfinite(batch).all():
            return batch
        if pixel_scale is None and not same_size and spec.pixel_scale_arcsec is not None:
            raise ValueError(
                f"{where}: {batch.shape[-2]}x{batch.shape[-1]} pixel images; the model reads {spec.raw_size}x"
                f"{spec.raw_size} pixels of {spec.pixel_scale_arcsec:g} arcsec: pass pixel_scale= (arcsec/pixel)"
            )
        conformer = Conformer(spec, pixel_scale=pixel_scale, check_units=False)
        out = np.stack([conformer(image, ImageFacts(f"{where}[{i}]"))[0] for i, image in enumerate(batch)])
        for note in conformer.notes.values():
            warnings.warn(f"{where}: {note}", stacklevel=3)
        return out

    @torch.no_grad()
    def predict(
        self,
        images: np.ndarray | Tensor,
        batch_size: int = 256,
        tta: str | None = None,
        pixel_scale: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Raw images ``(H, W)``, ``(C, H, W)`` or ``(N, C, H, W)`` -> the task's predictions
        (probabilities, or mean and sigma in target units), one row per image.

        ``pixel_scale`` (arcsec/pixel) of images that differ from the model's: they are resampled
        and cut or padded to what the model reads. ``tta="d2"`` or ``"d4"`` combines the
        predictions over the images' transforms by that group as the task's equal-weight mixture.
        """
        if tta is not None and tta not in DIHEDRAL_GROUPS:
            raise ValueError(f"tta must be one of {sorted(DIHEDRAL_GROUPS)} or None, got {tta!r}")
        batch = self.as_batch(images)
        elements = DIHEDRAL_GROUPS[tta] if tta else (0,)
        device = next(self.task.parameters()).device
        out: dict[str, list[np.ndarray]] = {}
        for lo in range(0, len(batch), batch_size):
            chunk = self.conform(batch[lo : lo + batch_size], pixel_scale)
            x = self.pipeline(torch.as_tensor(chunk))
            views = [self.forward((dihedral(x, e) if e else x).to(device)) for e in elements]
            combined = views[0] if len(views) == 1 else self.task.combine_views(views)
            for k, v in combined.items():
                out.setdefault(k, []).append(v.cpu().numpy())
        return {k: np.concatenate(v) for k, v in out.items()}

    @torch.no_grad()
    def explain(self, images: np.ndarray | Tensor, pixel_scale: float | None = None) -> dict[str, np.ndarray]:
        """The task's explanation maps of raw images (e.g. reconstruction and residual), each
        ``(N, C, H, W)`` after the evaluation transforms; the weights must be the task's own,
        so an exported model cannot explain."""
        if self.backend != "torch":
            raise ValueError(f"{self.path}: a model exported to {self.backend} holds no network to explain with")
        batch = self.conform(self.as_batch(images), pixel_scale)
        device = next(self.task.parameters()).device
        maps = self.task.explain(self.pipeline(torch.as_tensor(batch)).to(device))
        return {k: v.cpu().numpy() for k, v in maps.items()}

    @torch.no_grad()
    def features(self, images: np.ndarray | Tensor, batch_size: int = 256) -> np.ndarray:
        """The encoder's pooled features ``(N, F)`` of raw images (after the evaluation
        transforms): what a feature map or a probe is made of."""
        if self.backend != "torch":
            raise ValueError(f"{self.path}: a model exported to {self.backend} gives predictions, not features")
        batch = self.conform(self.as_batch(images), None)
        device = next(self.task.parameters()).device
        parts = [
            self.task.features(self.pipeline(torch.as_tensor(batch[lo : lo + batch_size])).to(device)).float().cpu()
            for lo in range(0, len(batch), batch_size)
        ]
        return torch.cat(parts).numpy()

    def encoder_state(self) -> dict[str, Tensor]:
        """The encoder's weights (the EMA's where the run kept one), for ``model.init_from``."""
        if self.backend != "torch":
            raise ValueError(f"{self.path}: a model exported to {self.backend} cannot initialise training")
        net = self.task.eval().inference_net()
        module = getattr(net, self.task.encoder_attribute)
        return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def in_domain(self, images: np.ndarray) -> np.ndarray | None:
        """Per raw image at the model's size: whether it lies within the training images' domain
        (:mod:`deeplense.data.domain`); ``None`` for models that do not record one."""
        from deeplense.data.domain import inside_domain

        domain = self.contract.input.domain
        if domain is None:
            return None
        return inside_domain(self.statistics(images), domain)

    @torch.no_grad()
    def statistics(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """The domain statistics of raw images at the model's size, as the network sees them."""
        from deeplense.data.domain import image_statistics

        batch = self.as_batch(images)
        parts = [
            image_statistics(self.pipeline(torch.as_tensor(batch[lo : lo + batch_size])))
            for lo in range(0, len(batch), batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, 3))

    def table(self, pred: dict[str, np.ndarray]) -> pd.DataFrame:
        """The task's columns for predictions without truth (class probabilities and the predicted
        class, or mean and sigma per target)."""
        return self.task.predictions_table(pred, None)


def build_task(contract: ModelContract, train_cfg: dict[str, Any], weights: dict[str, Tensor], where: str) -> Task:
    """The task's networks from a contract (never from a pretrained file), with ``weights``."""
    if contract.task not in TASKS:
        raise DataFormatError(f"{where}: task {contract.task!r} is not one this deeplense knows ({TASKS.names()})")
    task = TASKS.create(contract.task, replace(contract, model=replace(contract.model, pretrained=False)), train_cfg)
    try:
        task.load_state_dict(task_state_dict(weights, task))
    except RuntimeError as exc:
        raise DataFormatError(
            f"{where}: weights do not fit the contract's network ({str(exc).splitlines()[0]})"
        ) from None
    return task.eval()


def _from_checkpoint(path: Path, device: str) -> Predictor:
    from deeplense.models.hub import sha256_of

    state = read_checkpoint(path)
    try:
        hparams = state["hyper_parameters"]
        raw_contract, train_cfg, weights = hparams["contract"], hparams["train"], state["state_dict"]
    except (KeyError, TypeError) as exc:
        raise DataFormatError(f"{path}: not a deeplense checkpoint (missing {exc})") from None
    contract = ModelContract.from_dict(raw_contract, f"{path}: contract")
    task = build_task(contract, train_cfg, weights, str(path)).to(device)
    pipeline = build_pipeline(contract.input.transforms).train(False)
    run = path.parent.parent.name if path.parent.name == "checkpoints" else path.stem
    return Predictor(task, contract, pipeline, path, name=run, sha256=sha256_of(path))


def _from_pretrained(name: str, device: str, root: Path | None = None) -> Predictor:
    from deeplense.models import hub

    info, weights = hub.read_pretrained(name, **({"root": root} if root else {}))
    where = str(info.folder)
    try:
        contract = ModelContract.from_dict(info.config["contract"], f"{where}/config.json: contract")
        train_cfg = dict(info.config["train"])
    except (KeyError, TypeError) as exc:
        raise DataFormatError(f"{where}/config.json: missing {exc}") from None
    task = build_task(contract, train_cfg, weights, where).to(device)
    pipeline = build_pipeline(contract.input.transforms).train(False)
    return Predictor(task, contract, pipeline, info.folder, name=name, sha256=info.sha256)


def load_predictor(path: str | Path, device: str = "cpu") -> Predictor:
    """A model from a run directory or checkpoint, an exported model (a folder or ``.onnx``/``.pt``
    file written by ``deeplense export``), or the name of a shipped pretrained model. Files are
    read as tensors and plain data only."""
    from deeplense.infer.export import is_export, load_export
    from deeplense.models.hub import list_pretrained

    candidate = Path(path)
    if candidate.exists():
        if is_export(candidate):
            return load_export(candidate, device)
        if candidate.is_dir() and (candidate / "model.safetensors").exists():
            return _from_pretrained(candidate.name, device, root=candidate.parent)
        return _from_checkpoint(resolve_checkpoint(candidate), device)
    if str(path) in list_pretrained():
        return _from_pretrained(str(path), device)
    raise DataFormatError(
        f"{path}: not a run directory, checkpoint, exported model or shipped pretrained model "
        f"(`deeplense models pretrained` lists {list_pretrained() or 'none'})"
    )
