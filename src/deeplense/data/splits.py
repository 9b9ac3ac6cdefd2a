"""Seeded, stratified splits for data that carry none, written down so they can be reused."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from deeplense.data.base import DataFormatError, ImageSource

__all__ = ["stratified_split", "assign_splits", "save_split", "load_split", "DEFAULT_FRACTIONS"]

DEFAULT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


def stratified_split(labels: np.ndarray, fractions: dict[str, float], seed: int) -> np.ndarray:
    """Split name per image: within each class a seeded permutation cut at exact counts
    (largest remainders), so every class is split in the same proportions."""
    labels = np.asarray(labels)
    out = np.empty(len(labels), dtype=object)
    names = list(fractions)
    for k, label in enumerate(np.unique(labels)):
        members = np.flatnonzero(labels == label)
        n = len(members)
        counts = [math.floor(f * n) for f in fractions.values()]
        by_remainder = np.argsort([-(f * n - c) for f, c in zip(fractions.values(), counts)], kind="stable")
        for j in by_remainder[: n - sum(counts)]:
            counts[j] += 1
        perm = np.random.default_rng(np.random.SeedSequence([seed, 0x5B117, k])).permutation(n)
        out[members[perm]] = np.repeat(names, counts)
    return out.astype(str)


def assign_splits(source: ImageSource, fractions: dict[str, float] | None = None, seed: int = 0) -> None:
    """Give a reader without stored splits a seeded stratified split (in place)."""
    source.metadata["split"] = stratified_split(source.labels, fractions or DEFAULT_FRACTIONS, seed)


def _keys(source: ImageSource) -> pd.Series:
    """A stable name per image: its file (and position in the file) or its index."""
    meta = source.metadata
    if "file" in meta:
        key = meta["file"].astype(str)
        if "source_index" in meta:
            key = key + "#" + meta["source_index"].astype(str)
        return key
    return meta["index"].astype(str)


def save_split(source: ImageSource, path: str | Path) -> Path:
    """Write ``key,split`` rows (CSV) for every image."""
    path = Path(path)
    pd.DataFrame({"key": _keys(source), "split": source.metadata["split"]}).to_csv(path, index=False)
    return path


def load_split(source: ImageSource, path: str | Path) -> None:
    """Apply a split written by :func:`save_split` (in place). Images it does not list (e.g. of
    classes a run left out) get no split; a file listing none of the images is an error."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError) as exc:
        raise DataFormatError(f"{path}: cannot read the split file ({exc})") from None
    if list(table.columns) != ["key", "split"]:
        raise DataFormatError(f"{path}: expected columns key,split, got {list(table.columns)}")
    mapping = dict(zip(table["key"], table["split"]))
    keys = _keys(source)
    if not any(k in mapping for k in keys):
        raise DataFormatError(f"{path}: lists none of the images of {source.root} (a split of another data set?)")
    source.metadata["split"] = [mapping.get(k, "") for k in keys]
