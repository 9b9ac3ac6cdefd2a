"""Convert any readable layout into a deeplense data set directory, keeping labels and targets.

Each image keeps its label, canonical and original class name, split (stored, or a seeded
stratified split written down here), every numeric metadata column (regression targets such as
the axion files' ``value``) and the file it came from. Shards are written under a temporary name
and renamed, so an interrupted conversion resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from deeplense.config import ConfigError, dump_yaml
from deeplense.data.base import ImageSource
from deeplense.data.splits import DEFAULT_FRACTIONS, assign_splits
from deeplense.sim.writer import FORMAT_VERSION, SHARD_DIR, shard_path

__all__ = ["convert_dataset"]


def _complete(path: Path, start: int, stop: int) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return int(f.attrs["start"]) == start and int(f.attrs["stop"]) == stop
    except (OSError, KeyError):
        return False


def convert_dataset(
    source: ImageSource,
    out: str | Path,
    *,
    shard_size: int = 1024,
    split_seed: int = 0,
    split_fractions: dict[str, float] | None = None,
    compression: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write ``source`` as a deeplense data set at ``out``; returns the manifest."""
    from deeplense import __version__

    out = Path(out)
    if (out / "manifest.json").exists():
        raise ConfigError("out", f"{out} already holds a complete data set")
    if out.exists() and any(p.name != SHARD_DIR and p.name != "config.yaml" for p in out.iterdir()):
        raise ConfigError("out", f"{out} exists, is not empty and is not a conversion in progress")
    if (source.splits == "").any():
        assign_splits(source, split_fractions or DEFAULT_FRACTIONS, split_seed)
        split_note = {"assigned": True, "seed": split_seed, "fractions": split_fractions or DEFAULT_FRACTIONS}
    else:
        split_note = {"assigned": False}
    meta = source.metadata
    split_names = sorted(set(meta["split"]), key=lambda s: (["train", "val", "test"] + [s]).index(s))
    columns = source.parameter_columns
    config = {
        "converted_from": {"path": str(source.root), "layout": source.layout, "split": split_note},
        "classes": {name: {"original": orig} for name, orig in zip(source.class_names, source.original_class_names)},
        "dataset": {"n_images": len(source), "shard_size": shard_size, "format_version": FORMAT_VERSION},
    }
    (out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    dump_yaml(config, out / "config.yaml")
    for stale in (out / SHARD_DIR).glob("*.tmp"):
        stale.unlink()
    n = len(source)
    shards, done = [], 0
    files = meta["file"].astype(str).to_numpy() if "file" in meta else None
    split_codes = np.array([split_names.index(s) for s in meta["split"]], dtype=np.uint8)
    for shard_id, start in enumerate(range(0, n, shard_size)):
        stop = min(start + shard_size, n)
        final = shard_path(out, shard_id)
        if not _complete(final, start, stop):
            tmp = final.with_name(final.name + f".{os.getpid()}.tmp")
            idx = np.arange(start, stop)
            with h5py.File(tmp, "w") as f:
                images = source.images(idx)
                f.create_dataset("images", data=images, chunks=(1, *images.shape[1:]), compression=compression)
                f["index"] = idx.astype(np.int64)
                f["label"] = source.labels[idx].astype(np.int16)
                f["split"] = split_codes[idx]
                f["seed"] = np.zeros(len(idx), dtype=np.uint64)
                if files is not None:
                    f.create_dataset("file", data=files[idx].astype(object), dtype=h5py.string_dtype())
                params = f.create_group("params")
                for col in columns:
                    params[col] = meta[col].to_numpy(np.float64)[idx]
                    params[col].attrs["unit"] = source.units.get(col, "")
                f.attrs.update(shard_id=shard_id, start=start, stop=stop, deeplense_version=__version__)
            os.replace(tmp, final)
        done = stop
        if progress:
            progress(done, n)
        shards.append(
            {"file": str(final.relative_to(out)), "start": start, "stop": stop, "bytes": final.stat().st_size}
        )
    counts = {
        c: {s: int(((meta["class_name"] == c) & (meta["split"] == s)).sum()) for s in split_names}
        for c in source.class_names
    }
    manifest = {
        "format": "deeplense-dataset",
        "format_version": FORMAT_VERSION,
        "deeplense_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "preset": None,
        "converted_from": config["converted_from"],
        "seed": None,
        "n_images": n,
        "class_names": source.class_names,
        "original_class_names": source.original_class_names,
        "split_names": split_names,
        "counts": counts,
        "image": {
            "shape": list(source.image_shape),
            "dtype": "float32",
            "bands": None,
            "pixel_scale_arcsec": None,
            "pixel_units": None,
        },
        "columns": [{"name": c, "unit": source.units.get(c, ""), "doc": ""} for c in columns],
        "shards": shards,
        "complete": True,
    }
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, out / "manifest.json")
    return manifest
