"""The data-set directory: the one module that names, writes and checks its files.

Layout::

    config.yaml      how the images were made (simulation config, or the converted source), and
                     the ``dataset`` section (sizes, seed, splits, format version)
    manifest.json    written last: version, counts per class and split, schema, shard list
    shards/shard-00000.h5 ...

Each shard holds a contiguous index range: ``images (N, C, H, W) float32`` chunked one image per
chunk, ``index``, ``label``, ``split`` (code into the manifest's ``split_names``), ``seed``, an
optional ``file`` column, ``params/<column>`` with a ``unit`` attribute, and the attributes
``shard_id, start, stop, deeplense_version``. A shard is written under a temporary name and
renamed when whole, so a directory only ever holds complete shards; the simulator and
``data convert`` both write through :func:`open_shard` and resume through :func:`shard_complete`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from deeplense.core.errors import DataFormatError
from deeplense.core.locks import LOCK

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "SHARD_DIR",
    "MANIFEST",
    "CONFIG",
    "shard_path",
    "open_shard",
    "write_columns",
    "shard_complete",
    "remove_temporaries",
    "shard_entry",
    "write_manifest",
    "read_manifest",
    "read_shard_columns",
    "manifest_header",
    "validate_manifest",
    "shard_file",
    "check_self_contained",
    "file_sha256",
    "verify",
    "LOCK",
    "ensure_free_space",
]

FORMAT = "deeplense-dataset"
FORMAT_VERSION = 1
SHARD_DIR = "shards"
MANIFEST = "manifest.json"
CONFIG = "config.yaml"


def ensure_free_space(root: str | Path, needed: int) -> None:
    """Raise ``OSError(ENOSPC)`` naming ``root`` before a write of ``needed`` bytes that the disk
    cannot take (with 10 % and 64 KiB to spare): HDF5 can crash outright when a write fails for
    lack of space, so the check comes first."""
    free = shutil.disk_usage(root).free
    if free < needed * 1.1 + 2**16:
        raise OSError(errno.ENOSPC, f"needs about {needed / 2**20:.1f} MiB, {free / 2**20:.1f} MiB free", str(root))


def shard_path(root: str | Path, shard_id: int) -> Path:
    """Where shard ``shard_id`` of the data set at ``root`` lives."""
    return Path(root) / SHARD_DIR / f"shard-{shard_id:05d}.h5"


@contextmanager
def open_shard(root: str | Path, shard_id: int, start: int, stop: int) -> Iterator[h5py.File]:
    """An HDF5 file to fill with images ``start..stop-1``; on a clean exit its attributes are
    set and it is renamed into place, on an error the partial file is removed."""
    from deeplense.core.version import __version__

    final = shard_path(root, shard_id)
    tmp = final.with_name(final.name + f".{os.getpid()}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            yield f
            f.attrs.update(shard_id=shard_id, start=start, stop=stop, deeplense_version=__version__)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_columns(
    f: h5py.File,
    indices: np.ndarray,
    labels: np.ndarray,
    split_codes: np.ndarray,
    seeds: np.ndarray,
    params: dict[str, tuple[np.ndarray, str]],
    files: np.ndarray | None = None,
) -> None:
    """The per-image rows of a shard: index, label, split code, seed, optional source file, and
    one ``params/<name>`` column per parameter (values, unit)."""
    f["index"] = np.asarray(indices).astype(np.int64)
    f["label"] = np.asarray(labels).astype(np.int16)
    f["split"] = np.asarray(split_codes).astype(np.uint8)
    f["seed"] = np.asarray(seeds, dtype=np.uint64)
    if files is not None:
        f.create_dataset("file", data=np.asarray(files).astype(object), dtype=h5py.string_dtype())
    group = f.create_group("params")
    for name, (values, unit) in params.items():
        group[name] = values
        group[name].attrs["unit"] = unit


def shard_complete(path: Path, start: int, stop: int) -> bool:
    """Whether ``path`` is a whole shard of images ``start..stop-1`` (the resume check)."""
    try:
        with h5py.File(path, "r") as f:
            return (
                int(f.attrs["start"]) == start and int(f.attrs["stop"]) == stop and f["images"].shape[0] == stop - start
            )
    except (OSError, KeyError):
        return False


def remove_temporaries(root: str | Path) -> None:
    """Drop the partial shards an interrupted run left behind."""
    for stale in (Path(root) / SHARD_DIR).glob("*.tmp"):
        stale.unlink()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def shard_entry(root: str | Path, shard_id: int, start: int, stop: int) -> dict[str, Any]:
    """The manifest's record of a written shard, with its checksum."""
    path = shard_path(root, shard_id)
    return {
        "file": str(path.relative_to(root)),
        "start": start,
        "stop": stop,
        "bytes": path.stat().st_size,
        "sha256": file_sha256(path),
    }


def manifest_header(n_images: int) -> dict[str, Any]:
    """The fields every manifest starts with."""
    from deeplense.core.version import __version__

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "deeplense_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "n_images": n_images,
    }


def write_manifest(root: str | Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` atomically: its presence marks the data set complete."""
    tmp = Path(root) / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, Path(root) / MANIFEST)


def read_manifest(root: str | Path) -> dict[str, Any]:
    """``manifest.json`` of a complete data set, checked (:func:`validate_manifest`), or a
    :class:`DataFormatError` naming the file and field."""
    path = Path(root) / MANIFEST
    if not path.exists():
        raise DataFormatError(f"{path}: missing; the data set is incomplete (rerun the simulate command)")
    if path.stat().st_size > 64 * 2**20:
        raise DataFormatError(f"{path}: {path.stat().st_size} bytes, far larger than any manifest; refused")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: not valid JSON ({exc})") from None
    validate_manifest(manifest, path)
    return manifest


def _field(manifest: dict[str, Any], key: str, kind: type | tuple[type, ...], where: Path) -> Any:
    value = manifest.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DataFormatError(f"{where}: field {key!r} is missing or not a {getattr(kind, '__name__', kind)}")
    return value


def _names(manifest: dict[str, Any], key: str, where: Path) -> list[str]:
    names = _field(manifest, key, list, where)
    if not names or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise DataFormatError(f"{where}: field {key!r} must be a non-empty list of distinct names")
    return names


def validate_manifest(manifest: Any, where: Path) -> None:
    """Types and consistency of a manifest: names, image shape, columns, and shards that cover
    ``0..n_images-1`` in order, each a file inside ``shards/``."""
    if not isinstance(manifest, dict):
        raise DataFormatError(f"{where}: expected a JSON object")
    _names(manifest, "class_names", where)
    _names(manifest, "split_names", where)
    image = _field(manifest, "image", dict, where)
    shape = image.get("shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(type(v) is int and 0 < v <= 8192 for v in shape)):
        raise DataFormatError(
            f"{where}: field 'image.shape' must be [bands, height, width] of positive sizes, got {shape!r}"
        )
    columns = _field(manifest, "columns", list, where)
    if not all(
        isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("unit"), str) for c in columns
    ):
        raise DataFormatError(f"{where}: field 'columns' must list {{name, unit}} entries")
    n_images = _field(manifest, "n_images", int, where)
    shards = _field(manifest, "shards", list, where)
    expected_start = 0
    for number, shard in enumerate(shards):
        here = f"shards[{number}]"
        if not isinstance(shard, dict):
            raise DataFormatError(f"{where}: field {here!r} is not an object")
        start, stop = shard.get("start"), shard.get("stop")
        if type(start) is not int or type(stop) is not int or start != expected_start or stop <= start:
            raise DataFormatError(
                f"{where}: field '{here}' covers {start!r}..{stop!r}; expected to start at {expected_start}"
            )
        shard_file(where.parent, shard.get("file"), f"{where}: field '{here}.file'")
        expected_start = stop
    if expected_start != n_images:
        raise DataFormatError(f"{where}: the shards hold {expected_start} images, field 'n_images' says {n_images}")


def shard_file(root: str | Path, name: Any, where: str) -> Path:
    """The path of a shard named in a manifest: a plain file inside ``root/shards`` (no absolute
    path, no ``..``, no link leading elsewhere)."""
    if not isinstance(name, str) or not name:
        raise DataFormatError(f"{where}: expected a file name, got {name!r}")
    base = (Path(root) / SHARD_DIR).resolve()
    path = (Path(root) / name).resolve()
    if Path(name).is_absolute() or base not in path.parents:
        raise DataFormatError(f"{where}: {name!r} is outside the data set's {SHARD_DIR}/ folder; refused")
    return path


def check_self_contained(f: h5py.File, path: Path) -> None:
    """Refuse HDF5 content that reads other files: external links, soft links, external storage
    and virtual datasets."""
    stack: list[h5py.Group] = [f]
    while stack:
        group = stack.pop()
        for name in group:
            link = group.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink | h5py.SoftLink):
                raise DataFormatError(f"{path}: {group.name}/{name} is a link to {link.path!r}; refused")
            item = group[name]
            if isinstance(item, h5py.Group):
                stack.append(item)
            elif isinstance(item, h5py.Dataset) and (item.external or item.is_virtual):
                raise DataFormatError(f"{path}: {item.name} stores its data in other files; refused")


def read_shard_columns(
    path: Path,
    n_rows: int,
    image_shape: tuple[int, ...] | None = None,
    n_classes: int | None = None,
    n_splits: int | None = None,
    start: int | None = None,
) -> dict[str, np.ndarray]:
    """The per-image columns of one shard (index, label, split code, seed, file, parameters),
    checked against the manifest: row count, image shape, label and split codes in range, the
    index range, and no content read from other files."""
    try:
        with h5py.File(path, "r") as f:
            check_self_contained(f, path)
            images = f["images"]
            if images.shape[0] != n_rows:
                raise DataFormatError(f"{path}: images has {images.shape[0]} rows, the manifest says {n_rows}")
            if image_shape is not None and tuple(images.shape[1:]) != tuple(image_shape):
                raise DataFormatError(
                    f"{path}: images are {tuple(images.shape[1:])}, the manifest says {tuple(image_shape)}"
                )
            data = {
                "index": f["index"][:],
                "label": f["label"][:].astype(np.int64),
                "split": f["split"][:],
                "seed": f["seed"][:],
            }
            if "file" in f:
                data["file"] = f["file"].asstr()[:]
            data.update({name: f["params"][name][:] for name in f["params"]})
    except OSError as exc:
        raise DataFormatError(f"{path}: cannot read shard ({exc})") from None
    except KeyError as exc:
        raise DataFormatError(f"{path}: missing field {exc}") from None
    for name, column in data.items():
        if np.ndim(column) != 1 or len(column) != n_rows:
            raise DataFormatError(f"{path}: column {name!r} has shape {np.shape(column)}, expected ({n_rows},)")
    if n_classes is not None and ((data["label"] < 0) | (data["label"] >= n_classes)).any():
        raise DataFormatError(f"{path}: labels outside 0..{n_classes - 1} (the manifest's class_names)")
    if n_splits is not None and (data["split"].astype(np.int64) >= n_splits).any():
        raise DataFormatError(f"{path}: split codes outside 0..{n_splits - 1} (the manifest's split_names)")
    if start is not None and not np.array_equal(data["index"], np.arange(start, start + n_rows)):
        raise DataFormatError(f"{path}: index column is not {start}..{start + n_rows - 1} as the manifest says")
    return data


def verify(root: str | Path) -> dict[str, Any]:
    """Check a data set's files against its manifest: each shard's SHA-256 where one is
    recorded (data sets written before 2026-12-03 record none), and every shard's structure.
    Returns ``{"shards": n, "checksummed": n, "problems": [message, ...]}``."""
    root = Path(root)
    manifest = read_manifest(root)
    problems, checksummed = [], 0
    shape = tuple(manifest["image"]["shape"])
    for number, shard in enumerate(manifest["shards"]):
        path = shard_file(root, shard["file"], f"{root / MANIFEST}: shards[{number}].file")
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        recorded = shard.get("sha256")
        if recorded is not None:
            checksummed += 1
            actual = file_sha256(path)
            if actual != recorded:
                problems.append(f"{path}: SHA-256 {actual[:16]}... differs from the manifest's {str(recorded)[:16]}...")
                continue
        try:
            n = shard["stop"] - shard["start"]
            read_shard_columns(
                path, n, shape, len(manifest["class_names"]), len(manifest["split_names"]), shard["start"]
            )
            with h5py.File(path, "r") as f:
                for lo in range(0, n, 256):
                    block = f["images"][lo : lo + 256]
                    if not np.isfinite(block).all():
                        problems.append(f"{path}: non-finite pixels in images {shard['start'] + lo}..")
                        break
        except DataFormatError as exc:
            problems.append(str(exc))
    return {"shards": len(manifest["shards"]), "checksummed": checksummed, "problems": problems}
