"""The ``deeplense`` command line: one thin command per task over the library."""

from __future__ import annotations

import typer

from deeplense.cli import data, evaluate, predict, simulate, train
from deeplense.cli.common import console
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
app.command("predict")(predict.predict)
app.command("export")(predict.export)
app.add_typer(train.models_app, name="models")
train.models_app.command("pretrained")(predict.pretrained)
train.models_app.command("package")(predict.package)
app.add_typer(predict.configs_app, name="configs")


@app.command("version")
def version() -> None:
    """Print the package version."""
    from deeplense.core.version import __version__

    typer.echo(__version__)


def main() -> None:
    """The console entry point: every error a user can cause ends in one line on stderr (exit
    status 2), an interrupt in exit status 130; see :func:`deeplense.cli.common.user_error`."""
    from deeplense.cli.common import user_error

    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted: everything finished so far is kept; run the same command again to resume")
        raise SystemExit(130) from None
    except Exception as exc:  # noqa: BLE001 - mapped to one line where it is the user's, re-raised otherwise
        message = user_error(exc)
        if message is None:
            raise
        console.print("[bold red]error:[/]", end=" ")
        console.print(message, soft_wrap=True, markup=False, highlight=False)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
