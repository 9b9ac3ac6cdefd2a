"""``deeplense evaluate``, ``compare``, ``profile`` and ``demo``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from deeplense.cli.common import fail, headline_text


def evaluate(
    run: Annotated[Path, typer.Argument(help="Run directory or checkpoint.")],
    data: Annotated[
        Path | None, typer.Option(help="Data set in any layout (default: the run's own test split).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output directory (default: RUN/evaluation).")] = None,
    split: Annotated[
        str | None, typer.Option(help="Stored split to evaluate (default: test where there is one).")
    ] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the AUC intervals.")] = 1000,
    tta: Annotated[
        str | None,
        typer.Option(help="Test-time augmentation: average predictions over the d2 or d4 transforms of each image."),
    ] = None,
    pixel_scale: Annotated[
        float | None, typer.Option(help="Pixel scale (arcsec) of --data that do not record theirs.")
    ] = None,
    allow_out_of_domain: Annotated[
        bool, typer.Option(help="Evaluate even data mostly unlike the model's training images.")
    ] = False,
    embed: Annotated[
        bool, typer.Option(help="Draw a 2-D (t-SNE) map of the encoder's features (always, for pretraining runs).")
    ] = False,
    color_by: Annotated[
        str | None,
        typer.Option(help="Also colour the feature map by this metadata column, e.g. substructure.log10_m_a."),
    ] = None,
) -> None:
    """Metrics (with bootstrap intervals), figures (PNG+PDF) and an HTML report. Other data are
    checked against the model's image contract and resampled or cut to it (said once)."""
    from deeplense.core.config import ConfigError
    from deeplense.data.base import DataFormatError
    from deeplense.evaluate.run import evaluate_run
    from deeplense.train.loggers import quiet_lightning

    quiet_lightning()
    try:
        result = evaluate_run(
            run,
            data=data,
            out=out,
            split=split,
            n_boot=bootstrap,
            tta=tta,
            pixel_scale=pixel_scale,
            allow_out_of_domain=allow_out_of_domain,
            embed=embed,
            color_by=color_by,
        )
    except (ConfigError, DataFormatError, FileNotFoundError, ValueError, KeyError) as exc:
        fail(str(exc.args[0]) if isinstance(exc, KeyError) else str(exc))
    for note in result["metrics"]["data"].get("conformed", []):
        typer.echo(f"note: {note}")
    typer.echo(headline_text(result["task"], result["metrics"]))
    typer.echo(f"report: {result['report']}")


def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run directories.")],
    out: Annotated[Path, typer.Option(help="Output directory.")],
    data: Annotated[
        Path | None, typer.Option(help="Evaluate every run on this data set (default: their own test predictions).")
    ] = None,
) -> None:
    """Leaderboard (Markdown, CSV) across runs and overlaid ROC curves."""
    from deeplense.evaluate.compare import compare_runs
    from deeplense.train.loggers import quiet_lightning

    quiet_lightning()
    try:
        board = compare_runs(runs, out, data)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    typer.echo((out / "leaderboard.md").read_text())
    typer.echo(f"{len(board)} runs -> {out / 'leaderboard.csv'}")


def profile(
    model: Annotated[str, typer.Argument(help="Model name (ours or timm).")],
    img_size: Annotated[int, typer.Option(help="Image size in pixels.")] = 64,
    bands: Annotated[int, typer.Option(help="Input bands.")] = 1,
    batch: Annotated[int, typer.Option(help="Batch size.")] = 64,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    kwargs: Annotated[str, typer.Option(help="Model keyword arguments as JSON, e.g. '{\"patch_size\": 8}'.")] = "{}",
) -> None:
    """Parameters, training and inference images/s and peak memory on this device."""
    from deeplense.evaluate.profile import profile_model

    try:
        result = profile_model(model, img_size, bands, batch, device=device, kwargs=json.loads(kwargs))
    except (KeyError, ValueError, RuntimeError) as exc:
        fail(str(exc.args[0]) if exc.args else str(exc))
    typer.echo(
        f"{result['model']} on {result['device']}: {result['parameters']:,} parameters; "
        f"training {result['train_images_per_s']:,.0f} images/s, inference {result['inference_images_per_s']:,.0f} images/s "
        f"({bands}x{img_size}x{img_size}, batch {batch}); peak memory {result['peak_memory_mb']:,.0f} MB"
    )


def demo(
    out: Annotated[Path, typer.Option(help="Where the data, run and report go.")] = Path("demo_output"),
    n_per_class: Annotated[int, typer.Option(help="Images per class to simulate.")] = 1500,
    epochs: Annotated[int | None, typer.Option(help="Training epochs (default 12).")] = None,
) -> None:
    """Simulate a small Model I data set, train the CPU model, evaluate, write the report."""
    from deeplense.cli.common import progress_bar
    from deeplense.demo import run_demo
    from deeplense.train.loggers import quiet_lightning

    quiet_lightning()
    with progress_bar("simulate") as update:
        headline = run_demo(out, n_per_class, epochs, say=typer.echo, progress=update)
    ci = headline["test_auc_macro_95ci"]
    typer.echo("")
    typer.echo(
        f"test macro ROC AUC {headline['test_auc_macro']:.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f}) on {headline['n_test']} held-out images"
    )
    typer.echo(
        "per class: "
        + ", ".join(f"{c} {v:.3f}" for c, v in headline["test_auc_per_class"].items())
        + f"; accuracy {headline['test_accuracy']:.3f}"
    )
    typer.echo(f"training took {headline['train_minutes']:.1f} min; report: {headline['report']}")
