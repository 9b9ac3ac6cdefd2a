"""What every data set reader returns: an indexable source of images with a metadata table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.typing import ArrayLike

from deeplense.core.errors import DataFormatError

__all__ = ["DataFormatError", "BadFile", "ImageSource", "BASE_COLUMNS"]

BASE_COLUMNS = ("index", "label", "class_name", "split")


@dataclass(frozen=True)
class BadFile:
    """A file that cannot be used, and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class ImageSource:
    """Base of every reader. ``src[i]`` is ``(image float32 CxHxW, label, params dict)``.

    Subclasses set ``layout``, ``class_names``, ``metadata`` (one row per usable image with at
    least the columns ``index, label, class_name, split``; ``split`` is ``""`` where the data
    carry no split; more columns are parameters or regression targets), ``units`` (column ->
    unit) and ``bad_files``, and implement ``image(i)``. ``images(indices)`` may be overridden to
    read a batch faster than one image at a time. Readers are safe to hand to several
    ``DataLoader`` worker processes: file handles are opened lazily per process.
    """

    layout: str = "unknown"
    root: Any = None
    class_names: list[str]
    original_class_names: list[str]
    metadata: pd.DataFrame
    units: dict[str, str]
    bad_files: list[BadFile]

    def __len__(self) -> int:
        return len(self.metadata)

    def image(self, i: int) -> np.ndarray:
        raise NotImplementedError

    def images(self, indices: ArrayLike) -> np.ndarray:
        """``(len(indices), C, H, W)`` float32."""
        return np.stack([self.image(int(i)) for i in np.asarray(indices).ravel()]).astype(np.float32, copy=False)

    @property
    def labels(self) -> np.ndarray:
        return self.metadata["label"].to_numpy(np.int64)

    @property
    def splits(self) -> np.ndarray:
        return self.metadata["split"].to_numpy(str)

    @property
    def parameter_columns(self) -> list[str]:
        """Metadata columns that hold numbers other than the base columns (targets, parameters)."""
        skip = set(BASE_COLUMNS) | {"seed", "file", "original_class", "source_index"}
        return [c for c in self.metadata.columns if c not in skip and pd.api.types.is_numeric_dtype(self.metadata[c])]

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.image(0).shape)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, dict[str, float]]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        i = i % len(self)
        row = self.metadata.iloc[i]
        params = {}
        for k in self.parameter_columns:
            value = row[k]
            if not pd.isna(value):
                params[k] = float(value)
        return torch.from_numpy(np.ascontiguousarray(self.image(i), dtype=np.float32)), int(row["label"]), params

    def subset(self, split: str) -> ImageSource:
        """A view holding only the images of one split."""
        from deeplense.data.views import SplitView

        return SplitView(self, split)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, layout={self.layout}, n={len(self)}, classes={self.class_names})"


def root_source(source: Any) -> Any:
    """The reader under any class, split or index views."""
    while hasattr(source, "parent"):
        source = source.parent
    return source
