"""Convert any readable layout into a deeplense data set directory, keeping labels and targets.

Each image keeps its label, canonical and original class name, split (stored, or a seeded
stratified split written down here), every numeric metadata column (regression targets such as
the axion files' ``value``) and the file it came from. Shards are written under a temporary name
and renamed, so an interrupted conversion resumes where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from deeplense.core import dataset_dir as fmt
from deeplense.core.config import ConfigError, dump_yaml, load_yaml
from deeplense.core.locks import locked
from deeplense.data.base import ImageSource
from deeplense.data.splits import DEFAULT_FRACTIONS, assign_splits

__all__ = ["convert_dataset"]


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
    out = Path(out)
    if (out / fmt.MANIFEST).exists():
        raise ConfigError("out", f"{out} already holds a complete data set")
    if out.exists() and any(p.name not in (fmt.SHARD_DIR, fmt.CONFIG, fmt.LOCK) for p in out.iterdir()):
        raise ConfigError("out", f"{out} exists, is not empty and is not a conversion in progress")
    out.mkdir(parents=True, exist_ok=True)
    with locked(out):
        return _convert_locked(source, out, shard_size, split_seed, split_fractions, compression, progress)


def _convert_locked(
    source: ImageSource,
    out: Path,
    shard_size: int,
    split_seed: int,
    split_fractions: dict[str, float] | None,
    compression: str | None,
    progress: Callable[[int, int], None] | None,
) -> dict:
    """The body of :func:`convert_dataset`, run while holding the output's lock."""
    if (source.splits == "").any():
        assign_splits(source, split_fractions or DEFAULT_FRACTIONS, split_seed)
        split_note = {"assigned": True, "seed": split_seed, "fractions": split_fractions or DEFAULT_FRACTIONS}
    else:
        split_note = {"assigned": False}
    meta = source.metadata
    split_names = sorted(set(meta["split"]), key=lambda s: (["train", "val", "test"] + [s]).index(s))
    columns = source.parameter_columns
    config = {
        "converted_from": {"path": str(Path(source.root).resolve()), "layout": source.layout, "split": split_note},
        "classes": {name: {"original": orig} for name, orig in zip(source.class_names, source.original_class_names)},
        "dataset": {"n_images": len(source), "shard_size": shard_size, "format_version": fmt.FORMAT_VERSION},
    }
    if (out / fmt.CONFIG).exists():  # an interrupted conversion: only the same source may finish it
        stored = load_yaml(out / fmt.CONFIG)
        for key in ("converted_from", "dataset", "classes"):
            if stored.get(key) != json.loads(json.dumps(config[key])):
                raise ConfigError(
                    key, f"{out} holds an interrupted conversion of another source or settings; use another --out"
                )
    (out / fmt.SHARD_DIR).mkdir(parents=True, exist_ok=True)
    dump_yaml(config, out / fmt.CONFIG)
    fmt.remove_temporaries(out)
    n = len(source)
    shards, done = [], 0
    files = meta["file"].astype(str).to_numpy() if "file" in meta else None
    split_codes = np.array([split_names.index(s) for s in meta["split"]], dtype=np.uint8)
    for shard_id, start in enumerate(range(0, n, shard_size)):
        stop = min(start + shard_size, n)
        if not fmt.shard_complete(fmt.shard_path(out, shard_id), start, stop):
            idx = np.arange(start, stop)
            images = source.images(idx)
            fmt.ensure_free_space(out, images.nbytes + 1024 * len(idx))
            with fmt.open_shard(out, shard_id, start, stop) as f:
                f.create_dataset("images", data=images, chunks=(1, *images.shape[1:]), compression=compression)
                params = {col: (meta[col].to_numpy(np.float64)[idx], source.units.get(col, "")) for col in columns}
                fmt.write_columns(
                    f,
                    idx,
                    source.labels[idx],
                    split_codes[idx],
                    np.zeros(len(idx), dtype=np.uint64),
                    params,
                    files=files[idx] if files is not None else None,
                )
        done = stop
        if progress:
            progress(done, n)
        shards.append(fmt.shard_entry(out, shard_id, start, stop))
    counts = {
        c: {s: int(((meta["class_name"] == c) & (meta["split"] == s)).sum()) for s in split_names}
        for c in source.class_names
    }
    manifest = {
        **fmt.manifest_header(n),
        "preset": None,
        "converted_from": config["converted_from"],
        "seed": None,
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
    fmt.write_manifest(out, manifest)
    return manifest
