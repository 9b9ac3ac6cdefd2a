"""Data layouts: the readers of every DeepLense layout, and :data:`LAYOUTS`, the registry that
detects and opens them (``../docs/data_format.md`` lists them with examples):

``deeplense``            our own directory (manifest.json + HDF5 shards)
``class_folders``        ``ROOT/{class}/*.{npy,png,fits}`` such as ``Model_I/{axion,cdm,no_sub}``
``split_class_folders``  ``ROOT/{train,val,test}/{class}/*`` such as the GSoC ``{train,val}/{no,sphere,vort}``
``split_prefixed_folders`` ``ROOT/{split}_{class}/*`` such as ``{train,test}_{lenses,nonlenses}``
``image_folder``         ``ROOT/*.{npy,png,fits}`` without labels
``stacked_array``        one ``.npy`` of N images (``(N,1,H,W)``, ``(N,H,W)``, ``(N,H*W)`` ...; int16
                         memmaps included) with a label or target file next to it
``fits_cube``            one FITS file with a cube of images, labels in an optional table extension

A layout declares ``detect(path)`` and ``open(path, options)``; detection tries the layouts in
order of ``priority`` (lowest first).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from deeplense.core import dataset_dir as fmt
from deeplense.core.registry import Registry
from deeplense.data.base import BadFile, DataFormatError, ImageSource
from deeplense.data.decode import decoded_shape
from deeplense.data.decoders import DECODERS, FITS, NPY, is_image_file, peek, suffix_of
from deeplense.data.fits_files import read_fits
from deeplense.data.safe_npy import load_npy
from deeplense.data.vocabulary import canonical_class, canonical_split, class_order

__all__ = [
    "LAYOUTS",
    "Layout",
    "FileFolderReader",
    "StackedArrayReader",
    "FitsCubeReader",
    "bad_files_message",
    "image_files",
    "subdirs",
    "detect",
]


def image_files(folder: Path) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_file() and is_image_file(e.name))


def subdirs(folder: Path) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def bad_files_message(root: str | Path, bad: list[BadFile], lead: str = "") -> str:
    listed = "\n  ".join(str(b) for b in bad[:10])
    more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
    return f"{root}: {lead}{len(bad)} bad file(s):\n  {listed}{more}"


# ------------------------------------------------------------------------------------- readers


class FileFolderReader(ImageSource):
    """One image per file, labels (and splits) from folder names.

    ``check='header'`` reads npy headers (shape, truncation) and only the files whose metadata
    live inside them (object arrays, appended labels); ``check='full'`` reads every file and also
    rejects NaN/Inf and unreadable data. Bad files are listed in ``bad_files`` and left out.
    """

    def __init__(
        self,
        root: Path,
        entries: list[tuple[str, str, str]],
        layout: str,
        check: str = "header",
        progress: Callable[[int, int], None] | None = None,
    ):
        self.root, self.layout = root, layout
        self.bad_files: list[BadFile] = []
        originals: dict[str, set[str]] = {}
        for _, original, _ in entries:
            if original:
                originals.setdefault(canonical_class(original), set()).add(original)
        self.class_names = class_order(originals) if originals else ["unlabelled"]
        self.original_class_names = ["/".join(sorted(originals.get(c, {c}))) for c in self.class_names]
        rows, shapes = [], {}
        for n, (path, original, split) in enumerate(entries):
            if progress:
                progress(n + 1, len(entries))
            try:
                row = self._describe(path, check)
            except Exception as exc:  # noqa: BLE001 - any failure makes the file bad, with its reason
                self.bad_files.append(BadFile(path, str(exc).removeprefix(f"{path}: ")))
                continue
            cls = canonical_class(original) if original else "unlabelled"
            row.update(file=path, original_class=original or "", class_name=cls, split=split)
            rows.append(row)
            shapes[path] = row.pop("_shape")
        self._drop_odd_shapes(rows, shapes)
        if not rows:
            raise DataFormatError(bad_files_message(root, self.bad_files, "no readable image files; "))
        table = pd.DataFrame(rows)
        table.insert(0, "index", np.arange(len(table)))
        table.insert(1, "label", table["class_name"].map({c: i for i, c in enumerate(self.class_names)}))
        first = ["index", "label", "class_name", "split", "original_class", "file"]
        self.metadata = table[first + [c for c in table.columns if c not in first]]
        self.units = {"value": "", "stored_label": ""}
        if "substructure.log10_m_a" in self.metadata:
            self.units["substructure.log10_m_a"] = "log10(eV)"
        self._files = self.metadata["file"].to_numpy()
        self._loader_for = [DECODERS[suffix_of(p)] for p in self._files]

    @staticmethod
    def _describe(path: str, check: str) -> dict:
        shape, must_read = peek(path)
        row: dict = {}
        if check == "full" or must_read or shape is None:
            decoded = DECODERS[suffix_of(path)](path)
            if check == "full" and not np.isfinite(decoded.image).all():
                bad = int((~np.isfinite(decoded.image)).sum())
                raise ValueError(f"{bad} NaN/Inf pixels")
            shape = decoded.image.shape
            if decoded.value is not None:
                row["value"] = decoded.value
            if decoded.stored_label is not None:
                row["stored_label"] = decoded.stored_label
        row["_shape"] = tuple(shape)
        return row

    def _drop_odd_shapes(self, rows: list[dict], shapes: dict[str, tuple]) -> None:
        if not rows:
            return
        common, _ = Counter(shapes.values()).most_common(1)[0]
        keep = []
        for row in rows:
            if shapes[row["file"]] != common:
                self.bad_files.append(
                    BadFile(row["file"], f"shape {shapes[row['file']]} differs from the data set's {common}")
                )
            else:
                keep.append(row)
        rows[:] = keep
        self._shape = common
        for row in rows:
            value = row.get("value")
            if row["class_name"] == "axion" and value is not None and 0 < value < 1e-10:
                row["substructure.log10_m_a"] = float(np.log10(value))  # Model I stores m_a in eV

    @property
    def image_shape(self) -> tuple[int, ...]:
        return self._shape

    def image(self, i: int) -> np.ndarray:
        path = self._files[i]
        try:
            return self._loader_for[i](path).image
        except Exception as exc:  # noqa: BLE001
            raise DataFormatError(f"{path}: {exc}") from None


def _label_file_for(path: Path) -> Path | None:
    """The label/target file that pairs with a stacked image file, by name."""
    stem, folder = path.stem, path.parent
    pairs = [
        ("images", "labels"),
        ("images", "masses"),
        ("images", "targets"),
        ("image", "label"),
        ("x", "y"),
        ("X", "y"),
        ("X", "Y"),
        ("data", "labels"),
    ]
    for a, b in pairs:
        if a in stem:
            candidate = folder / (stem.replace(a, b, 1) + path.suffix)
            if candidate != path and candidate.exists():
                return candidate
    return None


def _as_images(array: np.ndarray, where: str) -> np.ndarray:
    """Stacked array -> (N, C, H, W) view (no copy for memmaps where possible)."""
    if array.dtype.hasobject:
        raise DataFormatError(f"{where}: object arrays are one image per file; open the folder instead")
    if np.issubdtype(array.dtype, np.complexfloating):
        raise DataFormatError(f"{where}: dtype {array.dtype} is complex; store the real images (or their modulus)")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise DataFormatError(f"{where}: dtype {array.dtype} is not numeric")
    if array.ndim < 2:
        raise DataFormatError(f"{where}: a stacked array needs at least 2 dimensions, got shape {array.shape}")
    try:
        kind, (c, h, w) = decoded_shape(array.shape[1:])
    except ValueError as exc:
        raise DataFormatError(f"{where}: images of shape {array.shape[1:]}: {exc}") from None
    if kind in ("flat+label", "image+label_row"):
        raise DataFormatError(f"{where}: stacked arrays with appended labels are not supported; give a label file")
    if kind == "hwc":
        return np.moveaxis(array.reshape(len(array), h, w, c), -1, 1)
    return array.reshape(len(array), c, h, w)


#: Most classes integer labels may name.
MAX_CLASSES = 1000


def _labels_table(labels: np.ndarray, n: int, where: str, name: str) -> tuple[pd.DataFrame, list[str]]:
    """Integer labels (or one-hot rows), and floating-point labels with at most 64 distinct whole
    values, -> classes; other floating-point values -> regression target ``name``."""
    labels = np.asarray(labels)
    if len(labels) != n:
        raise DataFormatError(f"{where}: {len(labels)} labels for {n} images")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim == 2 and set(np.unique(labels)) <= {0, 1} and (labels.sum(1) == 1).all():
        labels = labels.argmax(1)
    if labels.ndim != 1:
        raise DataFormatError(f"{where}: labels of shape {labels.shape}; expected (N,), (N, 1) or one-hot (N, K)")
    if not np.isfinite(labels.astype(np.float64)).all():
        raise DataFormatError(f"{where}: labels contain NaN/Inf")
    distinct = len(np.unique(labels))
    if np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool:  # integers are classes
        if distinct > MAX_CLASSES:
            raise DataFormatError(
                f"{where}: {distinct} distinct integer labels, more than {MAX_CLASSES} classes; "
                "store regression targets as floating-point numbers"
            )
    # floating-point values are classes when they are few whole numbers, else a regression target
    if (
        np.issubdtype(labels.dtype, np.integer)
        or labels.dtype == bool
        or (np.all(labels == np.round(labels)) and distinct <= 64)
    ):
        ints = labels.astype(np.int64)
        names = [str(v) for v in np.unique(ints)]
        table = pd.DataFrame({"label": np.searchsorted(np.unique(ints), ints), "class_name": [str(v) for v in ints]})
        return table, names
    table = pd.DataFrame(
        {"label": np.zeros(n, dtype=np.int64), "class_name": "unlabelled", name: labels.astype(np.float64)}
    )
    return table, ["unlabelled"]


class StackedArrayReader(ImageSource):
    """N images in one ``.npy`` (memory-mapped), with labels or targets from a second file."""

    layout = "stacked_array"

    def __init__(self, path: Path, labels: Path | None = None):
        self.root, self.bad_files = path, []
        try:
            raw = load_npy(path, mmap=True)
        except ValueError as exc:
            raise DataFormatError(str(exc)) from None
        self._images = _as_images(raw, str(path))
        n = len(self._images)
        labels = labels or _label_file_for(path)
        if labels is not None:
            try:
                values = load_npy(labels)
            except ValueError as exc:
                raise DataFormatError(str(exc)) from None
            name = re.sub(r"[_-]?mmep.*$", "", Path(labels).stem) or "target"
            table, self.class_names = _labels_table(values, n, str(labels), name)
        else:
            table, self.class_names = (
                pd.DataFrame({"label": np.zeros(n, np.int64), "class_name": "unlabelled"}),
                ["unlabelled"],
            )
        self.original_class_names = list(self.class_names)
        table.insert(0, "index", np.arange(n))
        table.insert(3, "split", "")
        table["file"] = str(path)
        table["source_index"] = np.arange(n)
        self.metadata = table
        self.units = {}
        self.label_file = labels

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self._images.shape[1:])

    def image(self, i: int) -> np.ndarray:
        return np.asarray(self._images[i], dtype=np.float32)

    def images(self, indices: ArrayLike) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        order = np.argsort(indices, kind="stable")
        out = np.empty((len(indices), *self.image_shape), dtype=np.float32)
        out[order] = self._images[indices[order]]
        return out


class FitsCubeReader(ImageSource):
    """A FITS cube ``(N, H, W)`` or ``(N, C, H, W)``; a table extension with a ``label`` column
    gives labels, its other numeric columns become parameters."""

    layout = "fits_cube"

    def __init__(self, path: Path):
        self.root, self.bad_files = path, []
        try:
            contents = read_fits(path)
        except ValueError as exc:
            raise DataFormatError(f"{path}: {exc}") from None
        cube, columns = contents.image, contents.table
        if cube is None:
            raise DataFormatError(f"{path}: no image HDU with data")
        if cube.ndim == 2:
            cube = cube[None]
        self._images = _as_images(cube, str(path)).astype(np.float32)
        n = len(self._images)
        label_key = next((k for k in columns if k.lower() == "label"), None)
        if label_key is not None:
            meta, self.class_names = _labels_table(columns.pop(label_key), n, f"{path}[label]", "label_value")
        else:
            meta, self.class_names = (
                pd.DataFrame({"label": np.zeros(n, np.int64), "class_name": "unlabelled"}),
                ["unlabelled"],
            )
        for k, v in columns.items():
            if np.issubdtype(v.dtype, np.number) and v.ndim == 1 and len(v) == n:
                meta[k] = v.astype(np.float64)
        meta.insert(0, "index", np.arange(n))
        meta.insert(3, "split", "")
        meta["file"], meta["source_index"] = str(path), np.arange(n)
        self.metadata, self.units = meta, {}
        self.original_class_names = list(self.class_names)

    def image(self, i: int) -> np.ndarray:
        return self._images[i]

    def images(self, indices: ArrayLike) -> np.ndarray:
        return self._images[np.asarray(indices, dtype=np.int64)]


# ------------------------------------------------------------------------------------- layouts
#: Layouts by name; :func:`detect` tries them in order of ``priority``.
LAYOUTS: Registry[type[Layout]] = Registry("data layout")


class Layout:
    """A way images are laid out on disk: ``detect(path)`` says whether ``path`` is one (a file
    for ``on_file`` layouts, else a folder), ``open(path, options)`` reads it. ``options``:
    ``labels`` (a stacked array's label file), ``check`` and ``progress`` (file folders)."""

    priority: ClassVar[int]
    on_file: ClassVar[bool] = False

    @staticmethod
    def detect(path: Path) -> bool:
        raise NotImplementedError

    @classmethod
    def open(cls, path: Path, options: dict[str, Any]) -> ImageSource:
        raise NotImplementedError


@LAYOUTS.register("stacked_array")
class StackedArrayLayout(Layout):
    priority, on_file = 0, True

    @staticmethod
    def detect(path: Path) -> bool:
        return suffix_of(path.name) in NPY

    @classmethod
    def open(cls, path: Path, options: dict[str, Any]) -> ImageSource:
        labels = options.get("labels")
        return StackedArrayReader(path, Path(labels) if labels else None)


@LAYOUTS.register("fits_cube")
class FitsCubeLayout(Layout):
    priority, on_file = 1, True

    @staticmethod
    def detect(path: Path) -> bool:
        return suffix_of(path.name) in FITS

    @classmethod
    def open(cls, path: Path, options: dict[str, Any]) -> ImageSource:
        return FitsCubeReader(path)


@LAYOUTS.register("deeplense")
class DeeplenseLayout(Layout):
    priority = 10

    @staticmethod
    def detect(path: Path) -> bool:
        return (path / fmt.MANIFEST).exists() or (path / fmt.CONFIG).exists() and (path / fmt.SHARD_DIR).is_dir()

    @classmethod
    def open(cls, path: Path, options: dict[str, Any]) -> ImageSource:
        from deeplense.data.shards import ShardedDataset

        if options.get("check") == "full":  # every shard's checksum, structure and pixels
            problems = fmt.verify(path)["problems"]
            if problems:
                more = (
                    f" (and {len(problems) - 3} more; `deeplense data verify {path}` lists them)"
                    if len(problems) > 3
                    else ""
                )
                raise DataFormatError("; ".join(problems[:3]) + more)
        return ShardedDataset(path)


class _FolderLayout(Layout):
    """One image per file; labels (and splits) from folder names."""

    @staticmethod
    def entries(path: Path) -> list[tuple[str, str, str]]:
        """(file, original class name, split) for every image file."""
        raise NotImplementedError

    @classmethod
    def open(cls, path: Path, options: dict[str, Any]) -> ImageSource:
        name = next(n for n in LAYOUTS.names() if LAYOUTS.get(n) is cls)
        check, progress = options.get("check", "header"), options.get("progress")
        return FileFolderReader(path, cls.entries(path), name, check=check, progress=progress)


@LAYOUTS.register("split_prefixed_folders")
class SplitPrefixedFolders(_FolderLayout):
    priority = 11

    @staticmethod
    def detect(path: Path) -> bool:
        dirs = subdirs(path)
        prefixed = [d for d in dirs if "_" in d and canonical_split(d.split("_", 1)[0])]
        return bool(prefixed) and len(prefixed) == len([d for d in dirs if image_files(path / d)])

    @staticmethod
    def entries(path: Path) -> list[tuple[str, str, str]]:
        out = []
        for d in subdirs(path):
            head, _, cls = d.partition("_")
            if (split := canonical_split(head)) and cls:
                out += [(str(path / d / f), cls, split) for f in image_files(path / d)]
        return out


@LAYOUTS.register("split_class_folders")
class SplitClassFolders(_FolderLayout):
    priority = 12

    @staticmethod
    def detect(path: Path) -> bool:
        split_dirs = [d for d in subdirs(path) if canonical_split(d)]
        return bool(split_dirs) and all(subdirs(path / d) for d in split_dirs)

    @staticmethod
    def entries(path: Path) -> list[tuple[str, str, str]]:
        out = []
        for s in subdirs(path):
            if split := canonical_split(s):
                for d in subdirs(path / s):
                    out += [(str(path / s / d / f), d, split) for f in image_files(path / s / d)]
        return out


@LAYOUTS.register("class_folders")
class ClassFolders(_FolderLayout):
    priority = 13

    @staticmethod
    def detect(path: Path) -> bool:
        return any(image_files(path / d) for d in subdirs(path))

    @staticmethod
    def entries(path: Path) -> list[tuple[str, str, str]]:
        out = []
        for d in subdirs(path):
            out += [(str(path / d / f), d, "") for f in image_files(path / d)]
        return out


@LAYOUTS.register("image_folder")
class ImageFolder(_FolderLayout):
    priority = 14

    @staticmethod
    def detect(path: Path) -> bool:
        return bool(image_files(path))

    @staticmethod
    def entries(path: Path) -> list[tuple[str, str, str]]:
        return [(str(path / f), "", "") for f in image_files(path)]


def detect(path: str | Path) -> str:
    """Name of the layout at ``path``; ``DataFormatError`` if none fits."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    candidates = sorted(
        (LAYOUTS.get(n) for n in LAYOUTS.names() if LAYOUTS.get(n).on_file == path.is_file()),
        key=lambda layout: layout.priority,
    )
    for layout in candidates:
        if layout.detect(path):
            return next(n for n in LAYOUTS.names() if LAYOUTS.get(n) is layout)
    if path.is_file():
        suffix = suffix_of(path.name)
        raise DataFormatError(f"{path}: cannot read a data set from a {suffix or 'suffix-less'} file")
    dirs = subdirs(path)
    nested = [d for d in dirs if any(image_files(path / d / s) for s in subdirs(path / d))]
    hint = f"; it holds several data sets, open one of {nested}" if nested else ""
    raise DataFormatError(f"{path}: no image files (.npy, .png, .fits) found in a known layout{hint}")
