"""The adversarial suite: bad files, configs and faults, each run as a user would meet it, with
its outcome classified and counted (the totals are printed at the end of the test session).

Outcomes: ``clear error`` (exit status 2, or the library's own error type, with a message naming
the file or key), ``handled`` (the right result, e.g. a resume that finishes), ``silently wrong``
(success where the input was bad), ``traceback`` (a raw Python traceback), ``code executed`` (a
file's payload ran), ``data lost`` (finished work gone), ``crash`` (any other exit)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

TOTALS: Counter = Counter()
CLI = [sys.executable, "-m", "deeplense.cli.main"]


class Attack:
    """Runs one case and classifies what happened."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.marker = tmp_path / "PAYLOAD_RAN"

    def _record(self, outcome: str, expected: str, detail: str) -> str:
        TOTALS["cases"] += 1
        TOTALS[outcome] += 1
        assert outcome == expected, f"{outcome} (expected {expected}):\n{detail}"
        return outcome

    def cli(self, *args, expect: str = "clear error", match: str | None = None, env=None, timeout: int = 600):
        """Run ``deeplense ARGS``; ``expect`` is ``clear error`` (exit 2 naming what ``match``
        says), ``handled`` (exit 0) or ``no traceback`` (exit 0 or a clear error)."""
        result = subprocess.run(
            [*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
        )
        detail = f"exit {result.returncode}\nstdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-3000:]}"
        if self.marker.exists():
            outcome = "code executed"
        elif "Traceback (most recent call last)" in result.stderr:
            outcome = "traceback"
        elif result.returncode == 2 and "error:" in result.stderr:
            named = match is None or re.search(match, result.stderr, re.S)
            outcome = "clear error" if named else "unclear error"
        elif result.returncode == 0:
            outcome = "handled" if expect in ("handled", "no traceback") else "silently wrong"
        else:
            outcome = "crash"
        if expect == "no traceback" and outcome in ("clear error", "handled"):
            outcome = "no traceback"
        self._record(outcome, expect, detail)
        return result

    def api(self, call, *, error: type[BaseException] | tuple = (), match: str | None = None):
        """Call ``call()``; a bad input must raise ``error`` with a message matching ``match``."""
        try:
            value = call()
        except error as exc:  # type: ignore[misc]
            named = match is None or re.search(match, str(exc), re.S)
            outcome = "code executed" if self.marker.exists() else ("clear error" if named else "unclear error")
            self._record(outcome, "clear error", f"{type(exc).__name__}: {exc}")
            return exc
        except Exception as exc:  # noqa: BLE001 - classified, not swallowed: the assertion fails
            outcome = "code executed" if self.marker.exists() else "traceback"
            self._record(outcome, "clear error", f"{type(exc).__name__}: {exc}")
        else:
            outcome = "code executed" if self.marker.exists() else "silently wrong"
            self._record(outcome, "clear error", f"returned {value!r:.300}")

    def refused_to_open(self, data: Path, match: str) -> None:
        """Opening the data set at ``data`` must be a ``DataFormatError`` matching ``match``."""
        from deeplense import open_dataset
        from deeplense.core.errors import DataFormatError

        self.api(lambda: open_dataset(data), error=DataFormatError, match=match)

    def copy(self, folder: Path) -> Path:
        """A copy of ``folder`` in this case's temporary folder, to damage."""
        import shutil

        copy = self.tmp / f"copy-of-{folder.name}"
        shutil.copytree(folder, copy)
        return copy

    def handled(self, ok: bool, detail: str = "", failure: str = "data lost") -> None:
        """A fault case whose right outcome is checked by the test itself (``ok``)."""
        self._record("handled" if ok else failure, "handled", detail)


@pytest.fixture
def attack(tmp_path):
    return Attack(tmp_path)


def pytest_terminal_summary(terminalreporter):
    if TOTALS:
        shown = ", ".join(f"{k}: {v}" for k, v in sorted(TOTALS.items(), key=lambda kv: kv[0] != "cases"))
        terminalreporter.write_line(f"adversarial totals: {shown}")


def mount_tmpfs(path: Path, size: str, read_only: bool = False) -> bool:
    """Mount a small tmpfs at ``path`` (root only); False where this machine does not allow it."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def first_line(text: str) -> str:
    return next((line for line in text.splitlines() if line.strip()), "")


__all__ = ["Attack", "mount_tmpfs", "unmount", "first_line"]


def _survives(self: Attack, call, where: str) -> None:
    """A fuzzed input: reading it may succeed, or fail with the library's error naming ``where``
    (its file); any other exception is a traceback the user would have seen."""
    from deeplense.core.config import ConfigError
    from deeplense.core.errors import DataFormatError

    try:
        call()
    except (DataFormatError, ConfigError, ValueError, FileNotFoundError) as exc:
        named = Path(where).name in str(exc) or Path(where).parent.name in str(exc)
        self._record(
            "clear error" if named else "unclear error", "clear error", f"{where}: {type(exc).__name__}: {exc}"
        )
    except Exception as exc:  # noqa: BLE001 - classified and asserted on
        self._record("traceback", "clear error", f"{where}: {type(exc).__name__}: {exc}")
    else:
        TOTALS["cases"] += 1
        TOTALS["read fine"] += 1


Attack.survives = _survives  # type: ignore[attr-defined]
