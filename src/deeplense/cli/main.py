"""The ``deeplense`` command line: one thin command per task over the library."""

from __future__ import annotations

import typer

from deeplense.cli import data, evaluate, simulate, train
from deeplense.core.runtime import keep_freed_memory

app = typer.Typer(
    help="Simulate strong-lensing images with dark-matter substructure and learn from them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _start() -> None:
    keep_freed_memory()


app.command("simulate")(simulate.simulate)
app.command("presets")(simulate.presets)
app.add_typer(data.app, name="data")
app.command("train")(train.train)
app.command("tune")(train.tune)
app.command("ensemble")(train.ensemble)
app.command("evaluate")(evaluate.evaluate)
app.command("compare")(evaluate.compare)
app.command("profile")(evaluate.profile)
app.command("demo")(evaluate.demo)
app.add_typer(train.models_app, name="models")


@app.command("version")
def version() -> None:
    """Print the package version."""
    from deeplense.core.version import __version__

    typer.echo(__version__)


if __name__ == "__main__":
    app()
