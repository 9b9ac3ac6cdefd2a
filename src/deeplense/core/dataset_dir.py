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

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from deeplense.core.errors import DataFormatError

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
]

FORMAT = "deeplense-dataset"
FORMAT_VERSION = 1
SHARD_DIR = "shards"
MANIFEST = "manifest.json"
CONFIG = "config.yaml"


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


def shard_entry(root: str | Path, shard_id: int, start: int, stop: int) -> dict[str, Any]:
    """The manifest's record of a written shard."""
    path = shard_path(root, shard_id)
    return {"file": str(path.relative_to(root)), "start": start, "stop": stop, "bytes": path.stat().st_size}


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
    """``manifest.json`` of a complete data set, or a :class:`DataFormatError` naming the file."""
    path = Path(root) / MANIFEST
    if not path.exists():
        raise DataFormatError(f"{path}: missing; the data set is incomplete (rerun the simulate command)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise DataFormatError(f"{path}: expected a JSON object")
    return manifest


def read_shard_columns(path: Path, n_rows: int) -> dict[str, np.ndarray]:
    """The per-image columns of one shard (index, label, split code, seed, file, parameters)."""
    try:
        with h5py.File(path, "r") as f:
            if f["images"].shape[0] != n_rows:
                raise DataFormatError(f"{path}: images has {f['images'].shape[0]} rows, the manifest says {n_rows}")
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
    return data
