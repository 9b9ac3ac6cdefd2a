"""``compare_runs``: a leaderboard across runs (Markdown and CSV) with overlaid ROC curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deeplense.core.run_dir import RunDir

__all__ = ["compare_runs"]


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table; floats with 4 decimals."""

    def cell(v) -> str:
        if isinstance(v, float | np.floating):
            return "" if np.isnan(v) else f"{v:.4f}"
        return str(v)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _predictions(run: RunDir, data, n_boot: int) -> tuple[dict[str, Any], pd.DataFrame]:
    if data is None and run.test_metrics.exists() and run.test_predictions.exists():
        return json.loads(run.test_metrics.read_text()), pd.read_csv(run.test_predictions)
    from deeplense.evaluate.run import evaluate_run

    result = evaluate_run(run.root, data=data, out=run.evaluation if data is None else None, n_boot=n_boot)
    return result["metrics"], pd.read_csv(Path(result["out"]) / "predictions.csv")


def _overlay_curve(model, table: pd.DataFrame) -> tuple[str, tuple] | None:
    """The run's ROC curve for the overlay (micro-average, else the last class), where it has
    class probabilities."""
    from deeplense.tasks.metrics import roc_curves

    names = model.contract.output.class_names
    columns = [f"p_{c}" for c in names]
    if not names or "label" not in table or any(c not in table for c in columns):
        return None
    curves = roc_curves(table[columns].to_numpy(), table["label"].to_numpy(), names)
    key = "micro-average" if "micro-average" in curves else names[-1]
    return (key, curves[key]) if key in curves else None


def compare_runs(
    runs: list[str | Path], out: str | Path, data: str | Path | None = None, n_boot: int = 200
) -> pd.DataFrame:
    """One row per run: the task's headline metrics, parameters, training time and throughput;
    writes ``leaderboard.md``, ``leaderboard.csv`` and ``roc_overlay.png/pdf`` where the runs
    predict classes. Runs are ranked by their task's ranking metric."""
    from deeplense.evaluate import plots
    from deeplense.infer import load_predictor

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, curves = [], {}
    task = None
    for path in runs:
        run = RunDir(path)
        model = load_predictor(run.root)
        task = task or model.task
        if model.contract.task != task.contract.task:
            raise ValueError(f"{run.root}: a {model.contract.task} run cannot be ranked with {task.contract.task} runs")
        metrics, table = _predictions(run, data, n_boot)
        summary = run.read_summary()
        row: dict[str, Any] = {
            "run": run.root.name,
            "model": model.contract.model.name,
            "parameters": model.n_parameters,
            "epochs": summary.get("epochs_completed"),
            "train_minutes": round(summary.get("fit_seconds_total", float("nan")) / 60, 1),
            "train_images_per_s": summary.get("train_images_per_second"),
            "n_test": metrics.get("n"),
        }
        row.update(model.task.headline(metrics))
        rows.append(row)
        curve = _overlay_curve(model, table)
        if curve is not None:
            curves[f"{run.root.name} ({curve[0]})"] = curve[1]
    board = pd.DataFrame(rows)
    metrics, ascending = task.ranking if task is not None else ((), True)
    sort_key = next((c for m in metrics for c in board.columns if c == m or c.endswith(f":{m}")), None)
    if sort_key is not None:
        board = board.sort_values(sort_key, ascending=ascending, na_position="last").reset_index(drop=True)
    board.insert(0, "rank", np.arange(1, len(board) + 1))
    board.to_csv(out / "leaderboard.csv", index=False)
    (out / "leaderboard.md").write_text(markdown_table(board))
    if curves:
        plots.save(plots.roc_figure(curves, "ROC curves of the compared runs"), out, "roc_overlay")
    return board
