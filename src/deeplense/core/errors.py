"""The errors a user can cause with a file: each message names the file or field."""

from __future__ import annotations

__all__ = ["DataFormatError"]


class DataFormatError(ValueError):
    """A file of a data set, run or model is missing, truncated or inconsistent; the message names it."""
