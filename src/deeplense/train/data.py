"""Build the training, validation and test datasets of a run from its config."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deeplense.core.config import ConfigError, apply_overrides, load_yaml
from deeplense.core.run_dir import RunDir
from deeplense.data.base import root_source
from deeplense.data.datasets import SimulatedImages, StoredImages
from deeplense.data.transforms import Pipeline, build_pipeline
from deeplense.tasks import TASKS

__all__ = ["TrainingData", "build_data", "simulation_config", "run_data"]


@dataclass
class TrainingData:
    train: Any
    val: Any | None
    test: Any | None
    class_names: list[str]
    targets: list[str]
    target_units: list[str]
    target_mean: list[float]
    target_std: list[float]
    in_chans: int
    img_size: int
    pipeline: Pipeline
    class_counts: list[int]
    provenance: dict[str, Any] = field(default_factory=dict)
    source: Any = None  # the stored data after class filtering, with its split (for split.csv)
    #: raw images: bands, pixel_scale_arcsec, pixel_units (where the data record them), raw_size
    image_info: dict[str, Any] = field(default_factory=dict)

    def save_split(self, path: Path) -> None:
        """Write the split used (stored data only) to ``path``."""
        if self.source is not None:
            from deeplense.data.splits import save_split

            save_split(self.source, path)


def _stored_image_info(source: Any, raw_size: int) -> dict[str, Any]:
    """What a deeplense data set's manifest records about its pixels."""
    image = (getattr(source, "manifest", None) or {}).get("image", {})
    keys = ("bands", "pixel_scale_arcsec", "pixel_units")
    return {"raw_size": raw_size, **{k: image.get(k) for k in keys}}


def simulation_config(sim: dict[str, Any]) -> dict[str, Any]:
    """Resolve ``data.simulate``'s preset or config file plus its ``set`` overrides."""
    from deeplense.sim.presets import load_preset

    raw = load_preset(sim["preset"]) if "preset" in sim else load_yaml(sim["config"])
    return apply_overrides(raw, list(sim.get("set", [])))


def _fit_statistics(pipeline: Pipeline, fetch, n: int) -> None:
    if not pipeline.needs_statistics():
        return
    idx = np.arange(min(n, 2048))

    def batches():
        for lo in range(0, len(idx), 256):
            yield torch.as_tensor(fetch(idx[lo : lo + 256]))

    pipeline.fit_statistics(batches)


def _counts_by_name(part: Any, class_names: list[str]) -> list[int]:
    """Images per class of ``class_names`` in ``part`` (which may hold fewer classes)."""
    counts = dict(zip(part.class_names, np.bincount(part.labels, minlength=len(part.class_names)).tolist()))
    return [int(counts.get(c, 0)) for c in class_names]


def _preset_of(source: Any) -> dict[str, Any]:
    """The preset and seed a deeplense data set was simulated with (nothing for other layouts)."""
    manifest = getattr(source, "manifest", None) or {}
    return {k: manifest[k] for k in ("preset", "seed") if manifest.get(k) is not None}


def _fit_domain(eval_pipe: Pipeline, fetch, n: int, seed: int) -> dict[str, Any]:
    """The domain of (up to 1024) training images as the network sees them (:mod:`deeplense.data.domain`)."""
    from deeplense.data.domain import fit_domain, image_statistics

    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xD0]))
    idx = np.sort(rng.permutation(n)[:1024])
    stats = [image_statistics(eval_pipe(torch.as_tensor(fetch(idx[lo : lo + 256])))) for lo in range(0, len(idx), 256)]
    return fit_domain(np.concatenate(stats))


def build_data(config: dict[str, Any], progress=None) -> TrainingData:
    """Datasets of a run (``TrainingData.save_split`` writes the split used)."""
    data, seed = config["data"], int(config["train"]["seed"])
    task, targets = config["task"], list(data["targets"])
    pipeline = build_pipeline(data["transforms"], "data.transforms")
    train_pipe, eval_pipe = Pipeline(pipeline.transforms).train(True), Pipeline(pipeline.transforms).train(False)
    if data["simulate"] is not None:
        return _simulated(config, pipeline, train_pipe, eval_pipe)
    from deeplense.data.readers import open_dataset
    from deeplense.data.views import ClassView, IndexView, SplitView

    source = open_dataset(
        data["path"],
        check=data["check"],
        on_bad_file=data["on_bad_file"],
        split_file=data["split_file"],
        split=None,
        progress=progress,
    )
    skipped = len(source.bad_files)
    if data["classes"]:
        try:
            source = ClassView(source, list(data["classes"]))
        except KeyError as exc:
            raise ConfigError("data.classes", str(exc.args[0])) from None
    if (source.splits == "").all():
        from deeplense.data.splits import assign_splits

        assign_splits(source, data["split_fractions"], data["split_seed"])
    names = sorted(set(source.splits))
    parts = {}
    for role, split in data["splits"].items():
        if split is None:
            parts[role] = None
        elif split not in names:
            if role == "train":
                raise ConfigError("data.splits.train", f"no split {split!r}; the data have {names}")
            parts[role] = None
        else:
            parts[role] = SplitView(source, split)
    learnt = TASKS.get(task).training_classes(config, list(source.class_names))
    if learnt is not None:  # e.g. the normal class of an anomaly detector; the test split keeps every class
        parts.update({role: ClassView(parts[role], learnt) for role in ("train", "val") if parts[role] is not None})
    train = parts["train"]
    if data["max_train"] and data["max_train"] < len(train):
        keep = np.sort(
            np.random.default_rng(np.random.SeedSequence([seed, 0x7A1])).permutation(len(train))[: data["max_train"]]
        )
        train = IndexView(train, keep)
    _fit_statistics(pipeline, train.images, len(train))
    domain = _fit_domain(eval_pipe, train.images, len(train), seed)
    raw = train.images([0])
    probe = eval_pipe(torch.as_tensor(raw))
    datasets = {
        "train": StoredImages(train, train_pipe, targets, cache=data["cache"], augment_seed=seed, progress=progress),
        "val": StoredImages(parts["val"], eval_pipe, targets, cache=data["cache"])
        if parts["val"] is not None
        else None,
        "test": StoredImages(parts["test"], eval_pipe, targets, cache="none") if parts["test"] is not None else None,
    }
    values = datasets["train"].target_values
    return TrainingData(
        train=datasets["train"],
        val=datasets["val"],
        test=datasets["test"],
        class_names=list(source.class_names),
        targets=targets,
        target_units=[source.units.get(t, "") for t in targets],
        target_mean=values.mean(0).tolist() if targets else [],
        target_std=np.maximum(values.std(0), 1e-12).tolist() if targets else [],
        in_chans=int(probe.shape[1]),
        img_size=int(probe.shape[-1]),
        pipeline=pipeline,
        class_counts=_counts_by_name(train, source.class_names),
        provenance={
            "path": str(Path(data["path"]).resolve()),
            "layout": source.layout,
            "sizes": {k: (len(v) if v is not None else 0) for k, v in datasets.items()},
            "bad_files_skipped": skipped,
            "task": task,
            **_preset_of(root_source(source)),
        },
        source=source,
        image_info={**_stored_image_info(root_source(source), int(raw.shape[-1])), "domain": domain},
    )


def _simulated(config, pipeline, train_pipe, eval_pipe) -> TrainingData:
    from deeplense.sim.simulator import Simulator

    data, seed = config["data"], int(config["train"]["seed"])
    sim = data["simulate"]
    sim_config = simulation_config(sim)
    base = int(sim.get("seed", 0))
    targets, classes = list(data["targets"]), data["classes"]
    simulator = Simulator(sim_config)
    class_names = list(classes) if classes else simulator.class_names or ["unlabelled"]
    learnt = TASKS.get(config["task"]).training_classes(config, class_names)
    sizes = {"train": sim.get("train", 0), "val": sim.get("val", 0), "test": sim.get("test", 0)}
    datasets = {}
    for k, (role, n) in enumerate(sizes.items()):
        if n:
            pipe = train_pipe if role == "train" else eval_pipe
            aug = seed if role == "train" else None
            these = learnt if learnt is not None and role != "test" else classes
            datasets[role] = SimulatedImages(sim_config, 3 * base + k, n, targets, pipe, these, augment_seed=aug)
        else:
            datasets[role] = None
    train = datasets["train"]
    _fit_statistics(pipeline, train.raw_images, len(train))
    probe = train.__getitems__([0])["image"]
    n_classes = len(train.output_class_names)
    per_class = [len(train) // n_classes + (1 if i < len(train) % n_classes else 0) for i in range(n_classes)]
    counts = dict(zip(train.output_class_names, per_class))
    units = {c.name: c.unit for c in simulator.columns}
    inst = simulator.instrument
    target_mean, target_std = [], []
    if targets:
        chunks = range(0, min(len(train), 1024), 256)
        values = np.concatenate(
            [train.__getitems__(list(range(lo, min(lo + 256, len(train)))))["target"].numpy() for lo in chunks]
        )
        target_mean, target_std = values.mean(0).tolist(), np.maximum(values.std(0), 1e-12).tolist()
    return TrainingData(
        train=train,
        val=datasets["val"],
        test=datasets["test"],
        class_names=class_names,
        targets=targets,
        target_units=[units.get(t, "") for t in targets],
        target_mean=target_mean,
        target_std=target_std,
        in_chans=int(probe.shape[1]),
        img_size=int(probe.shape[-1]),
        pipeline=pipeline,
        class_counts=[counts.get(c, 0) for c in class_names],
        provenance={
            "simulate": sim,
            "seeds": {r: 3 * base + k for k, r in enumerate(sizes)},
            "sizes": sizes,
            "task": config["task"],
        },
        image_info={
            "bands": inst.band_names,
            "pixel_scale_arcsec": inst.pixel_scale,
            "pixel_units": [b.noise.pixel_unit for b in inst.bands],
            "raw_size": inst.size,
            "domain": _fit_domain(eval_pipe, train.raw_images, len(train), seed),
        },
    )


def run_data(run_dir: Path, data: str | Path | None = None) -> TrainingData:
    """The datasets of a finished run, rebuilt from its ``config.yaml`` with the split it used
    (``split.csv``), or with ``data`` in place of its data set; images read from disk, not cached."""
    from deeplense.train.config import resolve_config

    run = RunDir(run_dir)
    config = load_yaml(run.config)
    if data is not None:
        config["data"]["path"], config["data"]["simulate"], config["data"]["split_file"] = str(data), None, None
    elif run.split.exists():
        config["data"]["split_file"] = str(run.split)
    config = resolve_config(config)
    config["data"]["cache"] = "none"
    return build_data(config)
