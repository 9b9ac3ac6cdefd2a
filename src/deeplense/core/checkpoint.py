"""Reading checkpoint files: tensors and plain data only, never code."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from deeplense.core.errors import DataFormatError

__all__ = ["read_checkpoint"]


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The contents of a torch checkpoint, read with ``weights_only=True`` (no object in the file
    can run code); a file that is not one gets a one-line :class:`DataFormatError`."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataFormatError(f"{path}: not a readable checkpoint of tensors and plain data ({first})") from None
    if not isinstance(state, dict):
        raise DataFormatError(f"{path}: expected a checkpoint dictionary, got {type(state).__name__}")
    return state
