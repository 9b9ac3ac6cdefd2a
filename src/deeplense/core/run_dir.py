"""The run directory: the one module that names its files.

::

    config.yaml          the fully resolved training config
    contract.json        the model contract (see :mod:`deeplense.core.contract`)
    split.csv            the split used (stored data)
    metrics.csv          per-step/epoch metrics merged over the sessions in logs/session-N/
    checkpoints/best.ckpt, checkpoints/last.ckpt
    test_metrics.json, predictions_test.csv   held-out test evaluation of the best checkpoint
    summary.json         wall time, sizes, hardware, best validation and test numbers
    evaluation/          default output of ``deeplense evaluate``
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RunDir", "resolve_checkpoint", "run_dir_of"]


@dataclass(frozen=True)
class RunDir:
    """Paths of the files of one run directory."""

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    config = property(lambda self: self.root / "config.yaml")
    contract = property(lambda self: self.root / "contract.json")
    split = property(lambda self: self.root / "split.csv")
    metrics = property(lambda self: self.root / "metrics.csv")
    logs = property(lambda self: self.root / "logs")
    checkpoints = property(lambda self: self.root / "checkpoints")
    best = property(lambda self: self.root / "checkpoints" / "best.ckpt")
    last = property(lambda self: self.root / "checkpoints" / "last.ckpt")
    test_metrics = property(lambda self: self.root / "test_metrics.json")
    test_predictions = property(lambda self: self.root / "predictions_test.csv")
    summary = property(lambda self: self.root / "summary.json")
    evaluation = property(lambda self: self.root / "evaluation")

    def session(self, number: int) -> Path:
        """Log folder of the ``number``-th training session (0 for the first, 1 after a resume...)."""
        return self.logs / f"session-{number}"

    def sessions(self) -> list[Path]:
        return sorted(self.logs.glob("session-*"), key=lambda p: int(p.name.split("-")[1]))

    def read_summary(self) -> dict[str, Any]:
        """``summary.json``, or ``{}`` when the run has none yet."""
        return json.loads(self.summary.read_text()) if self.summary.exists() else {}

    def write_json(self, path: Path, data: dict[str, Any]) -> None:
        path.write_text(json.dumps(data, indent=2))


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory (its best checkpoint, else the last) or a checkpoint/exported file."""
    path = Path(path)
    if path.is_dir():
        run = RunDir(path)
        for candidate in (run.best, run.last):
            if candidate.exists():
                return candidate
        raise FileNotFoundError(f"{path}: no checkpoints/best.ckpt or last.ckpt")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    return path


def run_dir_of(path: str | Path) -> Path:
    """The run directory of a run directory or of one of its checkpoints."""
    path = Path(path)
    return path if path.is_dir() else resolve_checkpoint(path).parent.parent
