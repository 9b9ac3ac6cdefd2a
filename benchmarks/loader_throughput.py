"""Input-pipeline throughput: deeplense's batch-fetching loader against the per-file ``np.load``
dataset of the DeepLense notebooks, on the same 150x150 Model I images, in one run
(median of 3 epochs each).

Baseline (as in the notebooks): one ``.npy`` per image in ``Model_I/{axion,cdm,no_sub}`` (axion
files are pickled ``[image, m_a]`` object arrays), ``np.load(allow_pickle=True)`` per item,
per-image min-max and random horizontal and vertical flips, default collate. Ours: the same images
in a deeplense data set, ``StoredImages`` reading shards per batch or from an in-memory cache, with
the same transforms (min-max and ``dihedral group: d2``, which is exactly the two random flips),
with min-max and the full D4 group (rotations too: more work than the baseline does), and with
none (the baseline then only loads). Both after one warm-up epoch (files in the page cache). Then the loader's time per
batch at 64x64 against a resnet18 training step (batch 64, 1 band, CPU).

    python benchmarks/loader_throughput.py [--n-per-class 1000] [--workers 0 2] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from deeplense import open_dataset
from deeplense.core.runtime import keep_freed_memory
from deeplense.data.datasets import StoredImages, make_loader
from deeplense.data.transforms import build_pipeline
from deeplense.sim import load_preset
from deeplense.sim.writer import DatasetPlan, write_dataset


class NotebookDataset(Dataset):
    """The per-file dataset of the DeepLense notebooks (``transforms=False``: loading only)."""

    def __init__(self, root: Path, transforms: bool = True):
        self.transforms = transforms
        self.files, self.labels = [], []
        for label, cls in enumerate(("no_sub", "cdm", "axion")):
            names = sorted(os.listdir(root / cls))
            self.files += [root / cls / n for n in names]
            self.labels += [label] * len(names)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        data = np.load(self.files[i], allow_pickle=True)
        image = data[0] if data.dtype == object else data
        x = torch.tensor(image, dtype=torch.float32).unsqueeze(0)
        if not self.transforms:
            return x, self.labels[i]
        x = (x - x.min()) / (x.max() - x.min())
        if torch.rand(1) < 0.5:
            x = x.flip(-1)
        if torch.rand(1) < 0.5:
            x = x.flip(-2)
        return x, self.labels[i]


def prepare(work: Path, n_per_class: int) -> tuple[Path, Path]:
    ours, files = work / "ours", work / "Model_I"
    if not (ours / "manifest.json").exists():
        plan = DatasetPlan(n_per_class, 3, seed=0, splits={"train": 1.0}, shard_size=256)
        write_dataset(ours, load_preset("model_i"), plan, workers=2)
    if not files.exists():
        ds = open_dataset(ours)
        for cls in ds.class_names:
            (files / cls).mkdir(parents=True)
        for i in range(len(ds)):
            image, label, params = ds[i]
            cls = ds.class_names[label]
            path = files / cls / f"{cls}_sim_{i}.npy"
            pixels = image[0].numpy().astype(np.float64)  # the released files are float64
            if cls == "axion":
                pair = np.empty(2, dtype=object)
                pair[0], pair[1] = pixels, 10 ** params["substructure.log10_m_a"]
                np.save(path, pair, allow_pickle=True)
            else:
                np.save(path, pixels)
    return ours, files


def rate(loader, repeats: int = 3) -> float:
    """Median images/s over ``repeats`` epochs, after a warm-up epoch (page cache, worker start-up)."""
    for _ in loader:
        pass
    rates = []
    for _ in range(repeats):
        n, start = 0, time.perf_counter()
        for batch in loader:
            n += len(batch["image"] if isinstance(batch, dict) else batch[0])
        rates.append(n / (time.perf_counter() - start))
    return float(np.median(rates))


def resnet18_step_seconds(batch: int = 64, size: int = 64) -> float:
    import timm

    model = timm.create_model("resnet18", num_classes=3, in_chans=1).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.rand(batch, 1, size, size).to(memory_format=torch.channels_last)
    y = torch.randint(0, 3, (batch,))
    times = []
    for k in range(6):
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if k >= 1:
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-per-class", type=int, default=1000)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--work", type=Path, default=None, help="keep the data here (default: a temporary folder)")
    args = parser.parse_args()
    keep_freed_memory()  # as the deeplense CLI does on start (see docs/benchmarks.md)
    work = args.work or Path(tempfile.mkdtemp(prefix="deeplense-loader-"))
    ours_root, files_root = prepare(work, args.n_per_class)
    print(
        f"# {platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}; {3 * args.n_per_class} images 150x150"
    )
    header = f"{'ours: transforms':>18s} {'workers':>7s} {'baseline img/s':>15s} {'ours (shards)':>14s} {'ratio':>6s}"
    print(header + f" {'ours (memory)':>14s} {'ratio':>6s}")
    source = open_dataset(ours_root)
    rows = [  # (label, our transforms, whether the baseline transforms)
        ("minmax + d2 flips", ["minmax", {"name": "dihedral", "group": "d2"}], True),
        ("minmax + d4", ["minmax", "dihedral"], True),
        ("none", None, False),
    ]
    for label, transforms, baseline_transforms in rows:
        pipeline = build_pipeline(transforms).train() if transforms else None
        for workers in args.workers:
            notebook = NotebookDataset(files_root, baseline_transforms)
            base = rate(DataLoader(notebook, batch_size=args.batch, shuffle=True, num_workers=workers))
            shards = rate(make_loader(StoredImages(source, pipeline), args.batch, shuffle=True, workers=workers))
            cached = StoredImages(source, pipeline, cache="memory")
            memory = rate(make_loader(cached, args.batch, shuffle=True, workers=workers))
            row = f"{label:>18s} {workers:>7d} {base:>15,.0f} {shards:>14,.0f} {shards / base:>5.1f}x"
            print(row + f" {memory:>14,.0f} {memory / base:>5.1f}x")
    step = resnet18_step_seconds(args.batch)
    at64 = build_pipeline(["minmax", {"name": "resize", "size": 64}, "dihedral"]).train()
    for cache in ("none", "memory"):
        loader = make_loader(StoredImages(source, at64, cache=cache), args.batch, shuffle=True, workers=0)
        per_batch = args.batch / rate(loader)
        print(
            f"64x64, cache={cache}: loader {1e3 * per_batch:.1f} ms/batch (main process), resnet18 step "
            f"{1e3 * step:.0f} ms -> loader is {100 * per_batch / step:.1f}% of a step"
        )


if __name__ == "__main__":
    main()
