"""Combine trained runs: average their predictions, or fit a stacker on the validation split.

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

import numpy as np
import pandas as pd

from deeplense.core.config import ConfigError

__all__ = ["ensemble", "raw_split"]


def raw_split(dataset, batch: int = 256):
    """(raw images, labels, targets, indices) of a dataset built by ``build_data``, untransformed."""
    from deeplense.data.pipeline import SimulatedImages, StoredImages

    n = len(dataset)
    images, labels, targets = [], [], []
    for lo in range(0, n, batch):
        idx = np.arange(lo, min(lo + batch, n))
        if isinstance(dataset, StoredImages):
            images.append(dataset.source.images(idx))
            labels.append(dataset.labels[idx])
            targets.append(dataset.target_values[idx])
        elif isinstance(dataset, SimulatedImages):
            got = dataset._render(idx, apply_pipeline=False)
            images.append(got["image"].numpy())
            labels.append(got["label"].numpy())
            targets.append(got["target"].numpy())
        else:
            raise TypeError(f"cannot read raw images from {type(dataset).__name__}")
    return np.concatenate(images), np.concatenate(labels), np.concatenate(targets), np.arange(n)


def _combine_regression(means: np.ndarray, sigmas: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``means, sigmas`` (M, N, T); ``weights`` (M, T) summing to 1 per target."""
    w = weights[:, None, :]
    mean = (w * means).sum(0)
    var = (w * (sigmas**2 + (means - mean[None]) ** 2)).sum(0)
    return mean, np.sqrt(var)


def ensemble(
    runs: list[str | Path], out: str | Path, method: str = "mean", data: str | Path | None = None
) -> dict[str, Any]:
    """Evaluate each member and the ensemble on the test split; writes metrics and predictions."""
    from deeplense.evaluate.metrics import classification_metrics, regression_metrics
    from deeplense.train.checkpoint import load_model, run_dir_of
    from deeplense.train.data import run_data

    if method not in ("mean", "stack"):
        raise ConfigError("method", f"must be mean or stack, got {method!r}")
    if len(runs) < 2:
        raise ConfigError("runs", "an ensemble needs at least two runs")
    members = [load_model(r) for r in runs]
    first = members[0].contract
    task = first["task"]
    key = "class_names" if task == "classification" else "targets"
    for m in members[1:]:
        if m.contract["task"] != task or m.contract[key] != first[key]:
            raise ConfigError("runs", f"{m.path}: predicts {m.contract[key]}, the first run {first[key]}")
    built = run_data(run_dir_of(runs[0]), data)
    if built.test is None:
        raise ConfigError("data", "the data have no test split to evaluate the ensemble on")
    test_x, test_y, test_t, test_idx = raw_split(built.test)
    preds = [m.predict(test_x) for m in members]
    report: dict[str, Any] = {"method": method, "members": [str(m.path) for m in members], "n_test": len(test_x)}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame({"index": test_idx})
    if task == "classification":
        names = first["class_names"]
        probs = np.stack([p["probs"] for p in preds])  # (M, N, K)
        report["member_metrics"] = [classification_metrics(p, test_y, names) for p in probs]
        if method == "stack":
            from sklearn.linear_model import LogisticRegression

            if built.val is None:
                raise ConfigError("method", "stacking needs a validation split")
            val_x, val_y, _, _ = raw_split(built.val)
            features = np.concatenate([np.log(m.predict(val_x)["probs"] + 1e-7) for m in members], axis=1)
            stacker = LogisticRegression(max_iter=2000, C=1.0).fit(features, val_y)
            combined = stacker.predict_proba(np.concatenate([np.log(p + 1e-7) for p in probs], axis=1))
            report["stacker"] = {"coef": stacker.coef_.tolist(), "intercept": stacker.intercept_.tolist()}
        else:
            combined = probs.mean(0)
        report["metrics"] = classification_metrics(combined, test_y, names)
        table["label"] = test_y
        for c, name in enumerate(names):
            table[f"p_{name}"] = combined[:, c]
    else:
        targets, units = first["targets"], first["target_units"]
        means, sigmas = np.stack([p["mean"] for p in preds]), np.stack([p["sigma"] for p in preds])
        report["member_metrics"] = [regression_metrics(mu, s, test_t, targets, units) for mu, s in zip(means, sigmas)]
        weights = np.full((len(members), len(targets)), 1.0 / len(members))
        if method == "stack":
            from scipy.optimize import nnls

            if built.val is None:
                raise ConfigError("method", "stacking needs a validation split")
            val_x, _, val_t, _ = raw_split(built.val)
            val_means = np.stack([m.predict(val_x)["mean"] for m in members])
            for t in range(len(targets)):
                w, _ = nnls(val_means[:, :, t].T, val_t[:, t])
                weights[:, t] = w / w.sum() if w.sum() > 0 else 1.0 / len(members)
            report["weights"] = weights.tolist()
        mean, sigma = _combine_regression(means, sigmas, weights)
        report["metrics"] = regression_metrics(mean, sigma, test_t, targets, units)
        for t, name in enumerate(targets):
            table[f"true_{name}"], table[f"mean_{name}"], table[f"sigma_{name}"] = test_t[:, t], mean[:, t], sigma[:, t]
    (out / "ensemble_metrics.json").write_text(json.dumps(report, indent=2))
    table.to_csv(out / "predictions_test.csv", index=False)
    return report
