"""Write simulated data sets: sharded HDF5, deterministic, resumable, parallel.

The directory's files are named, written and checked by :mod:`deeplense.core.dataset_dir`.
Labels repeat a fixed pattern in which class ``c`` appears ``class_weights[c]`` times (one each by
default: image ``i`` has label ``i % n_classes``), so any prefix keeps the class proportions; seed
``SeedSequence([seed, i])``. Each shard holds a contiguous index range and is written under a
temporary name, then renamed: an interrupted run leaves only complete shards, and running the same
command again writes the missing ones without losing or duplicating an image.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from deeplense.core import dataset_dir as fmt
from deeplense.core.config import ConfigError, dump_yaml, load_yaml
from deeplense.core.locks import locked
from deeplense.core.seeding import image_seed

__all__ = ["DatasetPlan", "parse_splits", "write_dataset"]


def parse_splits(text: str | dict[str, float], where: str = "split") -> dict[str, float]:
    """``'train=0.8,val=0.1,test=0.1'`` (or a mapping) -> fractions summing to 1 (checked);
    errors name ``where``."""
    if isinstance(text, dict):
        items = dict(text)
        for name, frac in items.items():
            if not isinstance(frac, int | float) or isinstance(frac, bool):
                raise ConfigError(f"{where}.{name}", f"not a number: {frac!r}")
    elif not isinstance(text, str):
        raise ConfigError(where, f"expected name=fraction pairs, got {text!r}")
    else:
        items = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            if "=" not in part:
                raise ConfigError(where, f"expected name=fraction, got {part!r}")
            name, value = part.split("=", 1)
            try:
                items[name.strip()] = float(value)
            except ValueError:
                raise ConfigError(f"{where}.{name.strip()}", f"not a number: {value!r}") from None
    if not items:
        raise ConfigError(where, "at least one split is needed")
    for name, frac in items.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(f"{where}.{name}", "split names are identifiers such as train, val, test")
        if not 0 <= frac <= 1 or not math.isfinite(frac):
            raise ConfigError(f"{where}.{name}", f"fraction must be in [0, 1], got {frac}")
    if abs(sum(items.values()) - 1) > 1e-6:
        raise ConfigError(where, f"fractions must sum to 1, got {sum(items.values()):.6g}")
    return items


@dataclass(frozen=True)
class DatasetPlan:
    """Sizes, seed and split of a data set; fixes every image's index, label, seed and split."""

    n_per_class: int
    n_classes: int
    seed: int
    splits: dict[str, float]
    shard_size: int = 256
    #: Images of each class per group (lens finding: [1, 10] for 1 lens per 10 non-lenses; a zero
    #: leaves a class out while keeping the label vocabulary).
    class_weights: list[int] | None = None

    def __post_init__(self):
        weights = self.class_weights
        if weights is not None and (
            len(weights) != self.n_classes or any(int(w) != w or w < 0 for w in weights) or sum(weights) < 1
        ):
            raise ConfigError(
                "class_weights", f"need {self.n_classes} non-negative integers, not all zero, got {weights}"
            )
        if self.n_per_class < 1:
            raise ConfigError("n_per_class", f"need at least 1 image per class, got {self.n_per_class}")
        if self.seed < 0:
            raise ConfigError("seed", f"seeds are non-negative, got {self.seed}")
        if self.shard_size < 1:
            raise ConfigError("shard_size", f"need at least 1 image per shard, got {self.shard_size}")
        parse_splits(self.splits)

    @property
    def label_pattern(self) -> np.ndarray:
        """Labels of one group of images; the data set repeats it ``n_per_class`` times."""
        return np.repeat(np.arange(self.n_classes), self.class_weights or [1] * self.n_classes)

    @property
    def n_total(self) -> int:
        return self.n_per_class * len(self.label_pattern)

    def labels(self, indices: np.ndarray) -> np.ndarray:
        pattern = self.label_pattern
        return pattern[np.asarray(indices) % len(pattern)]

    def splits_of(self, indices: np.ndarray) -> np.ndarray:
        """Split codes: whole groups share a split, so every split keeps the class proportions."""
        return self.split_codes()[np.asarray(indices) // len(self.label_pattern)]

    @property
    def split_names(self) -> list[str]:
        return list(self.splits)

    def split_codes(self) -> np.ndarray:
        """Split code of every group: a seeded permutation cut at exact counts, so each class is
        split in the same proportions (stratified)."""
        n = self.n_per_class
        counts = [int(math.floor(f * n)) for f in self.splits.values()]
        order = np.argsort([-(f * n - c) for f, c in zip(self.splits.values(), counts)], kind="stable")
        for k in order[: n - sum(counts)]:
            counts[k] += 1
        codes = np.repeat(np.arange(len(counts), dtype=np.uint8), counts)
        perm = np.random.default_rng(np.random.SeedSequence([self.seed, 0x5B117])).permutation(n)
        out = np.empty(n, dtype=np.uint8)
        out[perm] = codes
        return out

    def shards(self) -> Iterator[tuple[int, int, int]]:
        for shard_id, start in enumerate(range(0, self.n_total, self.shard_size)):
            yield shard_id, start, min(start + self.shard_size, self.n_total)

    def to_yaml(self) -> dict[str, Any]:
        return {**asdict(self), "format_version": fmt.FORMAT_VERSION}


def _write_shard(job: dict[str, Any]) -> tuple[int, int]:
    """Render and write one shard (runs in a worker process); returns (shard_id, images)."""
    import torch

    from deeplense.core.runtime import keep_freed_memory
    from deeplense.sim.simulator import Simulator
    from deeplense.sim.substructure import PROFILE_COLUMNS

    keep_freed_memory()
    torch.set_num_threads(job.get("threads", 1))
    root, shard_id, start, stop = Path(job["root"]), job["shard_id"], job["start"], job["stop"]
    plan = DatasetPlan(**job["plan"])
    sim = Simulator(job["config"], dtype=getattr(torch, job["dtype"]), device=job["device"])
    indices = np.arange(start, stop)
    labels = plan.labels(indices)
    seeds = [image_seed(plan.seed, int(i)) for i in indices]
    inst = sim.instrument
    shape = (len(indices), len(inst.bands), inst.size, inst.size)
    fmt.ensure_free_space(root, 4 * int(np.prod(shape)) + 1024 * len(indices))
    columns = sim.columns
    with fmt.open_shard(root, shard_id, start, stop) as f:
        images = f.create_dataset(
            "images", shape=shape, dtype="float32", chunks=(1, *shape[1:]), compression=job.get("compression")
        )
        table = np.full((len(indices), len(columns)), np.nan)
        samples = []
        for lo in range(0, len(indices), job["batch_size"]):
            hi = min(lo + job["batch_size"], len(indices))
            batch, batch_samples = sim.simulate(seeds[lo:hi], [int(x) for x in labels[lo:hi]])
            if not np.isfinite(batch).all():
                raise FloatingPointError(f"non-finite pixels in images {start + lo}..{start + hi - 1}")
            images[lo:hi] = batch
            for j, sample in enumerate(batch_samples):
                row = sim.metadata_row(sample)
                table[lo + j] = [row[c.name] for c in columns]
            samples.extend(batch_samples)
        params = {col.name: (table[:, k], col.unit) for k, col in enumerate(columns)}
        fmt.write_columns(f, indices, labels, plan.splits_of(indices), np.array(seeds, dtype=np.uint64), params)
        for profile, names in PROFILE_COLUMNS.items():
            tables = [s.subhalos.of(profile) for s in samples]
            k = max(len(t) for t in tables)
            if k == 0:
                continue
            padded = np.full((len(tables), k, len(names)), np.nan, dtype=np.float64)
            for i, t in enumerate(tables):
                padded[i, : len(t)] = t
            dset = f.create_dataset(f"subhalos/{profile}", data=padded, compression="gzip")
            dset.attrs["columns"] = list(names)
    return shard_id, len(indices)


def _first_difference(a: Any, b: Any, where: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            diff = _first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else str(key))
            if diff:
                return diff
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            diff = _first_difference(x, y, f"{where}.{i}")
            if diff:
                return diff
        return None
    return None if a == b else where


def write_dataset(
    root: str | Path,
    sim_config: dict[str, Any],
    plan: DatasetPlan,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    batch_size: int = 64,
    dtype: str = "float32",
    device: str = "cpu",
    compression: str | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict[str, Any]:
    """Write (or finish writing) a data set; returns the manifest.

    ``progress(done_images, total_images, seconds)`` is called as shards complete.
    """
    from deeplense.sim.simulator import Simulator

    root = Path(root)
    _check_run_options(workers, batch_size, dtype, device, compression)
    sim = Simulator(sim_config)  # validates everything before any work
    if sim.class_names and len(sim.class_names) != plan.n_classes:
        raise ConfigError("classes", f"the plan has {plan.n_classes} classes, the config {len(sim.class_names)}")
    resolved = {**sim.to_yaml(), "dataset": plan.to_yaml()}
    config_file = root / fmt.CONFIG
    if not config_file.exists() and root.exists() and any(p.name != fmt.LOCK for p in root.iterdir()):
        raise ConfigError("out", f"{root} exists, is not empty and is not a deeplense data set")
    root.mkdir(parents=True, exist_ok=True)
    with locked(root):  # a second writer of the same folder stops here
        if config_file.exists():
            stored = load_yaml(config_file)
            existing = {**resolved_sim(stored), "dataset": stored.get("dataset")}
            wanted = json.loads(json.dumps(resolved))
            for config in (existing, wanted):  # prose: rewording a preset's description changes no image
                config.pop("description", None)
            diff = _first_difference(existing, wanted)
            if diff:
                raise ConfigError(diff, f"{root} holds a different data set (this key differs); use another --out")
        else:
            tmp = config_file.with_suffix(".yaml.tmp")
            dump_yaml(json.loads(json.dumps(resolved)), tmp)
            os.replace(tmp, config_file)
        (root / fmt.SHARD_DIR).mkdir(exist_ok=True)
        return _write_shards(
            root, resolved, sim, plan, workers, scheduler, batch_size, dtype, device, compression, progress
        )


def _write_shards(
    root: Path,
    resolved: dict[str, Any],
    sim: Any,
    plan: DatasetPlan,
    workers: int,
    scheduler: str | None,
    batch_size: int,
    dtype: str,
    device: str,
    compression: str | None,
    progress: Callable[[int, int, float], None] | None,
) -> dict[str, Any]:
    """Render the missing shards and write the manifest (the data set's lock is held)."""
    fmt.remove_temporaries(root)
    jobs, done = [], 0
    for shard_id, start, stop in plan.shards():
        if fmt.shard_complete(fmt.shard_path(root, shard_id), start, stop):
            done += stop - start
            continue
        jobs.append(
            dict(
                root=str(root),
                shard_id=shard_id,
                start=start,
                stop=stop,
                plan=asdict(plan),
                config=resolved_sim(resolved),
                batch_size=batch_size,
                dtype=dtype,
                device=device,
                compression=compression,
            )
        )
    t0 = time.perf_counter()
    already = done
    if progress:
        progress(done, plan.n_total, 0.0)
    for n in _run_jobs(jobs, workers, scheduler):
        done += n
        if progress:
            progress(done, plan.n_total, time.perf_counter() - t0)
    manifest = _manifest(root, sim, plan)
    manifest["written_this_run"] = done - already
    fmt.write_manifest(root, manifest)
    return manifest


def resolved_sim(resolved: dict[str, Any]) -> dict[str, Any]:
    """The simulation part of a resolved (stored) data-set config. Noise nodes that do not record
    their ``generator`` were written before noise scheme 2 existed and get scheme 1."""
    sim = copy.deepcopy({k: v for k, v in resolved.items() if k != "dataset"})
    for band in (sim.get("instrument") or {}).get("bands") or []:
        noise = band.get("noise") if isinstance(band, dict) else None
        if isinstance(noise, dict) and noise.get("kind", "none") != "none":
            noise["options"] = {"generator": 1, **(noise.get("options") or {})}
    return sim


def _run_jobs(jobs: list[dict[str, Any]], workers: int, scheduler: str | None) -> Iterator[int]:
    if not jobs:
        return
    if scheduler:
        try:
            from distributed import Client
        except ImportError:
            raise ConfigError(
                "scheduler", "a Dask scheduler needs the 'dask' extra: pip install 'deeplense[dask]'"
            ) from None
        with Client(scheduler) as client:
            from distributed import as_completed as dask_completed

            futures = client.map(_write_shard, jobs, pure=False)
            for future in dask_completed(futures):
                yield future.result()[1]
        return
    if workers <= 1:
        for job in jobs:
            yield _write_shard(job)[1]
        return
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_exit_with, initargs=(os.getpid(),)
    ) as pool:
        futures = [pool.submit(_write_shard, job) for job in jobs]
        for future in as_completed(futures):
            yield future.result()[1]


def _check_run_options(workers: int, batch_size: int, dtype: str, device: str, compression: str | None) -> None:
    """How to render: positive counts, a known dtype and compression, a device this machine has."""
    import torch

    for key, value in (("workers", workers), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(key, f"expected a whole number >= 1, got {value!r}")
    if dtype not in ("float32", "float64"):
        raise ConfigError("dtype", f"expected float32 or float64, got {dtype!r}")
    if compression not in (None, "gzip", "lzf"):
        raise ConfigError("compression", f"expected gzip, lzf or none, got {compression!r}")
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise ConfigError("device", f"not a torch device: {device!r} (cpu, cuda, cuda:1 ...)") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", f"{device}: this machine has no CUDA device; use --device cpu")
    if kind not in ("cpu", "cuda"):
        raise ConfigError("device", f"{device}: the simulator runs on cpu or cuda")


def _exit_with(parent: int) -> None:
    """Run in each worker process: a daemon thread ends the worker when ``parent`` is gone
    (killed with ``kill -9``, say), so no worker is left rendering for nobody."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="deeplense-parent-watch").start()


def _manifest(root: Path, sim, plan: DatasetPlan) -> dict[str, Any]:
    counts: dict[str, dict[str, int]] = {c: dict.fromkeys(plan.split_names, 0) for c in sim.class_names}
    shards = []
    for shard_id, start, stop in plan.shards():
        with h5py.File(fmt.shard_path(root, shard_id), "r") as f:
            labels, splits = f["label"][:], f["split"][:]
        for lab, sp in zip(labels, splits):
            counts[sim.class_names[lab]][plan.split_names[sp]] += 1
        shards.append(fmt.shard_entry(root, shard_id, start, stop))
    inst = sim.instrument
    return {
        **fmt.manifest_header(plan.n_total),
        "preset": sim.name,
        "seed": plan.seed,
        "class_names": sim.class_names,
        "split_names": plan.split_names,
        "counts": counts,
        "image": {
            "shape": [len(inst.bands), inst.size, inst.size],
            "dtype": "float32",
            "bands": inst.band_names,
            "pixel_scale_arcsec": inst.pixel_scale,
            "pixel_units": [b.noise.pixel_unit for b in inst.bands],
        },
        "columns": [{"name": c.name, "unit": c.unit, "doc": c.doc} for c in sim.columns],
        "shards": shards,
        "complete": True,
    }
