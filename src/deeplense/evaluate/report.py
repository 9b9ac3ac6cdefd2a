"""A self-contained HTML report (figures embedded as base64 PNG): metrics, config, provenance."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import yaml

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


def _classification_section(m: dict[str, Any]) -> str:
    ci = m.get("auc_per_class_ci", {})
    parts = []
    headline = m.get("auc_macro", m.get("auc"))
    if headline is not None:
        interval = m.get("auc_macro_ci", m.get("auc_ci"))
        extra = f" (95 % bootstrap interval {interval[0]:.4f}-{interval[1]:.4f})" if interval else ""
        parts.append(
            f"<p class='headline'>{'macro ' if 'auc_macro' in m else ''}ROC AUC <b>{headline:.4f}</b>{extra}, accuracy {m['accuracy']:.4f} on {m['n']} images</p>"
        )
    table_rows = [(f"AUC {c}", v) for c, v in m["auc_per_class"].items()]
    table_rows += [(f"AUC {c} 95 % CI", v) for c, v in ci.items()]
    for key in (
        "auc_macro",
        "auc_macro_ci",
        "auc_micro",
        "auc_micro_ci",
        "accuracy",
        "ece",
        "average_precision",
        "tpr_0",
        "tpr_10",
    ):
        if key in m:
            table_rows.append((key, m[key]))
    parts.append(_table(table_rows))
    return "".join(parts)


def _regression_section(m: dict[str, Any]) -> str:
    parts = []
    for name, entry in m.items():
        if isinstance(entry, dict) and "mae" in entry:
            parts.append(f"<h3>{html.escape(name)} [{html.escape(entry['unit'])}]</h3>")
            parts.append(_table([(k, v) for k, v in entry.items() if k not in ("unit", "by_truth")]))
            rows = [
                (f"[{r['lo']:.4g}, {r['hi']:.4g}) n={r['n']}", f"{_fmt(r['mae'])} / {_fmt(r['bias'])}")
                for r in entry["by_truth"]
            ]
            parts.append("<h4>MAE / bias by true value</h4>" + _table(rows, ("true value", "MAE / bias")))
    return "".join(parts)


def write_html_report(
    path: Path,
    metrics: dict[str, Any],
    contract: dict[str, Any],
    config: dict[str, Any],
    summary: dict[str, Any],
    figures: list[Path],
) -> Path:
    task = contract["task"]
    section = _classification_section(metrics) if task == "classification" else _regression_section(metrics)
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
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>deeplense evaluation: {html.escape(str(contract["model"]["name"]))}</title>
<style>{_STYLE}</style></head><body>
<h1>Evaluation of {html.escape(str(contract["model"]["name"]))} ({html.escape(task)})</h1>
<p>checkpoint <code>{html.escape(str(metrics.get("checkpoint", "")))}</code>; deeplense {html.escape(str(contract.get("deeplense_version")))}</p>
<h2>Metrics</h2>{section}
<h2>Figures</h2>{images}
<h2>Evaluated data</h2><pre>{html.escape(json.dumps(metrics.get("data", {}), indent=2))}</pre>
<h2>Training data and model contract</h2><pre>{html.escape(json.dumps({k: v for k, v in contract.items() if k != "transforms"} | {"transforms": contract.get("transforms")}, indent=2))}</pre>
<h2>Training</h2><pre>{html.escape(json.dumps(training, indent=2))}</pre>
<h2>Config</h2><pre>{html.escape(yaml.safe_dump(config, sort_keys=False))}</pre>
</body></html>"""
    path.write_text(doc)
    return path
