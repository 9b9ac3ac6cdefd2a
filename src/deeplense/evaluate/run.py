"""``evaluate_run``: a trained run on any data set the readers accept -> metrics, figures, report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from deeplense.core.config import ConfigError, load_yaml
from deeplense.core.errors import DataFormatError
from deeplense.core.run_dir import RunDir, run_dir_of
from deeplense.infer import Predictor, load_predictor

__all__ = ["evaluate_run", "evaluation_data"]


def evaluation_data(model: Predictor, run_dir: Path, data: str | Path | None, split: str | None) -> dict[str, Any]:
    """Raw images and their truth (``label`` in the model's class order, ``target``) to evaluate
    on, with provenance: the run's own split, or any data set."""
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
        return {
            "images": images,
            "truth": {"label": labels, "target": targets},
            "provenance": {**contract.provenance.data, "split": split or "test"},
        }
    source = open_dataset(data)
    stored = sorted(set(source.splits) - {""})
    if split is None and "test" in stored:
        split = "test"
    if split is not None:
        source = source.subset(split)
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
    return {"images": images, "truth": truth, "provenance": provenance}


def evaluate_run(
    run: str | Path,
    data: str | Path | None = None,
    out: str | Path | None = None,
    split: str | None = None,
    n_boot: int = 1000,
    tta: str | None = None,
) -> dict[str, Any]:
    """Evaluate a run (directory or checkpoint); writes metrics.json, the task's figures,
    predictions.csv and report.html.

    ``tta``: combine the predictions over the d2 or d4 transforms of each image (see
    :meth:`deeplense.infer.Predictor.predict`)."""
    from deeplense.evaluate import plots
    from deeplense.evaluate.report import write_html_report

    model = load_predictor(run)
    run_files = RunDir(run_dir_of(run))
    out = Path(out) if out is not None else run_files.evaluation
    got = evaluation_data(model, run_files.root, data, split)
    pred = model.predict(got["images"], tta=tta)
    out.mkdir(parents=True, exist_ok=True)  # only once the data are known to be good
    task = model.task
    metrics = task.metrics(pred, got["truth"], n_boot=n_boot)
    figures = plots.draw(task.figures, pred, got["truth"], got["images"], model.contract, out)
    metrics["data"] = got["provenance"]
    metrics["test_time_augmentation"] = tta or "none"
    metrics["checkpoint"] = str(model.path)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    task.predictions_table(pred, got["truth"]).to_csv(out / "predictions.csv", index=False)
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
