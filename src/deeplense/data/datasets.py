"""Torch datasets and loaders that fetch whole batches: over stored data and over the simulator.

Both datasets implement ``__getitems__`` so a ``DataLoader`` asks for a batch of indices at once:
stored images are read shard by shard (or sliced from an in-memory cache), simulated images are
rendered in one batched call, and the transforms run once per batch. A batch is a dict
``{"image": (B, C, H, W) float32, "label": (B,) int64, "target": (B, T) float32, "index": (B,)}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, get_worker_info

from deeplense.data.base import DataFormatError, ImageSource
from deeplense.data.transforms import Pipeline

if TYPE_CHECKING:
    from deeplense.sim.simulator import Simulator

__all__ = [
    "StoredImages",
    "SimulatedImages",
    "SimulatedStream",
    "EpochSampler",
    "make_loader",
    "target_table",
    "raw_split",
]


def target_table(source: ImageSource, targets: Sequence[str]) -> np.ndarray:
    """``(N, T)`` float32 targets from the metadata; a clear error for missing columns or NaNs."""
    meta = source.metadata
    missing = [t for t in targets if t not in meta]
    if missing:
        raise DataFormatError(
            f"{source.root}: no target column {missing[0]!r}; numeric columns: {source.parameter_columns}"
        )
    table = meta[list(targets)].to_numpy(np.float32) if targets else np.zeros((len(meta), 0), np.float32)
    bad = ~np.isfinite(table).all(axis=1)
    if bad.any():
        where = meta["file"].iloc[np.flatnonzero(bad)[:3]].tolist() if "file" in meta else np.flatnonzero(bad)[:3]
        raise DataFormatError(
            f"{source.root}: {int(bad.sum())} images have NaN/Inf targets {list(targets)}, e.g. {where}"
        )
    return table


def _generator(seed: int | None, raw: np.ndarray) -> torch.Generator | None:
    """Augmentation generator of one batch: a function of the seed and the batch's encoded indices
    (which include the epoch, see :class:`EpochSampler`)."""
    if seed is None:
        return None
    state = np.random.SeedSequence([int(seed), len(raw), *(int(v) for v in raw[:4])]).generate_state(2, np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def _batch(
    images: ArrayLike | torch.Tensor,
    labels: ArrayLike,
    targets: ArrayLike,
    indices: ArrayLike,
    pipeline: Pipeline | None,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    x = torch.as_tensor(images, dtype=torch.float32)
    if pipeline is not None:
        x = pipeline(x, generator)
    return {
        "image": x.contiguous(),
        "label": torch.as_tensor(np.asarray(labels), dtype=torch.int64),
        "target": torch.as_tensor(np.asarray(targets, dtype=np.float32)),
        "index": torch.as_tensor(np.asarray(indices), dtype=torch.int64),
    }


class StoredImages(Dataset):
    """Images of a reader with labels, regression ``targets`` (metadata columns) and transforms.

    ``cache='memory'`` reads every image once into one array (fast sequential reads; the array
    is shared copy-on-write with forked loader workers); ``'none'`` reads batches from disk.
    """

    def __init__(
        self,
        source: ImageSource,
        pipeline: Pipeline | None = None,
        targets: Sequence[str] = (),
        cache: str = "none",
        progress: Callable[[int, int], None] | None = None,
        augment_seed: int | None = None,
    ):
        if cache not in ("none", "memory"):
            raise ValueError(f"cache must be 'none' or 'memory', got {cache!r}")
        self.source, self.pipeline, self.targets = source, pipeline, list(targets)
        self.augment_seed = augment_seed
        self.labels = source.labels
        self.target_values = target_table(source, self.targets)
        self._cache = None
        if cache == "memory":
            n, chunk = len(source), 1024
            self._cache = np.empty((n, *source.image_shape), dtype=np.float32)
            for lo in range(0, n, chunk):
                self._cache[lo : lo + chunk] = source.images(np.arange(lo, min(lo + chunk, n)))
                if progress:
                    progress(min(lo + chunk, n), n)

    def __len__(self) -> int:
        return len(self.source)

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        raw = np.asarray(indices, dtype=np.int64)
        idx = raw % len(self)  # indices from EpochSampler carry the epoch: epoch * len + i
        generator = _generator(self.augment_seed, raw)
        source, rows = (self._cache, idx) if self._cache is not None else (self.source.images(idx), None)
        images: np.ndarray | torch.Tensor
        if self.pipeline is None:
            images = source if rows is None else source[rows]
        else:
            images = self.pipeline.gather(source, rows, generator)
        return _batch(images, self.labels[idx], self.target_values[idx], idx, None)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}


class _SimulatorMixin:
    def _init_sim(
        self,
        config: dict[str, Any],
        seed: int,
        targets: Sequence[str],
        pipeline: Pipeline | None,
        classes: Sequence[str] | None = None,
    ) -> None:
        from deeplense.sim.simulator import Simulator

        self.config, self.seed, self.targets, self.pipeline = config, int(seed), list(targets), pipeline
        probe = Simulator(config)  # validate now, in the main process
        self.class_names = probe.class_names or ["unlabelled"]
        unknown_classes = [c for c in classes or [] if c not in self.class_names]
        if unknown_classes:
            raise DataFormatError(f"simulator: no class {unknown_classes[0]!r}; classes: {self.class_names}")
        self._labels = [self.class_names.index(c) for c in classes] if classes else list(range(len(self.class_names)))
        self.output_class_names = list(classes) if classes else list(self.class_names)
        columns = {c.name for c in probe.columns}
        unknown = [t for t in self.targets if t not in columns]
        if unknown:
            raise DataFormatError(f"simulator: no parameter {unknown[0]!r}; parameters: {sorted(columns)}")
        self._sim: Simulator | None = None

    def raw_images(self, indices: ArrayLike) -> np.ndarray:
        """Rendered images before any transform."""
        return self._render(np.asarray(indices, dtype=np.int64), apply_pipeline=False)["image"].numpy()

    def _render(
        self, indices: np.ndarray, generator: torch.Generator | None = None, apply_pipeline: bool = True
    ) -> dict[str, torch.Tensor]:
        from deeplense.core.seeding import image_seed
        from deeplense.sim.simulator import Simulator

        if self._sim is None:
            self._sim = Simulator(self.config)
        labels = [self._labels[int(i) % len(self._labels)] for i in indices]
        images, samples = self._sim.simulate([image_seed(self.seed, int(i)) for i in indices], labels)
        labels = [int(i) % len(self._labels) for i in indices]  # position in `classes` (or the label itself)
        rows = [self._sim.metadata_row(s) for s in samples]
        targets = np.asarray([[row[t] for t in self.targets] for row in rows], dtype=np.float32)
        targets = targets.reshape(len(indices), -1)
        return _batch(images, labels, targets, indices, self.pipeline if apply_pipeline else None, generator)


class SimulatedImages(_SimulatorMixin, Dataset):
    """``length`` images rendered on the fly; image ``i`` is a pure function of ``(seed, i)`` with
    label ``i % n_classes`` (cycling over ``classes`` when given, e.g. only ``['axion']`` for
    regression, and relabelled by position in ``classes``), so every epoch and every worker
    layout sees the same images."""

    def __init__(
        self,
        config: dict[str, Any],
        seed: int,
        length: int,
        targets: Sequence[str] = (),
        pipeline: Pipeline | None = None,
        classes: Sequence[str] | None = None,
        augment_seed: int | None = None,
    ):
        self._init_sim(config, seed, targets, pipeline, classes)
        self.length = int(length)
        self.augment_seed = augment_seed

    def __len__(self) -> int:
        return self.length

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        raw = np.asarray(indices, dtype=np.int64)
        return self._render(raw % self.length, _generator(self.augment_seed, raw))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}


class SimulatedStream(_SimulatorMixin, IterableDataset):
    """An endless stream of rendered batches; batch ``b`` holds images ``b*B .. (b+1)*B-1``, and
    loader worker ``w`` of ``W`` renders batches ``w, w+W, ...`` (none rendered twice)."""

    def __init__(
        self,
        config: dict[str, Any],
        seed: int,
        batch_size: int,
        targets: Sequence[str] = (),
        pipeline: Pipeline | None = None,
        classes: Sequence[str] | None = None,
        start: int = 0,
    ):
        self._init_sim(config, seed, targets, pipeline, classes)
        self.batch_size, self.start = int(batch_size), int(start)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        b = self.start + worker
        while True:
            yield self._render(np.arange(b * self.batch_size, (b + 1) * self.batch_size))
            b += workers


class EpochSampler(Sampler[int]):
    """Shuffled indices whose order is a function of ``(seed, epoch)`` alone, so a resumed run
    replays the same batches. Indices are encoded as ``epoch * n + i`` (the datasets decode them)
    so that augmentation can depend on the epoch too. Lightning calls ``set_epoch``."""

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True):
        self.n, self.seed, self.shuffle, self.epoch = int(n), int(seed), shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            order = np.random.default_rng(np.random.SeedSequence([self.seed, 0xE90C, self.epoch])).permutation(self.n)
        else:
            order = np.arange(self.n)
        return iter((self.epoch * self.n + order).tolist())


def _already_batched(batch: Any) -> Any:
    return batch


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    workers: int = 0,
    seed: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A ``DataLoader`` that fetches whole batches through ``__getitems__`` (seeded shuffling)."""
    if isinstance(dataset, IterableDataset):
        return DataLoader(dataset, batch_size=None, num_workers=workers, persistent_workers=workers > 0)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSampler(len(dataset), seed, shuffle),  # type: ignore[arg-type]
        num_workers=workers,
        collate_fn=_already_batched,
        drop_last=drop_last,
        persistent_workers=workers > 0,
    )


def raw_split(dataset: Dataset, batch: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(raw images, labels, targets, indices) of a dataset built by ``build_data``, untransformed."""
    n = len(dataset)  # type: ignore[arg-type]
    images, labels, targets = [], [], []
    for lo in range(0, n, batch):
        idx = np.arange(lo, min(lo + batch, n))
        if isinstance(dataset, StoredImages):
            images.append(dataset.source.images(idx))
            labels.append(dataset.labels[idx])
            targets.append(dataset.target_values[idx])
        elif isinstance(dataset, SimulatedImages):
            got = dataset._render(idx, apply_pipeline=False)
            images.append(got["image"].numpy())
            labels.append(got["label"].numpy())
            targets.append(got["target"].numpy())
        else:
            raise TypeError(f"cannot read raw images from {type(dataset).__name__}")
    return np.concatenate(images), np.concatenate(labels), np.concatenate(targets), np.arange(n)
