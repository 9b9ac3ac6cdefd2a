"""``deeplense train``, ``deeplense models list``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from deeplense.cli.common import fail, headline_text

models_app = typer.Typer(help="Networks: ours and every timm backbone.", no_args_is_help=True)


def quiet_lightning() -> None:
    from deeplense.train.loggers import quiet_lightning as quiet

    quiet()


Overrides = Annotated[list[str] | None, typer.Option("--set", help="Override a config key: train.lr=3e-4.")]


def train(
    config: Annotated[Path | None, typer.Argument(help="Training config YAML (see configs/).")] = None,
    set_: Overrides = None,
    resume: Annotated[Path | None, typer.Option(help="Resume an interrupted run from its directory.")] = None,
    on_bad_file: Annotated[
        str | None, typer.Option(help="error (stop, listing the files) or skip (leave them out).")
    ] = None,
) -> None:
    """Train a model: classification or regression, on stored or simulated data (Lightning)."""
    from deeplense.core.config import ConfigError
    from deeplense.data.base import DataFormatError
    from deeplense.train.config import resolve_config
    from deeplense.train.run import train as run_training

    if (config is None) == (resume is None):
        fail("give a CONFIG file, or --resume RUN_DIR")
    if resume is not None and set_:
        fail("--set cannot change a run being resumed; start a new run instead")
    quiet_lightning()
    if on_bad_file is not None:
        set_ = [*(set_ or []), f"data.on_bad_file={on_bad_file}"]
    try:
        resolved = resolve_config(config, set_ or []) if config is not None else None
        summary = run_training(resolved, resume=resume)
    except (ConfigError, DataFormatError, FileNotFoundError, KeyError) as exc:
        fail(str(exc.args[0]) if isinstance(exc, KeyError) else str(exc))
    if not summary:
        return
    typer.echo(f"run: {summary['run_dir']}")
    skipped = (summary.get("data") or {}).get("bad_files_skipped")
    if skipped:
        typer.echo(f"skipped {skipped} bad file(s) (listed by `deeplense data inspect`)")
    typer.echo(
        f"epochs: {summary['epochs_completed']}, fit time {summary['fit_seconds_total']:.0f} s, best {summary['monitor']} = {summary['best_val']}"
    )
    test = summary.get("test")
    if test:
        typer.echo(f"test ({test['n']} images): {headline_text(summary['task'], test)}")


@models_app.command("list")
def list_models(pattern: Annotated[str | None, typer.Argument(help="Wildcard, e.g. 'vit_*'.")] = None) -> None:
    """List our networks and the timm backbones."""
    from deeplense.models import MODELS
    from deeplense.models.registry import list_models as names

    found = names(pattern)
    typer.echo("deeplense networks:")
    for name in found["deeplense"]:
        doc = (MODELS.get(name).__doc__ or "").strip().splitlines()[0]
        typer.echo(f"  {name:14s} {doc}")
    typer.echo(f"timm backbones ({len(found['timm'])}; any of them works as model.name):")
    for i in range(0, min(len(found["timm"]), 60), 4):
        typer.echo("  " + "  ".join(f"{n:28s}" for n in found["timm"][i : i + 4]))
    if len(found["timm"]) > 60:
        typer.echo(f"  ... and {len(found['timm']) - 60} more (filter with a pattern, e.g. 'efficientnet*')")


def tune(
    config: Annotated[Path, typer.Argument(help="Training config YAML with a tune.space section.")],
    trials: Annotated[int | None, typer.Option(help="Number of trials (default: tune.trials).")] = None,
    out: Annotated[Path, typer.Option(help="Study directory (SQLite database, trials, best config).")] = Path(
        "runs/tune"
    ),
    set_: Overrides = None,
) -> None:
    """Hyper-parameter search with Optuna (SQLite storage, pruning of bad trials)."""
    from deeplense.core.config import ConfigError
    from deeplense.data.base import DataFormatError
    from deeplense.train.config import resolve_config
    from deeplense.train.tune import tune as run_tune

    quiet_lightning()
    try:
        result = run_tune(resolve_config(config, set_ or []), out, trials)
    except (ConfigError, DataFormatError, FileNotFoundError) as exc:
        fail(str(exc))
    typer.echo(
        f"best trial {result['best_trial']}: {result['metric']} = {result['best_value']:.4f} with {json.dumps(result['params'])}"
    )
    typer.echo(f"{result['trials']} trials ({result['pruned']} pruned); best config: {out / 'best_config.yaml'}")


def ensemble(
    runs: Annotated[list[Path], typer.Argument(help="Run directories or checkpoints.")],
    out: Annotated[Path, typer.Option(help="Output directory.")],
    method: Annotated[str, typer.Option(help="mean (average) or stack (fitted on the validation split).")] = "mean",
    data: Annotated[Path | None, typer.Option(help="Evaluate on this data set instead of the first run's.")] = None,
) -> None:
    """Combine checkpoints by averaging or a fitted stacker; evaluates members and ensemble."""
    from deeplense.core.config import ConfigError
    from deeplense.data.base import DataFormatError
    from deeplense.evaluate.ensemble import ensemble as run_ensemble

    try:
        report = run_ensemble(runs, out, method, data)
    except (ConfigError, DataFormatError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    task = report["task"]
    for i, member in enumerate(report["member_metrics"]):
        typer.echo(f"member {i}: {headline_text(task, member)}")
    typer.echo(f"ensemble ({method}): {headline_text(task, report['metrics'])}  -> {out / 'ensemble_metrics.json'}")
