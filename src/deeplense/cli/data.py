"""``deeplense data inspect`` and ``deeplense data convert``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deeplense.cli.common import console, fail, progress_bar

app = typer.Typer(help="Inspect data sets in any DeepLense layout and convert them.", no_args_is_help=True)

OnBadFile = Annotated[str, typer.Option(help="error: stop and list bad files; skip: leave them out and count them.")]
Labels = Annotated[Path | None, typer.Option(help="Label/target .npy for a stacked array (found by name otherwise).")]


def _open(path: Path, on_bad_file: str, labels: Path | None, check: str):
    from deeplense.core.config import ConfigError
    from deeplense.data.base import DataFormatError
    from deeplense.data.readers import open_dataset

    if on_bad_file not in ("error", "skip"):
        fail(f"--on-bad-file must be error or skip, got {on_bad_file}")
    try:
        with progress_bar("scan") as update:
            return open_dataset(path, check=check, on_bad_file=on_bad_file, labels=labels, progress=update)
    except (DataFormatError, FileNotFoundError, ConfigError) as exc:
        fail(str(exc))


@app.command("inspect")
def inspect(
    path: Annotated[Path, typer.Argument(help="Data set directory or file.")],
    out: Annotated[Path | None, typer.Option(help="Write a report (with sample grids and histograms) here.")] = None,
    format: Annotated[str, typer.Option("--format", help="Report format: md or html.")] = "md",
    max_per_class: Annotated[int, typer.Option(help="Images per class used for pixel statistics.")] = 500,
    labels: Labels = None,
) -> None:
    """Layout, classes and counts, shapes, pixel statistics, noise, duplicates and bad files."""
    from deeplense.data.inspect import inspect_source, write_report

    if format not in ("md", "html"):
        fail(f"--format must be md or html, got {format}")
    source = _open(path, "skip", labels, "full")
    with progress_bar("inspect") as update:
        summary = inspect_source(source, max_per_class=max_per_class, progress=update)
    typer.echo(
        f"{summary['path']}: layout {summary['layout']}, {summary['n_images']} images of shape {tuple(summary['image_shape'])}"
    )
    for c in summary["classes"]:
        p = c.get("pixels", {})
        splits = ", ".join(f"{k} {v}" for k, v in c["splits"].items())
        if not c["count"]:
            typer.echo(f"  {c['name']:>10s} ({c['original']}): 0 images")
            continue
        typer.echo(
            f"  {c['name']:>10s} ({c['original']}): {c['count']} images [{splits}]  "
            f"mean {p.get('mean', float('nan')):.4g} std {p.get('std', float('nan')):.4g} "
            f"min {p.get('min', float('nan')):.4g} max {p.get('max', float('nan')):.4g} "
            f"noise sigma {c.get('noise_sigma_median', float('nan')):.4g}"
        )
    for name, s in summary["columns"].items():
        typer.echo(f"  column {name} [{s['unit']}]: {s['count']} values in [{s['min']:.4g}, {s['max']:.4g}]")
    typer.echo(f"duplicates: {len(summary['duplicates'])} group(s)")
    for group in summary["duplicates"][:10]:
        typer.echo(f"  {' = '.join(map(str, group))}")
    typer.echo(f"bad files: {len(summary['bad_files'])}")
    for bad in summary["bad_files"]:
        typer.echo(f"  {bad['path']}: {bad['reason']}")
    if out is not None:
        report = write_report(summary, out, format)
        typer.echo(f"report: {report}")


@app.command("convert")
def convert(
    path: Annotated[Path, typer.Argument(help="Data set directory or file in any supported layout.")],
    out: Annotated[Path, typer.Option(help="Output deeplense data set directory.")],
    shard_size: Annotated[int, typer.Option(help="Images per HDF5 shard.")] = 1024,
    split_seed: Annotated[int, typer.Option(help="Seed of the stratified split for data without one.")] = 0,
    split: Annotated[str, typer.Option(help="Split fractions for data without one.")] = "train=0.8,val=0.1,test=0.1",
    on_bad_file: OnBadFile = "error",
    labels: Labels = None,
) -> None:
    """Write any readable layout as a deeplense data set, keeping every label and target."""
    from deeplense.core.config import ConfigError
    from deeplense.data.convert import convert_dataset
    from deeplense.sim.writer import parse_splits

    try:
        fractions = parse_splits(split)
    except ConfigError as exc:
        fail(str(exc))
    source = _open(path, on_bad_file, labels, "full")
    if source.bad_files:
        console.print(f"skipped {len(source.bad_files)} bad file(s); `deeplense data inspect {path}` lists them")
    try:
        with progress_bar("convert") as update:
            manifest = convert_dataset(
                source, out, shard_size=shard_size, split_seed=split_seed, split_fractions=fractions, progress=update
            )
    except ConfigError as exc:
        fail(str(exc))
    counts = ", ".join(f"{c}: {sum(v.values())}" for c, v in manifest["counts"].items())
    typer.echo(f"wrote {manifest['n_images']} images ({counts}) to {out}")


@app.command("verify")
def verify(
    path: Annotated[Path, typer.Argument(help="A deeplense data set directory.")],
) -> None:
    """Check a deeplense data set's files against its manifest: each shard's SHA-256 checksum,
    labels, splits, image shapes and finite pixels. Exit status 1 when anything is wrong."""
    from deeplense.core.dataset_dir import verify as verify_dataset

    report = verify_dataset(path)
    unchecked = report["shards"] - report["checksummed"]
    note = f" ({unchecked} written before checksums were recorded: structure checked only)" if unchecked else ""
    for problem in report["problems"]:
        typer.echo(f"problem: {problem}")
    status = "ok" if not report["problems"] else f"{len(report['problems'])} problem(s)"
    typer.echo(f"{path}: {report['shards']} shard(s), {report['checksummed']} checksum(s) verified{note}: {status}")
    if report["problems"]:
        raise typer.Exit(1)
