"""One entry point for every data layout: :func:`open_dataset` (layouts: :mod:`deeplense.data.layouts`,
file decoders: :mod:`deeplense.data.decoders`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from deeplense.data.base import DataFormatError, ImageSource
from deeplense.data.layouts import LAYOUTS, bad_files_message
from deeplense.data.layouts import detect as detect_layout

__all__ = ["open_dataset", "detect_layout", "CHECKS"]

CHECKS = ("header", "full")


def open_dataset(
    path: str | Path,
    *,
    split: str | None = None,
    check: str = "header",
    on_bad_file: str = "error",
    labels: str | Path | None = None,
    split_file: str | Path | None = None,
    split_fractions: dict[str, float] | None = None,
    split_seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> ImageSource:
    """Open any DeepLense data layout (detected) or a deeplense directory.

    ``split`` keeps one split: stored splits are used where the data have them; otherwise a
    seeded stratified split (``split_fractions``, default 0.8/0.1/0.1, ``split_seed``) or the
    one written in ``split_file`` (see :func:`deeplense.data.splits.save_split`).
    ``check='full'`` reads every file up front (NaN/Inf, unreadable data). Bad files raise a
    ``DataFormatError`` listing them, or are left out with ``on_bad_file='skip'`` (``.bad_files``).
    ``labels`` names the label/target file of a stacked array when it is not found by name.
    """
    from deeplense.data.splits import assign_splits, load_split

    if check not in CHECKS:
        raise ValueError(f"check must be one of {CHECKS}, got {check!r}")
    if on_bad_file not in ("error", "skip"):
        raise ValueError(f"on_bad_file must be 'error' or 'skip', got {on_bad_file!r}")
    path = Path(path)
    layout = detect_layout(path)
    source = LAYOUTS.get(layout).open(path, {"labels": labels, "check": check, "progress": progress})
    if source.bad_files and on_bad_file == "error":
        raise DataFormatError(
            bad_files_message(path, source.bad_files) + "\n(fix or remove them, or skip them with --on-bad-file skip)"
        )
    if split_file is not None:
        load_split(source, split_file)
    elif (source.splits == "").all() and split is not None:
        assign_splits(source, split_fractions, split_seed)
    return source.subset(split) if split is not None else source
