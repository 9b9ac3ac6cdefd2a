"""Metrics for classification (one-vs-rest ROC AUC, accuracy, confusion, calibration) and for
regression with predicted uncertainties (MAE, RMSE, R^2, bias, interval coverage)."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

__all__ = ["classification_metrics", "regression_metrics", "expected_calibration_error"]


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE of the top-class confidence over ``bins`` equal-width bins (Guo et al. 2017)."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def classification_metrics(probs: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """``probs`` (N, K) summing to 1, integer ``labels`` (N,)."""
    from sklearn.metrics import confusion_matrix, roc_auc_score

    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    k = len(class_names)
    out: dict[str, Any] = {"n": int(len(labels)), "accuracy": float((probs.argmax(1) == labels).mean())}
    present = np.unique(labels)
    per_class = {}
    for c in range(k):
        if c in present and len(present) > 1:
            per_class[class_names[c]] = float(roc_auc_score(labels == c, probs[:, c]))
    out["auc_per_class"] = per_class
    if k == 2 and len(present) == 2:
        out["auc"] = per_class[class_names[1]]
    if len(per_class) == k and k > 1:
        out["auc_macro"] = float(np.mean(list(per_class.values())))
        onehot = np.eye(k)[labels]
        out["auc_micro"] = float(roc_auc_score(onehot.ravel(), probs.ravel()))
    out["confusion_matrix"] = confusion_matrix(labels, probs.argmax(1), labels=list(range(k))).tolist()
    out["ece"] = expected_calibration_error(probs, labels)
    return out


def regression_metrics(
    mean: np.ndarray, sigma: np.ndarray | None, truth: np.ndarray, names: list[str], units: list[str]
) -> dict[str, Any]:
    """Per target: MAE, RMSE, R^2, bias (mean of prediction - truth) and, with predicted ``sigma``,
    the fraction of truths inside the central 68.27 % and 95.45 % Gaussian intervals."""
    mean, truth = np.atleast_2d(np.asarray(mean, float)), np.atleast_2d(np.asarray(truth, float))
    out: dict[str, Any] = {"n": int(len(truth))}
    for t, (name, unit) in enumerate(zip(names, units)):
        err = mean[:, t] - truth[:, t]
        ss_tot = ((truth[:, t] - truth[:, t].mean()) ** 2).sum()
        entry = {
            "unit": unit,
            "mae": float(np.abs(err).mean()),
            "rmse": float(np.sqrt((err**2).mean())),
            "r2": float(1 - (err**2).sum() / ss_tot) if ss_tot > 0 else float("nan"),
            "bias": float(err.mean()),
            "mae_constant_predictor": float(np.abs(truth[:, t] - np.median(truth[:, t])).mean()),
        }
        if sigma is not None:
            s = np.atleast_2d(np.asarray(sigma, float))[:, t]
            z = np.abs(err) / s
            entry["coverage_68"] = float((z <= 1.0).mean())
            entry["coverage_95"] = float((z <= 2.0).mean())
            entry["mean_sigma"] = float(s.mean())
            entry["nll"] = float(-stats.norm.logpdf(truth[:, t], mean[:, t], s).mean())
        out[name] = entry
    return out
