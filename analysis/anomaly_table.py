"""The anomaly-detection results table of docs/results.md, from evaluated runs.

Each RUN is a run directory evaluated with ``deeplense evaluate RUN`` (its ``evaluation/``
folder) or any folder holding a ``metrics.json`` written by ``deeplense evaluate --out``. For
every run and every score: AUC of normal against all anomalous images with its 95 % bootstrap
interval, the AUC against each anomalous class, the TPR at 1 % FPR, and the run's training time.
A classification run (the supervised bound) is scored by 1 - p(normal class) from its
predictions.csv.

    python analysis/anomaly_table.py runs/iv_ae runs/iv_vae ... [--normal no_sub]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from deeplense.tasks.metrics import anomaly_metrics


def _evaluation(path: Path) -> Path:
    return path / "evaluation" if (path / "evaluation" / "metrics.json").exists() else path


def _minutes(path: Path) -> str:
    summary = path / "summary.json"
    if not summary.exists():
        return ""
    return f"{json.loads(summary.read_text()).get('fit_seconds_total', 0) / 60:.1f}"


def _supervised(path: Path, normal: str) -> dict:
    """A classifier's predictions scored as an anomaly detector: 1 - p(normal)."""
    table = pd.read_csv(_evaluation(path) / "predictions.csv")
    names = [c.removeprefix("p_") for c in table.columns if c.startswith("p_")]
    score = 1 - table[f"p_{normal}"].to_numpy()
    return anomaly_metrics({"1 - p(normal)": score}, table["label"].to_numpy(), names, normal, n_boot=1000)


def rows(paths: list[Path], normal: str) -> list[str]:
    lines = []
    for path in paths:
        metrics = json.loads((_evaluation(path) / "metrics.json").read_text())
        if "scores" not in metrics:
            metrics = _supervised(path, normal)
        for name, entry in metrics["scores"].items():
            lo, hi = entry.get("auc_ci", [np.nan, np.nan])
            per_class = " | ".join(f"{v['auc']:.3f}" for v in entry["per_class"].values())
            lines.append(
                f"| {path.name} | {name} | {entry['auc']:.3f} ({lo:.3f}-{hi:.3f}) | {per_class} | "
                f"{entry['tpr_at_1pct_fpr']:.3f} | {_minutes(path)} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--normal", default="no_sub")
    args = parser.parse_args()
    print("| run | score | AUC (95% CI) | cdm | axion | TPR at 1% FPR | train min |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows(args.runs, args.normal)))


if __name__ == "__main__":
    main()
