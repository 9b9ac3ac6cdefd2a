"""Readers for every DeepLense data layout, behind one entry point: :func:`open_dataset`.

Detected layouts (``../docs/data_format.md`` lists them with examples):

``deeplense``            our own directory (manifest.json + HDF5 shards)
``class_folders``        ``ROOT/{class}/*.{npy,png,fits}`` such as ``Model_I/{axion,cdm,no_sub}``
``split_class_folders``  ``ROOT/{train,val,test}/{class}/*`` such as the GSoC ``{train,val}/{no,sphere,vort}``
``split_prefixed_folders`` ``ROOT/{split}_{class}/*`` such as ``{train,test}_{lenses,nonlenses}``
``image_folder``         ``ROOT/*.{npy,png,fits}`` without labels
``stacked_array``        one ``.npy`` of N images (``(N,1,H,W)``, ``(N,H,W)``, ``(N,H*W)`` ...; int16
                         memmaps included) with a label or target file next to it
``fits_cube``            one FITS file with a cube of images, labels in an optional table extension
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from deeplense.core import dataset_dir as fmt
from deeplense.data.base import BadFile, DataFormatError, ImageSource
from deeplense.data.decode import MAX_BANDS, Decoded, decode_array, decoded_shape
from deeplense.data.safe_npy import load_npy, read_header
from deeplense.data.vocabulary import canonical_class, canonical_split, class_order

__all__ = ["open_dataset", "detect_layout", "FileFolderReader", "StackedArrayReader", "FitsCubeReader"]

NPY = (".npy",)
PNG = (".png", ".jpg", ".jpeg")
FITS = (".fits", ".fit", ".fts", ".fits.gz")
IMAGE_SUFFIXES = NPY + PNG + FITS
CHECKS = ("header", "full")


def _suffix(path: str) -> str:
    name = path.lower()
    return ".fits.gz" if name.endswith(".fits.gz") else os.path.splitext(name)[1]


def _is_image_file(name: str) -> bool:
    return _suffix(name) in IMAGE_SUFFIXES and not name.startswith(".")


def _image_files(folder: Path) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_file() and _is_image_file(e.name))


def _subdirs(folder: Path) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


# --------------------------------------------------------------------------------------- files


def load_png(path: str) -> Decoded:
    """PNG/JPEG as (C, H, W) float32 in [0, 1] (8- or 16-bit); alpha dropped."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            array = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"cannot read the image ({exc})") from None
    scale = 65535.0 if array.dtype == np.uint16 or array.max(initial=0) > 255 else 255.0
    if array.ndim == 3 and array.shape[-1] == 4:
        array = array[..., :3]
    image = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
    return Decoded(np.ascontiguousarray(image, dtype=np.float32) / np.float32(scale))


def _fits_data(path: str):
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdus:
            for hdu in hdus:
                if hdu.is_image and hdu.data is not None and hdu.data.size:
                    return np.asarray(hdu.data), hdus
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"cannot read FITS ({exc})") from None
    raise ValueError("no image HDU with data")


def load_fits(path: str) -> Decoded:
    """One image per FITS file: the first image HDU, 2-D or (C, H, W)."""
    data, _ = _fits_data(path)
    if data.ndim == 3 and data.shape[0] > MAX_BANDS:
        raise ValueError(f"holds a cube of {data.shape[0]} images; open the file itself as a cube")
    return decode_array(data.astype(np.float32))


def load_npy_image(path: str) -> Decoded:
    return decode_array(load_npy(path))


LOADERS: dict[str, Callable[[str], Decoded]] = {
    **dict.fromkeys(NPY, load_npy_image),
    **dict.fromkeys(PNG, load_png),
    **dict.fromkeys(FITS, load_fits),
}


def _peek(path: str) -> tuple[tuple[int, int, int] | None, bool]:
    """Decoded shape from the header alone (npy), and whether the file must be read for its
    metadata (object arrays and labelled arrays). ``ValueError`` for truncated or unreadable headers."""
    if _suffix(path) not in NPY:
        return None, False
    header = read_header(path)
    if header.dtype.hasobject:
        return None, True
    expected = header.expected_size
    if header.file_size < expected:
        raise ValueError(f"truncated ({header.file_size} bytes, the header's {header.shape} needs {expected})")
    kind, shape = decoded_shape(header.shape)
    return shape, kind in ("flat+label", "image+label_row")


def bad_files_message(root, bad: list[BadFile], lead: str = "") -> str:
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
        self, root: Path, entries: list[tuple[str, str, str]], layout: str, check: str = "header", progress=None
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
        self._loader_for = [LOADERS[_suffix(p)] for p in self._files]

    @staticmethod
    def _describe(path: str, check: str) -> dict:
        shape, must_read = _peek(path)
        row: dict = {}
        if check == "full" or must_read or shape is None:
            decoded = LOADERS[_suffix(path)](path)
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


def _labels_table(labels: np.ndarray, n: int, where: str, name: str) -> tuple[pd.DataFrame, list[str]]:
    """Integer labels (or one-hot rows) -> classes; anything else -> regression target ``name``."""
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
    integral = np.all(labels == np.round(labels)) and len(np.unique(labels)) <= 64
    if integral:
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

    def images(self, indices) -> np.ndarray:
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
        from astropy.io import fits

        self.root, self.bad_files = path, []
        try:
            with fits.open(path, memmap=False) as hdus:
                cube = next((np.asarray(h.data) for h in hdus if h.is_image and h.data is not None), None)
                table = next((h.data for h in hdus if isinstance(h, fits.BinTableHDU)), None)
                columns = {c.name: np.asarray(table[c.name]) for c in table.columns} if table is not None else {}
        except (OSError, ValueError, TypeError) as exc:
            raise DataFormatError(f"{path}: cannot read FITS ({exc})") from None
        if cube is None:
            raise DataFormatError(f"{path}: no image HDU with data")
        if cube.ndim == 2:
            cube = cube[None]
        self._images = _as_images(cube.astype(np.float32), str(path))
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

    def images(self, indices) -> np.ndarray:
        return self._images[np.asarray(indices, dtype=np.int64)]


# ------------------------------------------------------------------------------------- detect


def detect_layout(path: str | Path) -> str:
    """Name of the layout at ``path`` (see the module docstring); ``DataFormatError`` if none fits."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if path.is_file():
        suffix = _suffix(path.name)
        if suffix in NPY:
            return "stacked_array"
        if suffix in FITS:
            return "fits_cube"
        raise DataFormatError(f"{path}: cannot read a data set from a {suffix or 'suffix-less'} file")
    if (path / fmt.MANIFEST).exists() or (path / fmt.CONFIG).exists() and (path / fmt.SHARD_DIR).is_dir():
        return "deeplense"
    subdirs = _subdirs(path)
    prefixed = [d for d in subdirs if "_" in d and canonical_split(d.split("_", 1)[0])]
    if prefixed and len(prefixed) == len([d for d in subdirs if _image_files(path / d)]):
        return "split_prefixed_folders"
    split_dirs = [d for d in subdirs if canonical_split(d)]
    if split_dirs and all(_subdirs(path / d) for d in split_dirs):
        return "split_class_folders"
    class_dirs = [d for d in subdirs if _image_files(path / d)]
    if class_dirs:
        return "class_folders"
    if _image_files(path):
        return "image_folder"
    nested = [d for d in subdirs if any(_image_files(path / d / s) for s in _subdirs(path / d))]
    hint = f"; it holds several data sets, open one of {nested}" if nested else ""
    raise DataFormatError(f"{path}: no image files (.npy, .png, .fits) found in a known layout{hint}")


def _entries(path: Path, layout: str) -> list[tuple[str, str, str]]:
    """(file, original class name, split) for every image file of a folder layout."""
    out = []
    if layout == "class_folders":
        for d in _subdirs(path):
            out += [(str(path / d / f), d, "") for f in _image_files(path / d)]
    elif layout == "split_class_folders":
        for s in _subdirs(path):
            if split := canonical_split(s):
                for d in _subdirs(path / s):
                    out += [(str(path / s / d / f), d, split) for f in _image_files(path / s / d)]
    elif layout == "split_prefixed_folders":
        for d in _subdirs(path):
            head, _, cls = d.partition("_")
            if (split := canonical_split(head)) and cls:
                out += [(str(path / d / f), cls, split) for f in _image_files(path / d)]
    elif layout == "image_folder":
        out = [(str(path / f), "", "") for f in _image_files(path)]
    return out


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
    progress=None,
) -> ImageSource:
    """Open any DeepLense data layout (detected) or a deeplense directory.

    ``split`` keeps one split: stored splits are used where the data have them; otherwise a
    seeded stratified split (``split_fractions``, default 0.8/0.1/0.1, ``split_seed``) or the
    one written in ``split_file`` (see :func:`deeplense.data.splits.save_split`).
    ``check='full'`` reads every file up front (NaN/Inf, unreadable data). Bad files raise a
    ``DataFormatError`` listing them, or are left out with ``on_bad_file='skip'`` (``.bad_files``).
    ``labels`` names the label/target file of a stacked array when it is not found by name.
    """
    from deeplense.data.dataset import ShardedDataset
    from deeplense.data.splits import assign_splits, load_split

    if check not in CHECKS:
        raise ValueError(f"check must be one of {CHECKS}, got {check!r}")
    if on_bad_file not in ("error", "skip"):
        raise ValueError(f"on_bad_file must be 'error' or 'skip', got {on_bad_file!r}")
    path = Path(path)
    layout = detect_layout(path)
    if layout == "deeplense":
        source: ImageSource = ShardedDataset(path)
    elif layout == "stacked_array":
        source = StackedArrayReader(path, Path(labels) if labels else None)
    elif layout == "fits_cube":
        source = FitsCubeReader(path)
    else:
        source = FileFolderReader(path, _entries(path, layout), layout, check=check, progress=progress)
    if source.bad_files and on_bad_file == "error":
        raise DataFormatError(
            bad_files_message(path, source.bad_files) + "\n(fix or remove them, or skip them with --on-bad-file skip)"
        )
    if split_file is not None:
        load_split(source, split_file)
    elif (source.splits == "").all() and split is not None:
        assign_splits(source, split_fractions, split_seed)
    return source.subset(split) if split is not None else source
