"""A self-contained HTML report (figures embedded as base64 PNG): metrics, config, provenance."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import yaml

from deeplense.core.contract import ModelContract

__all__ = ["write_html_report"]

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 10px;text-align:right}"
    "th{background:#f3f3f3}pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:12px}"
    "img{max-width:100%;margin:0.5em 0}.headline{font-size:1.3em}"
)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, float) for v in value):
        return f"[{value[0]:.4f}, {value[1]:.4f}]"
    return html.escape(str(value))


def _table(rows: list[tuple[str, Any]], header: tuple[str, str] = ("metric", "value")) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in rows)
    return f"<table><tr><th>{header[0]}</th><th>{header[1]}</th></tr>{body}</table>"


def _metrics_section(metrics: dict[str, Any], headline: dict[str, Any]) -> str:
    """The task's headline numbers with their bootstrap intervals, then one table per entry that
    is a mapping of its own (per regression target, with its errors by true value)."""
    rows = [(k, v) for k, v in headline.items()]
    rows += [(k, v) for k, v in metrics.items() if k.endswith("_ci") and not isinstance(v, dict)]
    rows += [
        (f"{k} {c}", v)
        for k, entry in metrics.items()
        if k.endswith("_ci") and isinstance(entry, dict)
        for c, v in entry.items()
    ]
    n = metrics.get("n")
    parts = [f"<p class='headline'>{html.escape(_headline_text(headline))} on {n} images</p>", _table(rows)]
    for name, entry in metrics.items():
        if isinstance(entry, dict) and "by_truth" in entry:
            parts.append(f"<h3>{html.escape(name)} [{html.escape(str(entry.get('unit', '')))}]</h3>")
            parts.append(_table([(k, v) for k, v in entry.items() if k not in ("unit", "by_truth")]))
            by_truth = [
                (f"[{r['lo']:.4g}, {r['hi']:.4g}) n={r['n']}", f"{_fmt(r['mae'])} / {_fmt(r['bias'])}")
                for r in entry["by_truth"]
            ]
            parts.append("<h4>MAE / bias by true value</h4>" + _table(by_truth, ("true value", "MAE / bias")))
    return "".join(parts)


def _headline_text(headline: dict[str, Any]) -> str:
    if not headline:
        return "no metrics"
    key, value = next(iter(headline.items()))
    return f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}"


def write_html_report(
    path: Path,
    metrics: dict[str, Any],
    contract: ModelContract,
    headline: dict[str, Any],
    config: dict[str, Any],
    summary: dict[str, Any],
    figures: list[Path],
) -> Path:
    """A self-contained HTML page: the task's ``headline`` and ``metrics``, the figures, the data,
    the model contract, the training summary and the config."""
    task = contract.task
    name = html.escape(contract.model.name)
    section = _metrics_section(metrics, headline)
    images = "".join(
        f"<h3>{html.escape(f.stem.replace('_', ' '))}</h3><img alt='{html.escape(f.stem)}' src='data:image/png;base64,{base64.b64encode(f.read_bytes()).decode()}'>"
        for f in figures
    )
    training = {
        k: summary.get(k)
        for k in (
            "epochs_completed",
            "fit_seconds_total",
            "train_images_per_second",
            "sizes",
            "hardware",
            "best_val",
            "monitor",
        )
        if k in summary
    }
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>deeplense evaluation: {name}</title>
<style>{_STYLE}</style></head><body>
<h1>Evaluation of {name} ({html.escape(task)})</h1>
<p>checkpoint <code>{html.escape(str(metrics.get("checkpoint", "")))}</code>; deeplense {html.escape(contract.provenance.deeplense_version)}</p>
<h2>Metrics</h2>{section}
<h2>Figures</h2>{images}
<h2>Evaluated data</h2><pre>{html.escape(json.dumps(metrics.get("data", {}), indent=2))}</pre>
<h2>Training data and model contract</h2><pre>{html.escape(json.dumps(contract.to_dict(), indent=2))}</pre>
<h2>Training</h2><pre>{html.escape(json.dumps(training, indent=2))}</pre>
<h2>Config</h2><pre>{html.escape(yaml.safe_dump(config, sort_keys=False))}</pre>
</body></html>"""
    path.write_text(doc)
    return path
