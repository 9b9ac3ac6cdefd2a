"""``evaluate_run``: a trained run on any data set the readers accept -> metrics, figures, report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deeplense.core.config import ConfigError, load_yaml

__all__ = ["evaluate_run", "evaluation_data"]


def evaluation_data(model, run_dir: Path, data: str | Path | None, split: str | None, progress=None) -> dict[str, Any]:
    """Raw images, labels (in the model's class order) and targets to evaluate on, with provenance."""
    from deeplense.data.readers import open_dataset
    from deeplense.train.data import run_data
    from deeplense.train.ensemble import raw_split

    contract = model.contract
    if data is None:
        built = run_data(run_dir)
        part = {"test": built.test, "val": built.val, "train": built.train}.get(split or "test")
        if part is None:
            raise ConfigError("split", f"the run's data have no {split or 'test'} split")
        images, labels, targets, _ = raw_split(part)
        return {
            "images": images,
            "labels": labels,
            "targets": targets,
            "provenance": {**contract["data"], "split": split or "test"},
        }
    source = open_dataset(data)
    stored = sorted(set(source.splits) - {""})
    if split is None and "test" in stored:
        split = "test"
    if split is not None:
        source = source.subset(split)
    n = len(source)
    images = np.concatenate([source.images(np.arange(lo, min(lo + 256, n))) for lo in range(0, n, 256)])
    provenance = {"path": str(Path(data).resolve()), "layout": source.layout, "split": split or "(all)", "n": n}
    if contract["task"] == "classification":
        missing = [c for c in source.class_names if c not in contract["class_names"]]
        if missing:
            raise ConfigError(
                "data", f"{data}: class {missing[0]!r} is not one the model predicts ({contract['class_names']})"
            )
        mapping = np.array([contract["class_names"].index(c) for c in source.class_names])
        labels, targets = mapping[source.labels], np.zeros((n, 0), np.float32)
    else:
        from deeplense.data.pipeline import target_table

        targets, labels = target_table(source, contract["targets"]), source.labels
    shape = tuple(images.shape[1:])
    if shape[0] != contract["in_chans"]:
        raise ConfigError(
            "data", f"{data}: images have {shape[0]} band(s), the model was trained on {contract['in_chans']}"
        )
    return {"images": images, "labels": labels, "targets": targets, "provenance": provenance}


def evaluate_run(
    run: str | Path,
    data: str | Path | None = None,
    out: str | Path | None = None,
    split: str | None = None,
    n_boot: int = 1000,
    tta: str | None = None,
) -> dict[str, Any]:
    """Evaluate a run (directory or checkpoint); writes metrics.json, figures and report.html.

    ``tta``: average the predictions over the d2 or d4 transforms of each image (see
    :meth:`LoadedModel.predict`)."""
    from deeplense.evaluate import plots
    from deeplense.evaluate.metrics import classification_metrics, regression_metrics
    from deeplense.evaluate.report import write_html_report
    from deeplense.train.checkpoint import load_model, run_dir_of

    model = load_model(run)
    run_dir = run_dir_of(run)
    out = Path(out) if out is not None else run_dir / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    got = evaluation_data(model, run_dir, data, split)
    pred = model.predict(got["images"], tta=tta)
    contract = model.contract
    figures: list[Path] = []
    if contract["task"] == "classification":
        names = contract["class_names"]
        metrics = classification_metrics(pred["probs"], got["labels"], names, n_boot=n_boot)
        figures += plots.save(plots.roc_figure(plots.roc_curves(pred["probs"], got["labels"], names)), out, "roc")
        figures += plots.save(plots.confusion_figure(np.asarray(metrics["confusion_matrix"]), names), out, "confusion")
        figures += plots.save(plots.reliability_figure(pred["probs"], got["labels"]), out, "reliability")
        figures += plots.save(
            plots.examples_figure(got["images"], got["labels"], pred["probs"], names), out, "examples"
        )
        table = pd.DataFrame({"label": got["labels"], **{f"p_{c}": pred["probs"][:, i] for i, c in enumerate(names)}})
    else:
        metrics = regression_metrics(
            pred["mean"], pred["sigma"], got["targets"], contract["targets"], contract["target_units"]
        )
        table = pd.DataFrame()
        for t, (name, unit) in enumerate(zip(contract["targets"], contract["target_units"])):
            scatter, residual = plots.regression_figures(
                pred["mean"][:, t], pred["sigma"][:, t], got["targets"][:, t], name, unit
            )
            safe = name.replace(".", "_")
            figures += plots.save(scatter, out, f"pred_vs_true_{safe}") + plots.save(residual, out, f"residuals_{safe}")
            table[f"true_{name}"], table[f"mean_{name}"], table[f"sigma_{name}"] = (
                got["targets"][:, t],
                pred["mean"][:, t],
                pred["sigma"][:, t],
            )
    metrics["data"] = got["provenance"]
    metrics["test_time_augmentation"] = tta or "none"
    metrics["checkpoint"] = str(model.path)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    table.to_csv(out / "predictions.csv", index=False)
    config = load_yaml(run_dir / "config.yaml") if (run_dir / "config.yaml").exists() else {}
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    report = write_html_report(
        out / "report.html", metrics, contract, config, summary, [f for f in figures if f.suffix == ".png"]
    )
    return {"metrics": metrics, "out": str(out), "report": str(report), "figures": [str(f) for f in figures]}
