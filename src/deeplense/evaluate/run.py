"""``evaluate_run``: a trained run on any data set the readers accept -> metrics, figures, report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deeplense.core.config import ConfigError, load_yaml
from deeplense.core.errors import DataFormatError
from deeplense.core.run_dir import RunDir, run_dir_of
from deeplense.infer import Predictor, load_predictor

__all__ = ["evaluate_run", "evaluation_data"]


def evaluation_data(
    model: Predictor,
    run_dir: Path,
    data: str | Path | None,
    split: str | None,
    pixel_scale: float | None = None,
    allow_out_of_domain: bool = False,
) -> dict[str, Any]:
    """Raw images and their truth (``label`` in the model's class order, ``target``) to evaluate
    on, with provenance and one row of traceability per image (``trace``: file or data-set index,
    and seed where simulated): the run's own split, or any data set, checked against the model's
    image contract and conformed to it (:mod:`deeplense.infer.conform`; ``pixel_scale`` in arcsec
    for data that do not record theirs). Data of which most images lie outside the domain of the
    model's training images (:mod:`deeplense.data.domain`) are refused unless
    ``allow_out_of_domain``."""
    from deeplense.data.datasets import raw_split
    from deeplense.data.readers import open_dataset
    from deeplense.train.data import run_data

    contract = model.contract
    if data is None:
        built = run_data(run_dir)
        part = {"test": built.test, "val": built.val, "train": built.train}.get(split or "test")
        if part is None:
            raise ConfigError("split", f"the run's data have no {split or 'test'} split")
        images, labels, targets, _ = raw_split(part)
        source = getattr(part, "source", None)
        return {
            "images": images,
            "truth": {"label": labels, "target": targets},
            "provenance": {**contract.provenance.data, "split": split or "test"},
            "trace": _trace(source) if source is not None else None,
            "metadata": source.metadata.reset_index(drop=True) if source is not None else None,
        }
    source = open_dataset(data)
    stored = sorted(set(source.splits) - {""})
    if split is None and "test" in stored:
        split = "test"
    if split is not None:
        source = source.subset(split)
    source = model.task.usable_part(source, str(data))
    n = len(source)
    truth = model.task.truth_from_source(source, str(data))
    images = np.concatenate([source.images(np.arange(lo, min(lo + 256, n))) for lo in range(0, n, 256)])
    bad = ~np.isfinite(images.reshape(n, -1)).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)[:3]
        named = source.metadata["file"].iloc[rows].tolist() if "file" in source.metadata else rows.tolist()
        raise DataFormatError(f"{data}: {int(bad.sum())} image(s) with NaN/Inf pixels, e.g. {named}")
    provenance = {"path": str(Path(data).resolve()), "layout": source.layout, "split": split or "(all)", "n": n}
    if images.shape[1] != contract.input.in_chans:
        raise ConfigError(
            "data", f"{data}: images have {images.shape[1]} band(s), the model was trained on {contract.input.in_chans}"
        )
    images, notes = _conform(model, source, images, str(data), pixel_scale)
    if notes:
        provenance["conformed"] = notes
    _check_domain(model, images, str(data), provenance, allow_out_of_domain)
    return {
        "images": images,
        "truth": truth,
        "provenance": provenance,
        "trace": _trace(source),
        "metadata": source.metadata.reset_index(drop=True),
    }


def _conform(
    model: Predictor, source: Any, images: np.ndarray, where: str, pixel_scale: float | None
) -> tuple[np.ndarray, list[str]]:
    """The images checked against the model's image contract and brought to it."""
    from deeplense.data.base import root_source
    from deeplense.infer.conform import Conformer, ImageFacts

    info = (getattr(root_source(source), "manifest", None) or {}).get("image", {})
    units = info.get("pixel_units")
    facts = ImageFacts(where, info.get("pixel_scale_arcsec"), units[0] if units else None)
    conformer = Conformer(model.contract.input, pixel_scale=pixel_scale)
    conformed = np.stack([conformer(image, facts)[0] for image in images])
    return conformed, list(conformer.notes.values())


def _check_domain(model: Predictor, images: np.ndarray, where: str, provenance: dict, allow: bool) -> None:
    """Record the fraction of images outside the training domain; refuse data mostly outside it."""
    from deeplense.data.domain import describe_outside, inside_domain

    domain = model.contract.input.domain
    if domain is None:
        return
    statistics = model.statistics(images)
    outside = ~inside_domain(statistics, domain)
    provenance["outside_training_domain"] = float(outside.mean())
    if outside.mean() > 0.5 and not allow:
        raise ConfigError(
            "data",
            f"{where}: {int(outside.sum())} of {len(images)} images lie outside the domain of the model's training "
            f"images ({describe_outside(statistics, domain)}, after the model's transforms): another instrument, "
            "noise or pixel scale than it was trained on, so its metrics here would not mean what they seem; "
            "pass --allow-out-of-domain to evaluate anyway",
        )


def _trace(source: Any) -> pd.DataFrame:
    """Where each image came from: its file (or data-set index) and seed where simulated."""
    meta = source.metadata
    columns = [c for c in ("file", "index", "seed") if c in meta]
    return meta[columns].reset_index(drop=True)


def _color_values(metadata: pd.DataFrame | None, column: str | None, n: int) -> np.ndarray | None:
    """The values of the metadata ``column`` per image (NaN where an image has none)."""
    if column is None:
        return None
    if metadata is None or column not in metadata or len(metadata) != n:
        known = [c for c in (metadata.columns if metadata is not None else []) if c not in ("file", "split")]
        raise ConfigError("color_by", f"no metadata column {column!r} in these data; they have {known}")
    values = pd.to_numeric(metadata[column], errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(values).any():
        raise ConfigError("color_by", f"metadata column {column!r} holds no numbers")
    return values


def _embedding(
    features: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    column: str | None,
    values: np.ndarray | None,
    out: Path,
) -> list[Path]:
    """The feature map: ``embedding.png``/``.pdf`` and its coordinates in ``embedding.csv``."""
    from deeplense.evaluate import plots
    from deeplense.evaluate.embedding import feature_map

    rows, xy = feature_map(features)
    table = pd.DataFrame({"row": rows, "x": xy[:, 0], "y": xy[:, 1], "label": labels[rows]})
    if values is not None and column is not None:
        table[column] = values[rows]
    table.to_csv(out / "embedding.csv", index=False)
    chosen = values[rows] if values is not None else None
    figure = plots.embedding_figure(xy, labels[rows], class_names, chosen, column or "")
    return plots.save(figure, out, "embedding")


def evaluate_run(
    run: str | Path,
    data: str | Path | None = None,
    out: str | Path | None = None,
    split: str | None = None,
    n_boot: int = 1000,
    tta: str | None = None,
    pixel_scale: float | None = None,
    allow_out_of_domain: bool = False,
    embed: bool = False,
    color_by: str | None = None,
) -> dict[str, Any]:
    """Evaluate a run (directory or checkpoint); writes metrics.json, the task's figures,
    predictions.csv and report.html.

    ``tta``: combine the predictions over the d2 or d4 transforms of each image (see
    :meth:`deeplense.infer.Predictor.predict`). ``embed`` (always on for tasks whose predictions
    are features, i.e. pretraining): a t-SNE map of the encoder's features, ``embedding.png`` and
    ``embedding.csv``, also coloured by the metadata column ``color_by``."""
    from deeplense.evaluate import plots
    from deeplense.evaluate.report import write_html_report

    model = load_predictor(run)
    run_files = RunDir(run_dir_of(run))
    out = Path(out) if out is not None else run_files.evaluation
    got = evaluation_data(model, run_files.root, data, split, pixel_scale, allow_out_of_domain)
    color_values = _color_values(got.get("metadata"), color_by, len(got["images"]))
    pred = model.predict(got["images"], tta=tta)
    out.mkdir(parents=True, exist_ok=True)  # only once the data are known to be good
    task = model.task
    metrics = task.metrics(pred, got["truth"], n_boot=n_boot)
    shown = task.example_indices(pred, got["truth"])
    if len(shown) and model.backend == "torch":
        pred["examples"] = {"index": shown, **model.explain(got["images"][shown])}
    figures = plots.draw(task.figures, pred, got["truth"], got["images"], model.contract, out)
    if embed or color_by is not None or ("features" in pred and len(got["images"]) >= 5):
        features = pred["features"] if "features" in pred else model.features(got["images"])
        figures += _embedding(
            features, got["truth"]["label"], model.contract.output.class_names, color_by, color_values, out
        )
    metrics["data"] = got["provenance"]
    metrics["test_time_augmentation"] = tta or "none"
    metrics["checkpoint"] = str(model.path)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    table = task.predictions_table(pred, got["truth"])
    if got.get("trace") is not None and len(got["trace"]) == len(table):
        table = pd.concat([got["trace"], table], axis=1)
    table.to_csv(out / "predictions.csv", index=False)
    config = load_yaml(run_files.config) if run_files.config.exists() else {}
    report = write_html_report(
        out / "report.html",
        metrics,
        model.contract,
        task.headline(metrics),
        config,
        run_files.read_summary(),
        [f for f in figures if f.suffix == ".png"],
    )
    return {
        "task": model.contract.task,
        "metrics": metrics,
        "out": str(out),
        "report": str(report),
        "figures": [str(f) for f in figures],
    }
