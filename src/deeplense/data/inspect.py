"""Look at a data set before training on it: layout, classes, shapes, pixel statistics, noise,
duplicates and bad files; optionally a Markdown or HTML report with sample grids and histograms."""

from __future__ import annotations

import hashlib
import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from deeplense.data.base import ImageSource

__all__ = ["inspect_source", "noise_sigma", "write_report"]


def noise_sigma(image: np.ndarray) -> float:
    """Robust per-pixel noise estimate (same units as the pixels): the median absolute deviation of
    horizontal second differences ``x[i-1] - 2 x[i] + x[i+1]`` (variance ``6 sigma^2`` for white
    noise), scaled to a Gaussian sigma. Second differences cancel gradients of smooth structure
    (arcs, lens light), so white noise dominates them."""
    diff = np.diff(image.astype(np.float64), n=2, axis=-1).ravel()
    return float(1.4826 * np.median(np.abs(diff - np.median(diff))) / np.sqrt(6))


def _stats(values: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "p01": float(np.percentile(values, 1)),
        "median": float(np.median(values)),
        "p99": float(np.percentile(values, 99)),
        "max": float(values.max()),
    }


def inspect_source(
    source: ImageSource, *, max_per_class: int = 500, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Summary of a reader. Every image is read once (hashes for duplicates); pixel statistics and
    noise use up to ``max_per_class`` images per class (evenly spaced)."""
    meta = source.metadata
    labels = source.labels
    n = len(source)
    digests: dict[str, list[int]] = {}
    sampled = {
        c: set(np.flatnonzero(labels == c)[:: max(1, int(np.ceil((labels == c).sum() / max_per_class)))].tolist())
        for c in range(len(source.class_names))
    }
    pixels: dict[int, list[np.ndarray]] = {c: [] for c in sampled}
    noise: dict[int, list[float]] = {c: [] for c in sampled}
    examples: dict[int, list[np.ndarray]] = {c: [] for c in sampled}
    chunk = 256
    for lo in range(0, n, chunk):
        idx = np.arange(lo, min(lo + chunk, n))
        batch = source.images(idx)
        for i, image in zip(idx, batch):
            digests.setdefault(
                hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).hexdigest(), []
            ).append(int(i))
            c = int(labels[i])
            if i in sampled[c]:
                pixels[c].append(image.ravel())
                noise[c].append(noise_sigma(image))
                if len(examples[c]) < 16:
                    examples[c].append(image)
        if progress:
            progress(int(idx[-1]) + 1, n)
    split_counts = meta.groupby(["class_name", "split"]).size()
    classes = []
    for c, name in enumerate(source.class_names):
        count = int((labels == c).sum())
        entry: dict[str, Any] = {
            "name": name,
            "original": source.original_class_names[c],
            "count": count,
            "splits": {s or "(none)": int(v) for (cls, s), v in split_counts.items() if cls == name},
        }
        if pixels[c]:
            entry["pixels"] = _stats(np.concatenate(pixels[c]))
            entry["noise_sigma_median"] = float(np.median(noise[c]))
            entry["images_in_statistics"] = len(pixels[c])
        classes.append(entry)
    duplicates = [
        [meta["file"].iloc[i] if "file" in meta else int(meta["index"].iloc[i]) for i in group]
        for group in digests.values()
        if len(group) > 1
    ]
    targets = {
        col: {
            "unit": source.units.get(col, ""),
            "count": int(meta[col].notna().sum()),
            **_stats(meta[col].dropna().to_numpy()),
        }
        for col in source.parameter_columns
        if meta[col].notna().any() and meta[col].nunique() > 1
    }
    return {
        "path": str(source.root),
        "layout": source.layout,
        "n_images": n,
        "image_shape": list(source.image_shape),
        "dtype": "float32 (as read)",
        "classes": classes,
        "columns": targets,
        "duplicates": duplicates,
        "bad_files": [{"path": b.path, "reason": b.reason} for b in source.bad_files],
        "_examples": {source.class_names[c]: v for c, v in examples.items()},
        "_pixels": {source.class_names[c]: np.concatenate(v) if v else np.zeros(0) for c, v in pixels.items()},
    }


def _sample_grid(examples: dict[str, list[np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 8
    rows = [
        (name, ims[i : i + cols]) for name, ims in examples.items() for i in range(0, min(len(ims), 2 * cols), cols)
    ]
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.4 * cols, 1.5 * len(rows)), squeeze=False)
    for r, (name, ims) in enumerate(rows):
        for k in range(cols):
            ax = axes[r][k]
            ax.set_xticks([]), ax.set_yticks([])
            if k < len(ims):
                image = ims[k]
                shown = image[0] if image.shape[0] != 3 else np.moveaxis(image, 0, -1)
                if shown.ndim == 3:  # colour: scale to [0, 1] per image
                    shown = (shown - shown.min()) / max(np.ptp(shown), 1e-12)
                ax.imshow(shown, origin="lower", cmap="magma" if shown.ndim == 2 else None)
            else:
                ax.axis("off")
            if k == 0:
                ax.set_ylabel(name, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _histograms(pixels: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    everything = np.concatenate([v for v in pixels.values() if len(v)])
    lo, hi = np.percentile(everything, [0.1, 99.9])
    bins = np.linspace(lo, hi if hi > lo else lo + 1, 80)
    for name, values in pixels.items():
        if len(values):
            ax.hist(values, bins=bins.tolist(), histtype="step", density=True, label=name, linewidth=1.4)
    ax.set_yscale("log")
    ax.set_xlabel("pixel value")
    ax.set_ylabel("density")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"# Data set report: `{summary['path']}`",
        "",
        f"- layout: **{summary['layout']}**",
        f"- images: {summary['n_images']}, shape {tuple(summary['image_shape'])}",
        f"- bad files: {len(summary['bad_files'])}; duplicate groups: {len(summary['duplicates'])}",
        "",
        "## Classes",
        "",
        "| class | original name | images | splits | pixel mean | pixel std | min | median | max | noise sigma |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in summary["classes"]:
        p = c.get("pixels", {})
        splits = ", ".join(f"{k}: {v}" for k, v in c["splits"].items())
        lines.append(
            f"| {c['name']} | {c['original']} | {c['count']} | {splits} | {p.get('mean', float('nan')):.4g} | "
            f"{p.get('std', float('nan')):.4g} | {p.get('min', float('nan')):.4g} | {p.get('median', float('nan')):.4g} | "
            f"{p.get('max', float('nan')):.4g} | {c.get('noise_sigma_median', float('nan')):.4g} |"
        )
    if summary["columns"]:
        lines += [
            "",
            "## Parameters and targets",
            "",
            "| column | unit | images | mean | std | min | max |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, s in summary["columns"].items():
            lines.append(
                f"| {name} | {s['unit']} | {s['count']} | {s['mean']:.4g} | {s['std']:.4g} | {s['min']:.4g} | {s['max']:.4g} |"
            )
    lines += [
        "",
        "## Samples",
        "",
        "![samples](samples.png)",
        "",
        "## Pixel histograms",
        "",
        "![histograms](histograms.png)",
        "",
    ]
    lines += ["## Bad files", ""]
    lines += [f"- `{b['path']}`: {b['reason']}" for b in summary["bad_files"]] or ["none"]
    lines += ["", "## Duplicates", ""]
    lines += [f"- {', '.join(f'`{x}`' for x in group)}" for group in summary["duplicates"]] or ["none"]
    return "\n".join(lines) + "\n"


def _html(markdown: str, title: str) -> str:
    """A small self-contained HTML rendering of the Markdown report (tables, lists, images)."""
    out, in_table = [], False
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-"):
                continue
            tag = "th" if not in_table else "td"
            out.append(
                ("<table>" if not in_table else "") + "<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>"
            )
            in_table = True
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if line.startswith("# "):
            out.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            out.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("!["):
            src = line[line.index("(") + 1 : -1]
            out.append(f'<img src="{html.escape(src)}" style="max-width:100%">')
        elif line.startswith("- "):
            out.append(f"<li>{html.escape(line[2:]).replace('**', '')}</li>")
        elif line:
            out.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        out.append("</table>")
    style = "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head><body>{''.join(out)}</body></html>"


def write_report(summary: dict[str, Any], out: str | Path, fmt: str = "md") -> Path:
    """Write ``report.md`` or ``report.html``, ``samples.png``, ``histograms.png`` and ``summary.json``."""
    if fmt not in ("md", "html"):
        raise ValueError(f"report format must be 'md' or 'html', got {fmt!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _sample_grid(summary["_examples"], out / "samples.png")
    _histograms(summary["_pixels"], out / "histograms.png")
    public = {k: v for k, v in summary.items() if not k.startswith("_")}
    (out / "summary.json").write_text(json.dumps(public, indent=2))
    markdown = _markdown(public)
    path = out / f"report.{fmt}"
    path.write_text(markdown if fmt == "md" else _html(markdown, f"deeplense data report: {public['path']}"))
    return path
