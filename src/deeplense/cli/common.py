"""Helpers shared by the CLI commands: errors on stderr with exit code 2, progress bars."""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


def fail(message: str) -> None:
    """Print ``error: message`` on stderr and exit with status 2."""
    console.print("[bold red]error:[/]", end=" ")
    console.print(message, soft_wrap=True, markup=False, highlight=False)
    raise typer.Exit(2)


@contextmanager
def progress_bar(label: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar; yields ``update(done, total)``."""
    columns = [
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def user_error(exc: BaseException) -> str | None:
    """The one line that explains an error a user can cause (a bad config or file, a missing,
    unreadable or read-only path, a full disk), or ``None`` for a bug, which keeps its traceback."""
    from deeplense.core.config import ConfigError
    from deeplense.core.errors import DataFormatError

    if isinstance(exc, ConfigError | DataFormatError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        if exc.errno in _DISK_FULL:
            return (
                f"{where}no space left on the device; everything finished so far is kept: free some space and run "
                "the same command again to resume"
            )
        if exc.errno == errno.EROFS or isinstance(exc, PermissionError):
            return f"{where}cannot write or read here ({exc.strerror or exc}); choose another folder"
        if exc.errno == errno.ELOOP:
            return f"{where}a loop of symbolic links"
        if exc.strerror:
            return f"{where}{exc.strerror}"
        return f"{where}{exc}"
    if isinstance(exc, UnicodeError):
        return f"a file name or file is not valid UTF-8 ({exc}); rename it"
    return None


def headline_text(task: str, metrics: dict) -> str:
    """What the task says a person should read of ``metrics`` (several lines)."""
    from deeplense.tasks import TASKS

    return "\n".join(TASKS.get(task).describe(metrics))
