"""Folder locks: one writer per data set, conversion or tuning study at a time."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["LOCK", "locked"]

LOCK = ".lock"


@contextmanager
def locked(folder: str | Path, option: str = "out") -> Iterator[None]:
    """Hold ``folder``'s lock: a second writer on the same folder stops with a clear message
    naming ``option`` instead of racing the first. The lock (``flock`` on ``.lock``) goes with
    its process, so a killed run never leaves a stale lock behind."""
    from deeplense.core.config import ConfigError

    path = Path(folder) / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise ConfigError(
                option,
                f"{folder} is in use by another deeplense process (pid {holder}); wait for it or choose another folder",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)
