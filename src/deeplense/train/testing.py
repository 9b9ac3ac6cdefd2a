"""The held-out test evaluation at the end of a run: the best checkpoint on the test split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deeplense.core.checkpoint import read_checkpoint
from deeplense.core.run_dir import RunDir

__all__ = ["test_best_checkpoint"]


def test_best_checkpoint(trainer: Any, module: Any, loader: Any, best: str | None, run: RunDir) -> dict[str, Any]:
    """Test ``module`` with the weights of ``best`` (else its last weights); writes
    ``test_metrics.json`` and ``predictions_test.csv``; returns the metrics (rank zero)."""
    have_best = bool(best) and Path(str(best)).exists()
    if have_best:  # the weights are read here, restricted to tensors, not by Lightning's loader
        module.load_state_dict(read_checkpoint(best)["state_dict"])
    trainer.test(module, loader, verbose=False)
    got = module.gathered("test")
    if not trainer.is_global_zero:
        return {}
    order = np.argsort(got["index"], kind="stable")
    got = {k: v[order] for k, v in got.items()}
    task = module.task
    truth = {"label": got["label"], "target": got["target"]}
    metrics = task.metrics(got, truth)
    table = task.predictions_table(got, truth)
    table.insert(0, "index", got["index"])
    metrics["checkpoint"] = Path(str(best)).name if have_best else "last weights"
    run.write_json(run.test_metrics, metrics)
    table.to_csv(run.test_predictions, index=False)
    return metrics
