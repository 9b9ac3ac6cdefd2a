"""Publication figures (matplotlib, Agg): ROC curves, confusion matrix, reliability diagram,
predicted-vs-true and residuals, and a grid of correctly and wrongly classified examples.
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


def draw(kinds: tuple[str, ...], pred, truth, images, contract, out: Path) -> list[Path]:
    """Draw and save every figure kind in ``kinds``; returns the files written."""
    paths: list[Path] = []
    for kind in kinds:
        for stem, fig in FIGURES.create(kind, pred, truth, images, contract):
            paths += save(fig, out, stem)
    return paths
