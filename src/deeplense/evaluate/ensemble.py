"""Combine trained runs: average their predictions, or fit a stacker on the validation split.

The task combines its members' predictions (:meth:`deeplense.tasks.base.Task.combine_members`).
Every member sees the raw images through its own evaluation transforms (from its checkpoint), so
runs with different preprocessing or models combine. Classification: ``mean`` averages the class
probabilities; ``stack`` fits a multinomial logistic regression on the members' validation
log-probabilities. Regression: ``mean`` is the equally weighted Gaussian mixture (mean of means;
variance = mean of variances + variance of means); ``stack`` fits non-negative weights of the
members' means on the validation split (least squares) and keeps the mixture variance.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deeplense.core.config import ConfigError

__all__ = ["ensemble"]


def ensemble(
    runs: list[str | Path], out: str | Path, method: str = "mean", data: str | Path | None = None
) -> dict[str, Any]:
    """Evaluate each member and the ensemble on the test split; writes metrics and predictions."""
    from deeplense.core.run_dir import run_dir_of
    from deeplense.data.datasets import raw_split
    from deeplense.infer import load_predictor
    from deeplense.train.data import run_data

    if method not in ("mean", "stack"):
        raise ConfigError("method", f"must be mean or stack, got {method!r}")
    if len(runs) < 2:
        raise ConfigError("runs", "an ensemble needs at least two runs")
    members = [load_predictor(r) for r in runs]
    first = members[0].contract
    for m in members[1:]:
        same = m.contract.output.class_names == first.output.class_names and (
            m.contract.output.targets == first.output.targets
        )
        if m.contract.task != first.task or not same:
            raise ConfigError(
                "runs",
                f"{m.path}: a {m.contract.task} model of {m.contract.output.class_names or m.contract.output.targets}, the first run {first.task} of {first.output.class_names or first.output.targets}",
            )
    task = members[0].task
    built = run_data(run_dir_of(runs[0]), data)
    if built.test is None:
        raise ConfigError("data", "the data have no test split to evaluate the ensemble on")
    test_x, test_y, test_t, test_idx = raw_split(built.test)
    truth = {"label": test_y, "target": test_t}
    preds = [m.predict(test_x) for m in members]
    val_preds = val_truth = None
    if method == "stack":
        if built.val is None:
            raise ConfigError("method", "stacking needs a validation split")
        val_x, val_y, val_t, _ = raw_split(built.val)
        val_preds, val_truth = [m.predict(val_x) for m in members], {"label": val_y, "target": val_t}
    combined, fitted = task.combine_members(preds, method, val_preds, val_truth)
    report: dict[str, Any] = {
        "task": first.task,
        "method": method,
        "members": [str(m.path) for m in members],
        "n_test": len(test_x),
    }
    report["member_metrics"] = [task.metrics(p, truth) for p in preds]
    report.update(fitted)
    report["metrics"] = task.metrics(combined, truth)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = task.predictions_table(combined, truth)
    table.insert(0, "index", test_idx)
    (out / "ensemble_metrics.json").write_text(json.dumps(report, indent=2))
    table.to_csv(out / "predictions_test.csv", index=False)
    return report
