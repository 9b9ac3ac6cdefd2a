"""Reader of deeplense's own data set directories (manifest.json + sharded HDF5)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from deeplense.core import dataset_dir as fmt
from deeplense.data.base import DataFormatError, ImageSource

__all__ = ["DataFormatError", "ShardedDataset"]


class ShardedDataset(ImageSource):
    """A deeplense data set directory; ``ds[i]`` is ``(image float32 CxHxW, label, params)``.

    Shards are opened lazily, once per process, so the object is safe to hand to several
    ``DataLoader`` workers. ``images(indices)`` reads a batch shard by shard in one call each.
    """

    layout = "deeplense"

    def __init__(self, root: str | Path, split: str | None = None):
        self.root = Path(root)
        self.manifest: dict[str, Any] = fmt.read_manifest(self.root)
        self.class_names: list[str] = list(self.manifest["class_names"])
        self.original_class_names = list(self.manifest.get("original_class_names", self.class_names))
        self.bad_files = []
        self.units = {c["name"]: c["unit"] for c in self.manifest["columns"]}
        self.split_names: list[str] = list(self.manifest["split_names"])
        frames, self._locations = [], []
        manifest_path = self.root / fmt.MANIFEST
        self._paths = [
            fmt.shard_file(self.root, shard["file"], f"{manifest_path}: shards[{number}].file")
            for number, shard in enumerate(self.manifest["shards"])
        ]
        for shard_no, shard in enumerate(self.manifest["shards"]):
            frames.append(self._read_table(self._paths[shard_no], shard))
            self._locations.append(
                np.stack(
                    [np.full(shard["stop"] - shard["start"], shard_no), np.arange(shard["stop"] - shard["start"])], 1
                )
            )
        table = pd.concat(frames, ignore_index=True)
        where = np.concatenate(self._locations)
        if split is not None:
            if split not in self.split_names:
                raise KeyError(f"unknown split {split!r}; this data set has {self.split_names}")
            keep = (table["split"] == split).to_numpy()
            table, where = table[keep].reset_index(drop=True), where[keep]
        self.metadata: pd.DataFrame = table
        self._where = where
        self._param_columns = [c["name"] for c in self.manifest["columns"]]
        self._files: dict[int, h5py.File] = {}
        self._datasets: dict[int, tuple[h5py.Dataset, bool]] = {}
        self._pid = os.getpid()

    def _read_table(self, path: Path, shard: dict[str, Any]) -> pd.DataFrame:
        data = fmt.read_shard_columns(
            path,
            shard["stop"] - shard["start"],
            tuple(self.manifest["image"]["shape"]),
            len(self.class_names),
            len(self.split_names),
            shard["start"],
        )
        data["split"] = np.asarray(self.split_names)[data["split"]]
        table = pd.DataFrame(data)
        table.insert(2, "class_name", np.asarray(self.class_names)[table["label"].to_numpy()])
        return table

    def __len__(self) -> int:
        return len(self.metadata)

    def _file(self, shard_no: int) -> h5py.File:
        if os.getpid() != self._pid:  # forked into a loader worker: never share handles
            self._files, self._datasets, self._pid = {}, {}, os.getpid()
        if shard_no not in self._files:
            self._files[shard_no] = h5py.File(self._paths[shard_no], "r")
        return self._files[shard_no]

    def image(self, i: int) -> np.ndarray:
        shard_no, row = self._where[i]
        return self._file(int(shard_no))["images"][int(row)]

    def images(self, indices: ArrayLike) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        where = self._where[indices]
        shape = tuple(self.manifest["image"]["shape"])
        out = np.empty((len(indices), *shape), dtype=np.float32)
        for j, (shard_no, row) in enumerate(where.tolist()):
            dset, raw = self._images_of(shard_no)
            if raw:  # one uncompressed chunk per image: read its bytes directly
                out[j] = np.frombuffer(dset.id.read_direct_chunk((row, 0, 0, 0))[1], dtype=np.float32).reshape(shape)
            else:
                out[j] = dset[row]
        return out

    def _images_of(self, shard_no: int) -> tuple[h5py.Dataset, bool]:
        if os.getpid() != self._pid or shard_no not in self._datasets:
            dset = self._file(shard_no)["images"]
            self._datasets[shard_no] = (dset, self._raw_chunks(dset))
        return self._datasets[shard_no]

    @staticmethod
    def _raw_chunks(dset: h5py.Dataset) -> bool:
        return (
            dset.chunks is not None
            and dset.chunks[0] == 1
            and tuple(dset.chunks[1:]) == dset.shape[1:]
            and dset.compression is None
            and not dset.shuffle
            and not dset.fletcher32
            and dset.dtype == np.float32
        )

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.manifest["image"]["shape"])
