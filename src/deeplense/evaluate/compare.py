"""``compare_runs``: a leaderboard across runs (Markdown and CSV) with overlaid ROC curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

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


def _predictions(run_dir: Path, data, n_boot: int) -> tuple[dict[str, Any], pd.DataFrame]:
    if data is None and (run_dir / "test_metrics.json").exists() and (run_dir / "predictions_test.csv").exists():
        return json.loads((run_dir / "test_metrics.json").read_text()), pd.read_csv(run_dir / "predictions_test.csv")
    from deeplense.evaluate.run import evaluate_run

    result = evaluate_run(run_dir, data=data, out=run_dir / "evaluation" if data is None else None, n_boot=n_boot)
    return result["metrics"], pd.read_csv(Path(result["out"]) / "predictions.csv")


def compare_runs(
    runs: list[str | Path], out: str | Path, data: str | Path | None = None, n_boot: int = 200
) -> pd.DataFrame:
    """One row per run: headline metrics, parameters, training time and throughput; writes
    ``leaderboard.md``, ``leaderboard.csv`` and ``roc_overlay.png/pdf`` (classification)."""

    from deeplense.evaluate import plots
    from deeplense.train.checkpoint import load_model

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, curves = [], {}
    task = None
    for run in runs:
        run_dir = Path(run)
        model = load_model(run_dir)
        task = task or model.contract["task"]
        if model.contract["task"] != task:
            raise ValueError(f"{run_dir}: a {model.contract['task']} run cannot be ranked with {task} runs")
        metrics, table = _predictions(run_dir, data, n_boot)
        summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
        row: dict[str, Any] = {
            "run": run_dir.name,
            "model": model.contract["model"]["name"],
            "parameters": int(sum(p.numel() for p in model.module.net.parameters())),
            "epochs": summary.get("epochs_completed"),
            "train_minutes": round(summary.get("fit_seconds_total", float("nan")) / 60, 1),
            "train_images_per_s": summary.get("train_images_per_second"),
            "n_test": metrics.get("n"),
        }
        if task == "classification":
            names = model.contract["class_names"]
            for key in ("auc_macro", "auc", "auc_micro", "accuracy", "ece", "average_precision", "tpr_0", "tpr_10"):
                if key in metrics:
                    row[key] = metrics[key]
            for c, v in metrics.get("auc_per_class", {}).items():
                row[f"auc_{c}"] = v
            probs = table[[f"p_{c}" for c in names]].to_numpy()
            labels = table["label"].to_numpy()
            run_curves = plots.roc_curves(probs, labels, names)
            key = "micro-average" if "micro-average" in run_curves else names[-1]
            if key in run_curves:
                curves[f"{run_dir.name} ({key})"] = run_curves[key]
        else:
            for name, entry in metrics.items():
                if isinstance(entry, dict) and "mae" in entry:
                    for k in ("mae", "rmse", "r2", "bias", "coverage_68", "coverage_95"):
                        if k in entry:
                            row[f"{name}:{k}"] = entry[k]
        rows.append(row)
    board = pd.DataFrame(rows)
    sort_key = next((k for k in ("auc_macro", "auc") if k in board), None)
    if sort_key is None:
        sort_key = next((c for c in board.columns if c.endswith(":mae")), None)
        ascending = True
    else:
        ascending = False
    if sort_key is not None:
        board = board.sort_values(sort_key, ascending=ascending, na_position="last").reset_index(drop=True)
    board.insert(0, "rank", np.arange(1, len(board) + 1))
    board.to_csv(out / "leaderboard.csv", index=False)
    (out / "leaderboard.md").write_text(markdown_table(board))
    if curves:
        plots.save(plots.roc_figure(curves, "ROC curves of the compared runs"), out, "roc_overlay")
    return board
