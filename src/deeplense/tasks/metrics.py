"""Metrics for classification (one-vs-rest ROC AUC, accuracy, confusion, calibration), for
regression with predicted uncertainties (MAE, RMSE, R^2, bias, interval coverage) and for anomaly
scores (AUC of normal against anomalous images, overall and per class; TPR at fixed FPR)."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "classification_metrics",
    "regression_metrics",
    "expected_calibration_error",
    "bootstrap_auc",
    "rank_auc",
    "tpr_at_false_positives",
    "roc_curves",
    "anomaly_metrics",
    "knn_probe",
]


def tpr_at_false_positives(scores: np.ndarray, positive: np.ndarray, max_false_positives: int) -> float:
    """Highest true-positive rate at a threshold that lets through at most ``max_false_positives``
    negatives (TPR_0 for 0: every positive scored above the highest-scored negative)."""
    scores, positive = np.asarray(scores, float), np.asarray(positive, bool)
    negatives = np.sort(scores[~positive])[::-1]
    if len(negatives) <= max_false_positives:
        return 1.0
    threshold = negatives[max_false_positives]  # the (k+1)-th highest negative must be excluded
    return float((scores[positive] > threshold).mean())


def rank_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of ``score`` for the boolean ``positive`` by the Mann-Whitney rank sum (ties count
    one half, as in scikit-learn's ``roc_auc_score``, which is ten times slower on resamples)."""
    from scipy.stats import rankdata

    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def bootstrap_auc(
    probs: np.ndarray, labels: np.ndarray, n_classes: int, n_boot: int = 1000, seed: int = 0
) -> dict[str, list[float]]:
    """95 % percentile intervals of per-class, macro and micro one-vs-rest AUC from ``n_boot``
    resamples of the images (resamples missing a class are redrawn)."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    draws: dict[str, list[float]] = {}
    onehot = np.eye(n_classes)[labels]
    done = 0
    while done < n_boot:
        idx = rng.integers(0, n, n)
        y = labels[idx]
        if len(np.unique(y)) < n_classes:
            continue
        per = [rank_auc(y == c, probs[idx, c]) for c in range(n_classes)]
        for c, value in enumerate(per):
            draws.setdefault(str(c), []).append(value)
        if n_classes > 2:
            draws.setdefault("macro", []).append(float(np.mean(per)))
            draws.setdefault("micro", []).append(rank_auc(onehot[idx].ravel(), probs[idx].ravel()))
        done += 1
    return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in draws.items()}


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


def classification_metrics(
    probs: np.ndarray, labels: np.ndarray, class_names: list[str], n_boot: int = 0
) -> dict[str, Any]:
    """``probs`` (N, K) summing to 1, integer ``labels`` (N,). ``n_boot > 0`` adds bootstrap
    95 % intervals (``*_ci``). Binary sets also get average precision, TPR_0 and TPR_10 (true
    positive rate with no false positive / fewer than ten false positives) for class 1."""
    from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

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
    if k == 2 and len(present) == 2:
        positive = labels == 1
        out["average_precision"] = float(average_precision_score(positive, probs[:, 1]))
        out["tpr_0"] = tpr_at_false_positives(probs[:, 1], positive, 0)
        out["tpr_10"] = tpr_at_false_positives(probs[:, 1], positive, 9)
    if n_boot and len(present) == k and k > 1:
        ci = bootstrap_auc(probs, labels, k, n_boot)
        out["auc_per_class_ci"] = {class_names[int(c)]: v for c, v in ci.items() if c.isdigit()}
        if "macro" in ci:
            out["auc_macro_ci"], out["auc_micro_ci"] = ci["macro"], ci["micro"]
        if k == 2:
            out["auc_ci"] = ci["1"]
        out["bootstrap_resamples"] = n_boot
    return out


def errors_by_truth(truth: np.ndarray, err: np.ndarray, bins: int = 8) -> list[dict[str, float | int | None]]:
    """MAE and bias in ``bins`` equal-width intervals of the true value (where a target is hard
    to identify, the errors grow there and the bias pulls towards the middle of the prior)."""
    edges = np.linspace(truth.min(), truth.max(), bins + 1)
    which = np.clip(np.searchsorted(edges, truth, side="right") - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        e = err[which == b]
        rows.append(
            {
                "lo": float(edges[b]),
                "hi": float(edges[b + 1]),
                "n": int(len(e)),
                "mae": float(np.abs(e).mean()) if len(e) else None,
                "bias": float(e.mean()) if len(e) else None,
            }
        )
    return rows


def regression_metrics(
    mean: np.ndarray, sigma: np.ndarray | None, truth: np.ndarray, names: list[str], units: list[str]
) -> dict[str, Any]:
    """Per target: MAE, RMSE, R^2, bias (mean of prediction - truth), the MAE and bias in eight
    intervals of the true value (``by_truth``) and, with predicted ``sigma``, the fraction of
    truths inside the central 68.27 % and 95.45 % Gaussian intervals."""
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
            "by_truth": errors_by_truth(truth[:, t], err),
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


def roc_curves(probs: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict[str, tuple]:
    """One-vs-rest ROC curves ``{class: (fpr, tpr, auc)}`` (the positive class alone for two
    classes), and the micro-average when every class is present."""
    from sklearn.metrics import roc_auc_score, roc_curve

    curves = {}
    columns = [1] if len(class_names) == 2 else range(len(class_names))
    for c in columns:
        if len(np.unique(labels == c)) == 2:
            fpr, tpr, _ = roc_curve(labels == c, probs[:, c])
            curves[class_names[c]] = (fpr, tpr, roc_auc_score(labels == c, probs[:, c]))
    if len(class_names) > 2 and len(curves) == len(class_names):
        onehot = np.eye(len(class_names))[labels]
        fpr, tpr, _ = roc_curve(onehot.ravel(), probs.ravel())
        curves["micro-average"] = (fpr, tpr, roc_auc_score(onehot.ravel(), probs.ravel()))
    return curves


def anomaly_metrics(
    scores: dict[str, np.ndarray], labels: np.ndarray, class_names: list[str], normal: str, n_boot: int = 0
) -> dict[str, Any]:
    """Anomaly scores (higher: more anomalous) against the truth: for each score, the ROC AUC of
    the normal class against all other classes together and against each alone, and the true
    positive rate at 1 % and 10 % false positives (normal images flagged). ``n_boot > 0`` adds
    95 % bootstrap intervals of the AUCs (``*_ci``)."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    is_normal = labels == class_names.index(normal)
    out: dict[str, Any] = {
        "n": int(len(labels)),
        "n_per_class": {c: int((labels == i).sum()) for i, c in enumerate(class_names)},
        "normal_class": normal,
    }
    anomalous = [c for i, c in enumerate(class_names) if c != normal and (labels == i).any()]
    if not is_normal.any() or not anomalous:
        out["scores"] = {}
        return out

    def auc_with_interval(score: np.ndarray, keep: np.ndarray) -> dict[str, Any]:
        positive = ~is_normal[keep]
        entry: dict[str, Any] = {"auc": float(roc_auc_score(positive, score[keep]))}
        if n_boot:
            both = np.stack([-score[keep], score[keep]], axis=1)
            entry["auc_ci"] = bootstrap_auc(both, positive.astype(int), 2, n_boot)["1"]
        return entry

    per_score = {}
    for name, score in scores.items():
        score = np.asarray(score, dtype=np.float64)
        everything = np.ones(len(labels), bool)
        entry = auc_with_interval(score, everything)
        n_normal = int(is_normal.sum())
        for percent in (1, 10):
            entry[f"tpr_at_{percent}pct_fpr"] = tpr_at_false_positives(score, ~is_normal, n_normal * percent // 100)
        entry["per_class"] = {
            c: auc_with_interval(score, is_normal | (labels == class_names.index(c))) for c in anomalous
        }
        per_score[name] = entry
    out["scores"] = per_score
    return out


def knn_probe(
    features: np.ndarray, labels: np.ndarray, class_names: list[str], n_boot: int = 0, k: int = 20
) -> dict[str, Any] | None:
    """How well frozen ``features`` (N, F) separate the classes: a cosine k-nearest-neighbour
        classifier, cross-fitted over two stratified halves (each image's class probabilities come
        from neighbours in the other half), scored by :func:`classification_metrics` over the classes
    present. ``None`` where
        fewer than two classes have four images or more."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    labels = np.asarray(labels)
    present, counts = np.unique(labels, return_counts=True)
    if len(present) < 2 or counts.min() < 4:
        return None
    k = int(min(k, len(labels) // 2 - 1))
    knn = KNeighborsClassifier(n_neighbors=k, metric="cosine", weights="distance")
    folds = StratifiedKFold(n_splits=2, shuffle=True, random_state=0)
    probs = cross_val_predict(knn, np.asarray(features, np.float64), labels, cv=folds, method="predict_proba")
    names = [class_names[c] for c in present]  # the columns of probs: the classes present, in order
    out = classification_metrics(probs, np.searchsorted(present, labels), names, n_boot)
    out["k"] = k
    return out
