"""Publication figures (matplotlib, Agg): ROC curves, confusion matrix, reliability diagram,
predicted-vs-true and residuals, a grid of correctly and wrongly classified examples, and for
anomaly detection the ROC per anomalous class, score histograms and reconstructions.
Each figure is written as PNG (150 dpi) and PDF."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402

from deeplense.core.registry import Registry  # noqa: E402
from deeplense.tasks.metrics import roc_curves  # noqa: E402

__all__ = [
    "FIGURES",
    "draw",
    "save",
    "roc_figure",
    "confusion_figure",
    "reliability_figure",
    "regression_figures",
    "examples_figure",
    "anomaly_roc_curves",
    "score_histograms_figure",
    "reconstructions_figure",
    "embedding_figure",
]

plt.rcParams.update({"font.size": 10, "axes.titlesize": 10, "figure.dpi": 100, "savefig.bbox": "tight"})


def save(fig, out: Path, name: str) -> list[Path]:
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1])
    plt.close(fig)
    return paths


def roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], title: str = "ROC"):
    """``curves``: label -> (fpr, tpr, auc)."""
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    for label, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, lw=1.6, label=f"{label} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ls=":", c="0.5", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    return fig


def confusion_figure(matrix: np.ndarray, class_names: list[str]):
    matrix = np.asarray(matrix, dtype=float)
    norm = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.2 * len(class_names) + 2, 1.1 * len(class_names) + 1.5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            ax.text(
                j,
                i,
                f"{norm[i, j]:.2f}\n({int(matrix[i, j])})",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    ax.set(
        xticks=range(len(class_names)), yticks=range(len(class_names)), xticklabels=class_names, yticklabels=class_names
    )
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (row-normalised)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return fig


def reliability_figure(probs: np.ndarray, labels: np.ndarray, bins: int = 15):
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    centres, accuracy, counts = [], [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            centres.append(confidence[inside].mean())
            accuracy.append(correct[inside].mean())
            counts.append(inside.sum())
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot([0, 1], [0, 1], ls=":", c="0.5", lw=1, label="perfect calibration")
    ax.plot(centres, accuracy, "o-", ms=4, label="model")
    ax.set(
        xlabel="confidence (top-class probability)",
        ylabel="accuracy",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title="reliability diagram",
    )
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    return fig


def regression_figures(mean: np.ndarray, sigma: np.ndarray, truth: np.ndarray, name: str, unit: str):
    label = f"{name} [{unit}]" if unit else name
    lo, hi = float(min(truth.min(), mean.min())), float(max(truth.max(), mean.max()))
    scatter, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.errorbar(truth, mean, yerr=sigma, fmt="o", ms=2, lw=0.5, alpha=0.5, elinewidth=0.4)
    ax.plot([lo, hi], [lo, hi], ls=":", c="0.3", lw=1)
    ax.set(xlabel=f"true {label}", ylabel=f"predicted {label}", title="predicted vs true (error bars: 1 sigma)")
    residual, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3.4))
    err = mean - truth
    ax1.scatter(truth, err, s=3, alpha=0.5)
    ax1.axhline(0, c="0.3", ls=":")
    ax1.set(xlabel=f"true {label}", ylabel="predicted - true", title="residuals")
    z = err / sigma
    ax2.hist(z, bins=np.linspace(-5, 5, 51), density=True, alpha=0.7, label="(pred - true) / sigma")
    grid = np.linspace(-5, 5, 200)
    ax2.plot(grid, np.exp(-0.5 * grid**2) / np.sqrt(2 * np.pi), c="k", lw=1, label="N(0, 1)")
    ax2.set(xlabel="standardised residual", title="uncertainty calibration")
    ax2.legend(fontsize=8, frameon=False)
    return scatter, residual


def examples_figure(
    images: np.ndarray, true: np.ndarray, probs: np.ndarray, class_names: list[str], per_group: int = 8, seed: int = 0
):
    """Two rows: correctly and wrongly classified examples, titled with true/predicted and the score."""
    rng = np.random.default_rng(seed)
    pred = probs.argmax(1)
    groups = {"correct": np.flatnonzero(pred == true), "wrong": np.flatnonzero(pred != true)}
    fig, axes = plt.subplots(2, per_group, figsize=(1.5 * per_group, 3.6), squeeze=False)
    for r, (name, members) in enumerate(groups.items()):
        chosen = rng.choice(members, size=min(per_group, len(members)), replace=False) if len(members) else []
        for k in range(per_group):
            ax = axes[r][k]
            ax.set_xticks([]), ax.set_yticks([])
            if k >= len(chosen):
                ax.axis("off")
                continue
            i = int(chosen[k])
            image = images[i]
            shown = (
                image[0]
                if image.shape[0] != 3
                else np.moveaxis((image - image.min()) / max(np.ptp(image), 1e-12), 0, -1)
            )
            ax.imshow(shown, origin="lower", cmap="magma" if shown.ndim == 2 else None)
            ax.set_title(
                f"{class_names[true[i]]}->{class_names[pred[i]]}\np={probs[i, pred[i]]:.2f}",
                fontsize=7,
                color="C2" if name == "correct" else "C3",
            )
            if k == 0:
                ax.set_ylabel(name)
    fig.tight_layout()
    return fig


#: Figure kinds a task names in ``Task.figures``: ``draw(pred, truth, images, contract)`` returns
#: ``[(file stem, figure), ...]``.
FIGURES: Registry = Registry("figure")


@FIGURES.register("roc")
def _roc(pred, truth, images, contract):
    names = contract.output.class_names
    return [("roc", roc_figure(roc_curves(pred["probs"], truth["label"], names)))]


@FIGURES.register("confusion")
def _confusion(pred, truth, images, contract):
    names = contract.output.class_names
    matrix = confusion_matrix(truth["label"], pred["probs"].argmax(1), labels=list(range(len(names))))
    return [("confusion", confusion_figure(matrix, names))]


@FIGURES.register("reliability")
def _reliability(pred, truth, images, contract):
    return [("reliability", reliability_figure(pred["probs"], truth["label"]))]


@FIGURES.register("examples")
def _examples(pred, truth, images, contract):
    return [("examples", examples_figure(images, truth["label"], pred["probs"], contract.output.class_names))]


@FIGURES.register("pred_vs_true")
def _pred_vs_true(pred, truth, images, contract):
    out = contract.output
    figures = []
    for t, (name, unit) in enumerate(zip(out.targets, out.target_units)):
        scatter, residual = regression_figures(
            pred["mean"][:, t], pred["sigma"][:, t], truth["target"][:, t], name, unit
        )
        safe = name.replace(".", "_")
        figures += [(f"pred_vs_true_{safe}", scatter), (f"residuals_{safe}", residual)]
    return figures


def anomaly_roc_curves(score: np.ndarray, labels: np.ndarray, class_names: list[str], normal: str) -> dict:
    """ROC curves of normal images against all anomalous ones and against each anomalous class."""
    from sklearn.metrics import roc_auc_score, roc_curve

    is_normal = labels == class_names.index(normal)
    groups = {"all anomalies": ~is_normal}
    groups.update({c: labels == i for i, c in enumerate(class_names) if c != normal and (labels == i).any()})
    curves = {}
    for name, positive in groups.items():
        keep = is_normal | positive
        if is_normal.any() and positive.any():
            fpr, tpr, _ = roc_curve(positive[keep], score[keep])
            curves[name] = (fpr, tpr, roc_auc_score(positive[keep], score[keep]))
    return curves


def score_histograms_figure(score: np.ndarray, labels: np.ndarray, class_names: list[str], score_name: str):
    """Anomaly-score histograms per class on shared bins (0.5-99.5 percentile range)."""
    lo, hi = np.percentile(score, [0.5, 99.5])
    positive = lo > 0
    bins = np.geomspace(lo, hi, 40) if positive else np.linspace(lo, hi, 40)
    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    for c, name in enumerate(class_names):
        values = score[labels == c]
        if len(values):
            ax.hist(
                np.clip(values, lo, hi),
                bins=bins,
                histtype="step",
                lw=1.6,
                density=True,
                label=f"{name} ({len(values)})",
            )
    if positive:
        ax.set_xscale("log")
    ax.set(xlabel=f"anomaly score ({score_name}; higher: more anomalous)", ylabel="density", title="scores by class")
    ax.legend(fontsize=8, frameon=False)
    return fig


def reconstructions_figure(examples: dict, labels: np.ndarray, scores: np.ndarray, class_names: list[str]):
    """Rows of input, reconstruction and residual (first band, after the model's transforms);
    inputs and reconstructions share one colour scale, residuals another, symmetric about 0."""
    rows = examples["index"]
    x, rec, res = examples["input"][:, 0], examples["reconstruction"][:, 0], examples["residual"][:, 0]
    vmin, vmax = float(min(x.min(), rec.min())), float(max(x.max(), rec.max()))
    limit = float(np.abs(res).max()) or 1.0
    fig, axes = plt.subplots(len(rows), 3, figsize=(6.0, 2.0 * len(rows)), squeeze=False)
    for r, i in enumerate(rows):
        shown = [(x[r], "gray", vmin, vmax), (rec[r], "gray", vmin, vmax), (res[r], "RdBu_r", -limit, limit)]
        for col, (image, cmap, lo, hi) in enumerate(shown):
            im = axes[r, col].imshow(image, cmap=cmap, vmin=lo, vmax=hi, origin="lower")
            axes[r, col].set_xticks([])
            axes[r, col].set_yticks([])
        axes[r, 0].set_ylabel(f"{class_names[labels[i]]}\nscore {scores[i]:.3g}", fontsize=8)
    for col, title in enumerate(("input", "reconstruction", "residual")):
        axes[0, col].set_title(title)
    fig.colorbar(im, ax=axes[:, 2], fraction=0.08, label="residual")
    return fig


@FIGURES.register("anomaly_roc")
def _anomaly_roc(pred, truth, images, contract):
    normal = contract.training.get("normal_class", "no_sub")
    curves = anomaly_roc_curves(pred["score"], truth["label"], contract.output.class_names, normal)
    return [("roc", roc_figure(curves, title=f"ROC: {normal} against anomalies"))] if curves else []


@FIGURES.register("score_histograms")
def _score_histograms(pred, truth, images, contract):
    name = contract.training.get("anomaly_score", "reconstruction")
    return [
        ("score_histograms", score_histograms_figure(pred["score"], truth["label"], contract.output.class_names, name))
    ]


@FIGURES.register("reconstructions")
def _reconstructions(pred, truth, images, contract):
    if "examples" not in pred:
        return []
    figure = reconstructions_figure(pred["examples"], truth["label"], pred["score"], contract.output.class_names)
    return [("reconstructions", figure)]


def embedding_figure(
    xy: np.ndarray, labels: np.ndarray, class_names: list[str], values: np.ndarray | None = None, value_name: str = ""
):
    """The 2-D feature map coloured by class and, given ``values``, by a physical parameter
    (images without a value, such as that of a class without substructure, in grey)."""
    panels = 2 if values is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 4.2), squeeze=False)
    ax = axes[0, 0]
    for c, name in enumerate(class_names):
        rows = labels == c
        if rows.any():
            ax.scatter(xy[rows, 0], xy[rows, 1], s=4, alpha=0.7, label=f"{name} ({int(rows.sum())})")
    ax.set(title="features (t-SNE), by class", xticks=[], yticks=[])
    ax.legend(fontsize=8, frameon=False, markerscale=3)
    if values is not None:
        ax = axes[0, 1]
        values = np.asarray(values, dtype=np.float64)
        known = np.isfinite(values)
        ax.scatter(xy[~known, 0], xy[~known, 1], s=4, c="0.8", label="no value")
        points = ax.scatter(xy[known, 0], xy[known, 1], s=4, c=values[known], cmap="viridis")
        fig.colorbar(points, ax=ax, label=value_name)
        ax.set(title=f"by {value_name}", xticks=[], yticks=[])
    return fig


def draw(kinds: tuple[str, ...], pred, truth, images, contract, out: Path) -> list[Path]:
    """Draw and save every figure kind in ``kinds``; returns the files written."""
    paths: list[Path] = []
    for kind in kinds:
        for stem, fig in FIGURES.create(kind, pred, truth, images, contract):
            paths += save(fig, out, stem)
    return paths
