"""Views over a reader: a subset of its images (one split, or any index list)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from deeplense.data.base import ImageSource

__all__ = ["IndexView", "SplitView", "ClassView"]


class IndexView(ImageSource):
    """The images ``positions`` of ``parent``, renumbered from 0."""

    def __init__(self, parent: ImageSource, positions: ArrayLike):
        self.parent = parent
        self.positions = np.asarray(positions, dtype=np.int64)
        self.layout, self.root = parent.layout, parent.root
        self.class_names, self.original_class_names = parent.class_names, parent.original_class_names
        self.units, self.bad_files = parent.units, parent.bad_files
        self.metadata = parent.metadata.iloc[self.positions].reset_index(drop=True)

    def image(self, i: int) -> np.ndarray:
        return self.parent.image(int(self.positions[i]))

    def images(self, indices: ArrayLike) -> np.ndarray:
        return self.parent.images(self.positions[np.asarray(indices, dtype=np.int64)])


class SplitView(IndexView):
    """The images of one split."""

    def __init__(self, parent: ImageSource, split: str):
        names = sorted(set(parent.splits) - {""})
        if split not in names:
            raise KeyError(f"unknown split {split!r}; this data set has {names or 'no splits'}")
        super().__init__(parent, np.flatnonzero(parent.splits == split))
        self.split = split


class ClassView(IndexView):
    """The images of some classes, relabelled ``0..len(classes)-1`` in the order given."""

    def __init__(self, parent: ImageSource, classes: list[str]):
        unknown = [c for c in classes if c not in parent.class_names]
        if unknown:
            raise KeyError(f"unknown class {unknown[0]!r}; this data set has {parent.class_names}")
        codes = [parent.class_names.index(c) for c in classes]
        super().__init__(parent, np.flatnonzero(np.isin(parent.labels, codes)))
        self.class_names = list(classes)
        self.original_class_names = [parent.original_class_names[c] for c in codes]
        self.metadata["label"] = self.metadata["class_name"].map({c: i for i, c in enumerate(classes)}).astype(np.int64)
