"""``deeplense simulate`` and ``deeplense presets``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from deeplense.cli.common import console
from deeplense.cli.common import fail as _fail
from deeplense.core.config import ConfigError, apply_overrides, load_yaml
from deeplense.core.dataset_dir import CONFIG


def presets() -> None:
    """List the simulation presets."""
    from deeplense.sim.presets import list_presets, load_preset

    for name in list_presets():
        description = " ".join(str(load_preset(name).get("description", "")).split())
        typer.echo(f"{name:12s} {description[:100]}")


def _class_weights(text: str, class_names: list[str]) -> list[int]:
    """``lens=1,non_lens=10`` -> weights in class order; every class must be named."""
    given = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        if name.strip() not in class_names or not value.strip().isdigit():
            raise ConfigError("class_weights", f"expected NAME=INTEGER for classes {class_names}, got {item!r}")
        given[name.strip()] = int(value)
    missing = [c for c in class_names if c not in given]
    if missing:
        raise ConfigError("class_weights", f"no weight for {missing}")
    return [given[c] for c in class_names]


def simulate(
    out: Annotated[Path | None, typer.Option(help="Output data set directory.")] = None,
    preset: Annotated[str | None, typer.Option(help="Named preset, e.g. model_i (see `deeplense presets`).")] = None,
    config: Annotated[Path | None, typer.Option(help="Simulation config YAML (instead of --preset).")] = None,
    n_per_class: Annotated[
        int, typer.Option(help="Images per class (per unit of class weight when classes are weighted).")
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Base seed; image i uses SeedSequence([seed, i]).")] = 0,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    split: Annotated[str, typer.Option(help="Stratified split fractions.")] = "train=0.8,val=0.1,test=0.1",
    scheduler: Annotated[str | None, typer.Option(help="Dask scheduler address, e.g. tcp://host:8786.")] = None,
    shard_size: Annotated[int, typer.Option(help="Images per HDF5 shard.")] = 256,
    class_weights: Annotated[
        str | None,
        typer.Option(
            help="Images per class per group, e.g. lens=1,non_lens=100; 0 leaves a class out (default: the preset's)."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images rendered per call.")] = 64,
    device: Annotated[str, typer.Option(help="torch device: cpu or cuda.")] = "cpu",
    dtype: Annotated[str, typer.Option(help="float32 or float64.")] = "float32",
    compression: Annotated[str | None, typer.Option(help="HDF5 compression of images: gzip or lzf.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config key: key.sub=value.")] = None,
    regenerate: Annotated[Path | None, typer.Option(help="Re-render one image of this data set.")] = None,
    index: Annotated[int | None, typer.Option(help="Image index for --regenerate.")] = None,
    save: Annotated[Path | None, typer.Option(help="With --regenerate: save the image as .npy.")] = None,
) -> None:
    """Simulate a data set (sharded HDF5, resumable), or regenerate one image from its seed."""
    if regenerate is not None:
        if index is None:
            _fail("--regenerate needs --index")
        _regenerate(regenerate, index, save)
        return
    if out is None:
        _fail("--out is required")
    if (preset is None) == (config is None):
        _fail("give exactly one of --preset or --config")
    if dtype not in ("float32", "float64"):
        _fail(f"--dtype must be float32 or float64, got {dtype}")
    if compression not in (None, "gzip", "lzf"):
        _fail(f"--compression must be gzip or lzf, got {compression}")
    from deeplense.sim.presets import load_preset
    from deeplense.sim.simulator import Simulator
    from deeplense.sim.writer import DatasetPlan, parse_splits, write_dataset

    try:
        raw = load_preset(preset) if preset else load_yaml(config)
        raw = apply_overrides(raw, set_ or [])
        sim = Simulator(raw)
        weights = _class_weights(class_weights, sim.class_names) if class_weights else sim.class_weights
        plan = DatasetPlan(
            n_per_class,
            len(sim.class_names),
            seed,
            parse_splits(split),
            shard_size,
            weights if any(w != 1 for w in weights) else None,
        )
    except (ConfigError, KeyError) as exc:
        _fail(str(exc))
    columns = [
        TextColumn("[bold]simulate"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("simulate", total=plan.n_total, rate="")
        start_done: list[int] = []

        def report(done: int, total: int, seconds: float) -> None:
            start_done.append(done) if not start_done else None
            rate = (done - start_done[0]) / seconds if seconds > 0 else 0.0
            bar.update(task, completed=done, rate=f"{rate:,.0f} images/s" if rate else "")

        try:
            manifest = write_dataset(
                out,
                raw,
                plan,
                workers=workers,
                scheduler=scheduler,
                batch_size=batch_size,
                dtype=dtype,
                device=device,
                compression=compression,
                progress=report,
            )
        except ConfigError as exc:
            _fail(str(exc))
    counts = ", ".join(f"{c}: {sum(v.values())}" for c, v in manifest["counts"].items())
    typer.echo(f"wrote {manifest['n_images']} images ({counts}) to {out}")
    typer.echo(f"({manifest['written_this_run']} rendered in this run; open with deeplense.open_dataset({str(out)!r}))")


def _regenerate(root: Path, index: int, save: Path | None) -> None:
    import numpy as np

    from deeplense.data.readers import open_dataset
    from deeplense.sim.simulator import Simulator
    from deeplense.sim.writer import resolved_sim

    ds = open_dataset(root)
    rows = ds.metadata.index[ds.metadata["index"] == index]
    if len(rows) == 0:
        _fail(f"{root}: no image with index {index} (0..{len(ds) - 1})")
    row = int(rows[0])
    meta = ds.metadata.iloc[row]
    sim = Simulator(resolved_sim(load_yaml(root / CONFIG)))
    if sim.class_names != ds.class_names:
        _fail(f"{root / 'config.yaml'}: classes {sim.class_names} differ from the data set's {ds.class_names}")
    image, _ = sim.simulate([int(meta["seed"])], [int(meta["label"])])
    stored = ds.image(row)
    diff = float(np.abs(image[0] - stored).max())
    typer.echo(
        f"image {index} ({meta['class_name']}, seed {int(meta['seed'])}): max |regenerated - stored| = {diff:.3g}"
    )
    if save is not None:
        np.save(save, image[0])
        typer.echo(f"saved {save}")
    if diff != 0:
        raise typer.Exit(1)
