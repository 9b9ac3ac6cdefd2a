"""``deeplense predict``, ``export``, ``models pretrained`` and ``configs``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deeplense.cli.common import console, progress_bar

configs_app = typer.Typer(help="The training configs shipped with deeplense.", no_args_is_help=True)


def predict(
    model: Annotated[str, typer.Argument(help="Run directory, checkpoint, ONNX export, or a pretrained model's name.")],
    inputs: Annotated[list[str], typer.Argument(help="FITS/.npy/PNG files, folders (incl. data sets) or globs.")],
    out: Annotated[Path, typer.Option(help="Catalogue to write: .csv, .fits or .parquet.")],
    hdu: Annotated[
        str | None, typer.Option(help="FITS extension to read: a number, an EXTNAME, or 'all' (each as cutouts).")
    ] = None,
    pixel_scale: Annotated[
        float | None, typer.Option(help="Pixel scale of the inputs (arcsec) where their headers have none.")
    ] = None,
    pixel_units: Annotated[str | None, typer.Option(help="Pixel units of the inputs where BUNIT is missing.")] = None,
    nan: Annotated[
        str, typer.Option(help="NaN/Inf pixels: refuse, fill (band median) or mask (skip and flag the row).")
    ] = "refuse",
    tta: Annotated[str | None, typer.Option(help="Average over the d2 or d4 transforms of each image.")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per batch (memory stays at one batch).")] = 256,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing catalogue.")] = False,
) -> None:
    """Predict every image and write a catalogue: one row per image with its file, HDU, index and
    RA/Dec, and the model's scores. An interrupted run resumes when started again."""
    from deeplense.core.config import ConfigError
    from deeplense.infer import load_predictor
    from deeplense.infer.conform import NAN_POLICIES
    from deeplense.infer.survey import predict_catalogue

    if nan not in NAN_POLICIES:
        raise ConfigError("--nan", f"expected one of {NAN_POLICIES}, got {nan!r}")
    if batch_size < 1:
        raise ConfigError("--batch-size", f"expected a positive number, got {batch_size}")
    if pixel_scale is not None and not 0 < pixel_scale < 100:
        raise ConfigError("--pixel-scale", f"expected arcsec per pixel in (0, 100), got {pixel_scale}")
    predictor = load_predictor(model)
    console.print(
        f"model {predictor.name} ({predictor.contract.task}, {predictor.backend}, sha256 {predictor.sha256[:12]})"
    )
    with progress_bar("predict (files)") as update:
        summary = predict_catalogue(
            predictor,
            inputs,
            out,
            batch_size=batch_size,
            hdu=hdu,
            pixel_scale=pixel_scale,
            pixel_units=pixel_units,
            nan=nan,
            tta=tta,
            overwrite=overwrite,
            progress=update,
            note=lambda text: console.print(f"note: {text}"),
        )
    done = f"; {summary.skipped} found done by an earlier run" if summary.skipped else ""
    flagged = f"; {summary.flagged} flagged (NaN pixels, not predicted)" if summary.flagged else ""
    if summary.outside:
        flagged += (
            f"; {summary.outside} flagged outside_training_domain (unlike the training images after the "
            "model's transforms: treat their scores with caution)"
        )
    typer.echo(
        f"wrote {summary.out}: {summary.written + summary.skipped} rows from {summary.n_files} file(s){done}{flagged}"
    )


def export(
    run: Annotated[str, typer.Argument(help="Run directory, checkpoint, or a shipped pretrained model's name.")],
    format_: Annotated[str, typer.Option("--format", help="onnx or torchscript.")] = "onnx",
    out: Annotated[
        Path | None, typer.Option(help="Folder to write (default: RUN/export_FORMAT, or NAME_FORMAT here).")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help="Images for the parity check (default: the run's test split, or the model card's check set)."
        ),
    ] = None,
    n_parity: Annotated[int, typer.Option(help="Images in the parity check.")] = 256,
) -> None:
    """Export a trained model (ONNX or TorchScript) with its contract, checked against torch on
    real images."""
    import tempfile

    import numpy as np

    from deeplense.core.run_dir import run_dir_of
    from deeplense.evaluate.package import simulate_check_set
    from deeplense.evaluate.run import evaluation_data
    from deeplense.infer import load_predictor
    from deeplense.infer.export import export_model
    from deeplense.models.hub import list_pretrained, read_pretrained

    predictor = load_predictor(run)
    with tempfile.TemporaryDirectory(prefix="deeplense-export-") as tmp:
        if not Path(run).exists() and run in list_pretrained():
            target = out or Path(f"{run}_{format_}")
            source = data or simulate_check_set(read_pretrained(run)[0].config["check_recipe"], Path(tmp) / "check")
            got = evaluation_data(predictor, Path(tmp), source, None)
        else:
            target = out or run_dir_of(run) / f"export_{format_}"
            got = evaluation_data(predictor, run_dir_of(run), data, None)
        images = np.asarray(got["images"][:n_parity])
        meta = export_model(predictor, format_, target, images)
    typer.echo(
        f"wrote {target} ({meta['format']}); parity with torch on {meta['parity_images']} real images: "
        f"max |difference| = {meta['parity_max_abs_diff']:.3g}"
    )


def pretrained() -> None:
    """List the pretrained models shipped with deeplense (use a name as MODEL of predict)."""
    from deeplense.models.hub import PRETRAINED_DIR, list_pretrained, read_pretrained

    names = list_pretrained()
    if not names:
        typer.echo("no pretrained models in this installation")
    for name in names:
        info, _ = read_pretrained(name)
        typer.echo(f"{name:28s} {info.summary}")
    typer.echo(f"(model cards: {PRETRAINED_DIR}/<name>/README.md)")


@configs_app.command("list")
def configs_list() -> None:
    """The shipped training configs, with their first comment line."""
    from deeplense.configs import available, describe

    for name in available():
        typer.echo(f"{name:40s} {describe(name)}")


@configs_app.command("show")
def configs_show(name: Annotated[str, typer.Argument(help="A name from `deeplense configs list`.")]) -> None:
    """Print a shipped config (redirect it to a file to start your own: ... > my.yaml)."""
    from deeplense.configs import path_of

    typer.echo(path_of(name).read_text(), nl=False)


def package(
    run: Annotated[Path, typer.Argument(help="Run directory or checkpoint.")],
    card: Annotated[
        Path,
        typer.Argument(
            help="YAML with name, summary, commands, check (preset, n_per_class, seed), intended_use, limits."
        ),
    ],
    root: Annotated[Path | None, typer.Option(help="Folder of pretrained models (default: the package's).")] = None,
) -> None:
    """Package a run as a shipped pretrained model: weights, config.json and a model card with its
    test metric and a reproduction check (for maintainers)."""
    from deeplense.core.config import ConfigError, check_keys, load_yaml
    from deeplense.evaluate.package import package_run
    from deeplense.models.hub import PRETRAINED_DIR

    spec = load_yaml(card)
    keys = {"name", "summary", "commands", "check", "intended_use", "limits"}
    check_keys(spec, keys, str(card))
    missing = sorted(keys - set(spec))
    if missing:
        raise ConfigError(str(card), f"missing {missing}")
    folder = package_run(run, **{k: spec[k] for k in keys}, root=root or PRETRAINED_DIR)
    typer.echo(f"wrote {folder}")
