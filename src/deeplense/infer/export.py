"""Exported models: the one module that writes and reads them.

``deeplense export`` writes a folder with the network and its output decoding as ``model.onnx``
(ONNX, opset 17, dynamic batch) or ``model.pt`` (TorchScript), ``contract.json`` (the model
contract: the transforms to apply first, the image contract, class names or targets) and
``export.json`` (format, output names, the task's training state, the source's sha256 and the
measured parity with torch). The evaluation transforms stay outside the graph: deeplense applies
them from the contract, and another pipeline reads them there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from deeplense.core.config import ConfigError
from deeplense.core.contract import ModelContract
from deeplense.core.errors import DataFormatError
from deeplense.data.transforms import build_pipeline

__all__ = ["EXPORT_FORMATS", "export_model", "is_export", "load_export", "parity"]

EXPORT_FORMATS = {"onnx": "model.onnx", "torchscript": "model.pt"}
_META, _CONTRACT = "export.json", "contract.json"


class _Decoded(nn.Module):
    """The task's network and decoding, with outputs as a tuple in ``keys`` order."""

    def __init__(self, task: nn.Module, keys: list[str]):
        super().__init__()
        self.task, self.keys = task, keys

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        out = self.task.predict(x)  # type: ignore[operator]
        return tuple(out[k] for k in self.keys)


def is_export(path: Path) -> bool:
    """Whether ``path`` is an exported model (its folder, or its model file)."""
    folder = path if path.is_dir() else path.parent
    return (folder / _META).exists() and (path.is_dir() or path.name in EXPORT_FORMATS.values())


def export_model(predictor: Any, fmt: str, out: str | Path, images: np.ndarray) -> dict[str, Any]:
    """Write ``predictor``'s model in ``fmt`` to the folder ``out``; ``images`` (raw, as the model
    reads them) check the parity of the export with torch. Returns the export's metadata."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError("format", f"expected one of {sorted(EXPORT_FORMATS)}, got {fmt!r}")
    if predictor.task.not_exportable:
        raise ConfigError(
            "run", f"{predictor.path}: a {predictor.contract.task} run is not exported: {predictor.task.not_exportable}"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    task = predictor.task.cpu().eval()
    x = predictor.pipeline(torch.as_tensor(predictor.as_batch(images[:8])))
    with torch.no_grad():
        keys = list(task.predict(x).keys())
    wrapper = _Decoded(task, keys).eval()
    model_path = out / EXPORT_FORMATS[fmt]
    tmp = model_path.with_name(model_path.name + ".tmp")
    try:
        with torch.no_grad():
            if fmt == "onnx":
                torch.onnx.export(
                    wrapper,
                    (x,),
                    str(tmp),
                    input_names=["image"],
                    output_names=keys,
                    dynamic_axes={"image": {0: "batch"}, **{k: {0: "batch"} for k in keys}},
                    opset_version=17,
                    dynamo=False,
                )
            else:
                torch.jit.save(torch.jit.trace(wrapper, x), str(tmp))
    except (RuntimeError, TypeError) as exc:  # an operation the exporter cannot trace
        tmp.unlink(missing_ok=True)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError("format", f"{predictor.path}: the {fmt} export failed: {first}") from None
    tmp.replace(model_path)
    (out / _CONTRACT).write_text(json.dumps(predictor.contract.to_dict(), indent=2))
    meta = {
        "format": fmt,
        "outputs": keys,
        "train": dict(task.cfg),
        "name": predictor.name,
        "source_sha256": predictor.sha256,
    }
    (out / _META).write_text(json.dumps(meta, indent=2))
    exported = load_export(out, trust=True)  # written just now, by this process
    meta["parity_max_abs_diff"] = parity(predictor, exported, images)
    meta["parity_images"] = int(len(images))
    (out / _META).write_text(json.dumps(meta, indent=2))
    return meta


def parity(reference: Any, other: Any, images: np.ndarray) -> float:
    """Largest absolute difference between two predictors' outputs on ``images``."""
    a, b = reference.predict(images), other.predict(images)
    return float(max(np.abs(a[k].astype(np.float64) - b[k]).max() for k in a))


def _onnx_forward(path: Path, keys: list[str]):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(x: Tensor) -> dict[str, Tensor]:
        outputs = session.run(keys, {"image": x.detach().cpu().numpy().astype(np.float32)})
        return {k: torch.from_numpy(np.asarray(v)) for k, v in zip(keys, outputs)}

    return forward


def _torchscript_forward(path: Path, keys: list[str]):  # type: ignore[no-untyped-def]
    module = torch.jit.load(str(path), map_location="cpu").eval()

    def forward(x: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            return dict(zip(keys, module(x.cpu())))

    return forward


def load_export(path: str | Path, device: str = "cpu", trust: bool = False) -> Any:
    """A :class:`~deeplense.infer.predictor.Predictor` running an exported model: ONNX (a graph of
    operators, no code) with ONNX Runtime, or TorchScript only with ``trust=True``. Its task
    object supplies only the output tables, never the weights."""
    from deeplense.infer.predictor import Predictor
    from deeplense.models.hub import sha256_of

    folder = Path(path)
    folder = folder if folder.is_dir() else folder.parent
    try:
        meta = json.loads((folder / _META).read_text())
        contract = ModelContract.from_dict(json.loads((folder / _CONTRACT).read_text()), f"{folder / _CONTRACT}")
        fmt, keys = meta["format"], list(meta["outputs"])
        model_path = folder / EXPORT_FORMATS[fmt]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataFormatError(f"{folder}: not a readable deeplense export ({exc})") from None
    if not model_path.exists():
        raise DataFormatError(f"{model_path}: missing")
    if fmt == "onnx":
        try:
            forward = _onnx_forward(model_path, keys)
        except ImportError:
            raise ConfigError("model", "ONNX models need onnxruntime: pip install 'deeplense[onnx]'") from None
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for bad files
            raise DataFormatError(f"{model_path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0]})") from None
    elif trust:
        forward = _torchscript_forward(model_path, keys)
    else:
        raise ConfigError(
            "model",
            f"{model_path}: TorchScript files hold code, so deeplense runs them only when told they are yours "
            "(load_export(path, trust=True)); predict with the run, its checkpoint or an ONNX export",
        )
    task = _shell_task(contract, meta)
    pipeline = build_pipeline(contract.input.transforms).train(False)
    return Predictor(
        task,
        contract,
        pipeline,
        model_path,
        name=str(meta.get("name", folder.name)),
        sha256=sha256_of(model_path),
        forward=forward,
        backend=fmt,
    )


def _shell_task(contract: ModelContract, meta: dict[str, Any]) -> Any:
    """The task object (randomly initialised networks) for its tables and view mixing."""
    from dataclasses import replace

    from deeplense.tasks import TASKS

    return TASKS.create(
        contract.task, replace(contract, model=replace(contract.model, pretrained=False)), dict(meta.get("train", {}))
    ).eval()
