"""Cutouts -> catalogue: ``predict`` over files, folders and data sets, streamed in batches.

Memory holds one input file (or one batch of a data set) and one batch of conformed images,
whatever the number of files. Rows reach the catalogue's journal batch by batch, so an
interrupted run resumes where it stopped (:mod:`deeplense.infer.catalogue`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deeplense.infer.catalogue import CatalogueWriter
from deeplense.infer.conform import Conformer
from deeplense.infer.cutouts import Cutout, expand_inputs, iter_cutouts
from deeplense.infer.predictor import Predictor

__all__ = ["PredictSummary", "predict_catalogue", "catalogue_metadata"]


@dataclass
class PredictSummary:
    """What a ``predict`` run did: rows written now, rows found done, rows not predicted (NaN
    pixels), rows flagged outside the training images' domain, notes."""

    out: Path
    n_files: int
    written: int = 0
    skipped: int = 0
    flagged: int = 0
    outside: int = 0
    notes: list[str] = field(default_factory=list)


def catalogue_metadata(model: Predictor, options: dict[str, Any]) -> dict[str, str]:
    """The catalogue's metadata: the model's name, version and sha256, the options of the run."""
    from deeplense.core.version import __version__

    spec = model.contract.input
    return {
        "model": model.name,
        "model_version": model.version,
        "model_sha256": model.sha256,
        "model_task": model.contract.task,
        "backend": model.backend,
        "deeplense": __version__,
        "image_contract": (
            f"{spec.in_chans} band(s) {spec.bands or ''}, {spec.raw_size} px of {spec.pixel_scale_arcsec} arcsec, "
            f"units {spec.pixel_units}"
        ),
        "column_units": ", ".join(f"{k}: {v}" for k, v in _column_units(model).items()),
        **{f"option_{k}": str(v) for k, v in sorted(options.items())},
    }


def _column_units(model: Predictor) -> dict[str, str]:
    out = model.contract.output
    units = {"ra": "deg", "dec": "deg"}
    for name, unit in zip(out.targets, out.target_units):
        units[f"mean_{name}"] = units[f"sigma_{name}"] = unit
    return units


def _rows(model: Predictor, batch: list[Cutout], pred: dict[str, np.ndarray], flags: list[str]) -> pd.DataFrame:
    rows = pd.DataFrame(
        {
            "source": [c.source for c in batch],
            "hdu": [c.hdu for c in batch],
            "index": [c.index for c in batch],
            "ra": [c.ra for c in batch],
            "dec": [c.dec for c in batch],
            "seed": [-1 if c.seed is None else c.seed for c in batch],
            "flag": flags,
        }
    )
    return pd.concat([rows, model.table(pred)], axis=1)


def predict_catalogue(
    model: Predictor,
    inputs: list[str],
    out: str | Path,
    *,
    batch_size: int = 256,
    hdu: str | None = None,
    pixel_scale: float | None = None,
    pixel_units: str | None = None,
    nan: str = "refuse",
    tta: str | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    note: Callable[[str], None] | None = None,
) -> PredictSummary:
    """Predict every image of ``inputs`` (files, folders, globs) and write one catalogue row per
    image to ``out`` (``.csv``, ``.fits`` or ``.parquet``). ``progress(files_done, n_files)``
    after each file; ``note(text)`` once per kind of conforming done (resampling, cutting)."""
    paths = expand_inputs(inputs)
    options = {"hdu": hdu, "pixel_scale": pixel_scale, "pixel_units": pixel_units, "nan": nan, "tta": tta}
    writer = CatalogueWriter(out, catalogue_metadata(model, options), overwrite=overwrite)
    conformer = Conformer(model.contract.input, pixel_scale=pixel_scale, pixel_units=pixel_units, nan=nan)
    summary = PredictSummary(Path(out), len(paths))
    said: set[str] = set()
    pending: list[tuple[Cutout, np.ndarray | None]] = []  # in input order; None: masked (NaN pixels)

    def flush() -> None:
        if not pending:
            return
        good = [i for i, (_, image) in enumerate(pending) if image is not None]
        stack = np.stack([image for _, image in pending if image is not None]) if good else None
        if stack is not None:
            got = model.predict(stack, batch_size=batch_size, tta=tta)
        else:
            got = {k: v[:0] for k, v in _blank(model).items()}
        pred = {k: np.full((len(pending), *v.shape[1:]), np.nan, np.float32) for k, v in got.items()}
        for k, v in got.items():
            pred[k][good] = v
        flags = ["" if image is not None else "nan_pixels" for _, image in pending]
        inside = model.in_domain(stack) if stack is not None else None
        if inside is not None:
            for i, ok in zip(good, inside):
                if not ok:
                    flags[i] = "outside_training_domain"
                    summary.outside += 1
        writer.append(_rows(model, [c for c, _ in pending], pred, flags))
        summary.written += len(pending)
        summary.flagged += len(pending) - len(good)
        pending.clear()

    last_file = -1
    for number, cutout in iter_cutouts(paths, model.contract.input, hdu):
        if number != last_file and progress is not None and last_file >= 0:
            progress(number, len(paths))
        last_file = number
        if cutout.key in writer.done:
            summary.skipped += 1
            continue
        image, n_bad = conformer(cutout.image, cutout.facts)
        for kind, text in conformer.notes.items():
            if kind not in said:
                said.add(kind)
                summary.notes.append(text)
                if note is not None:
                    note(text)
        pending.append((cutout, None if n_bad and nan == "mask" else image))
        if len(pending) >= batch_size:
            flush()
    flush()
    if progress is not None:
        progress(len(paths), len(paths))
    writer.finish(_column_units(model))
    return summary


def _blank(model: Predictor) -> dict[str, np.ndarray]:
    """One prediction, for the shapes of rows that are flagged instead of predicted."""
    spec = model.contract.input
    size = spec.raw_size or spec.img_size
    return model.predict(np.zeros((1, spec.in_chans, size, size), np.float32))
