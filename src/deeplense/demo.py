"""``deeplense demo``: simulate a small DeepLense-style data set, train the default CPU model,
evaluate it on held-out images and write the HTML report. A second run reuses what exists."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deeplense.core.config import dump_yaml, load_yaml
from deeplense.core.run_dir import RunDir

__all__ = ["run_demo", "DEMO_CONFIG"]

# Model I physics on a 64x64 grid with the same 7.5" field of view.
DEMO_SIM = ["instrument.size=64", "instrument.pixel_scale=0.1171875"]
DEMO_CONFIG: dict[str, Any] = {
    "task": "classification",
    "data": {"transforms": ["minmax", "dihedral"], "cache": "memory"},
    "model": {"name": "small_cnn", "kwargs": {"widths": [16, 32, 64, 128]}},
    "train": {"epochs": 12, "batch_size": 64, "lr": 0.003, "scheduler": "onecycle", "ema_decay": 0.99},
    "logging": {"progress_bar": True},
}


def run_demo(
    out: str | Path = "demo_output",
    n_per_class: int = 1500,
    epochs: int | None = None,
    say: Callable[[str], None] = print,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Simulate -> train -> evaluate; returns the headline numbers and paths. ``progress(done,
    total)`` follows the simulation."""
    from deeplense.evaluate.run import evaluate_run
    from deeplense.sim.presets import load_preset
    from deeplense.sim.writer import DatasetPlan, write_dataset
    from deeplense.train.config import resolve_config
    from deeplense.train.run import train

    out = Path(out)
    data, run_dir, report_dir = out / "data" / "model_i_64", out / "runs" / "demo", out / "report"
    from deeplense.core.config import apply_overrides

    sim_config = apply_overrides(load_preset("model_i"), DEMO_SIM)
    plan = DatasetPlan(
        n_per_class=n_per_class, n_classes=3, seed=0, splits={"train": 0.8, "val": 0.1, "test": 0.1}, shard_size=500
    )
    say(f"[1/3] simulate {3 * n_per_class} Model I images (64x64) -> {data}")
    manifest = write_dataset(
        data,
        sim_config,
        plan,
        workers=2,
        progress=(lambda done, total, _s: progress(done, total)) if progress else None,
    )
    say(
        f"      {manifest['written_this_run']} rendered now, {manifest['n_images'] - manifest['written_this_run']} reused"
    )
    config = resolve_config(
        {
            **DEMO_CONFIG,
            "data": {**DEMO_CONFIG["data"], "path": str(data)},
            "run": {"dir": str(run_dir.parent), "name": run_dir.name},
        }
    )
    if epochs is not None:
        config["train"]["epochs"] = int(epochs)
    run = RunDir(run_dir)
    same_config = run.config.exists() and load_yaml(run.config) == json.loads(json.dumps(config))
    if run.summary.exists() and same_config:
        say(f"[2/3] reuse the trained model in {run_dir}")
        summary = run.read_summary()
    else:
        if run.last.exists() and same_config:
            say(f"[2/3] resume the interrupted training in {run_dir}")
            summary = train(None, resume=run_dir)
        else:
            if run_dir.exists():
                import shutil

                shutil.rmtree(run_dir)
            say(f"[2/3] train {config['model']['name']} for {config['train']['epochs']} epochs -> {run_dir}")
            summary = train(config)
    say("[3/3] evaluate on the held-out test split")
    result = evaluate_run(run_dir, out=report_dir, n_boot=1000)
    metrics = result["metrics"]
    headline = {
        "test_auc_macro": metrics["auc_macro"],
        "test_auc_macro_95ci": metrics.get("auc_macro_ci"),
        "test_auc_per_class": metrics["auc_per_class"],
        "test_accuracy": metrics["accuracy"],
        "n_test": metrics["n"],
        "train_minutes": round(summary.get("fit_seconds_total", summary.get("fit_seconds_this_session", 0)) / 60, 2),
        "report": result["report"],
    }
    (out / "headline.json").write_text(json.dumps(headline, indent=2))
    dump_yaml(config, out / "demo_config.yaml")
    return headline
