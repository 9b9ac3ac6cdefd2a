import os
import subprocess
import sys

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)


CLI = [sys.executable, "-m", "deeplense.cli.main"]


def run_cli(*args, check=True, timeout=600):
    """Run ``deeplense ARGS...`` in a subprocess; with ``check``, fail showing its output."""
    result = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def rng():
    return np.random.default_rng(20261124)


def tiny_model_i_config(size=16, pixel_scale=0.2):
    from deeplense.sim import load_preset

    config = load_preset("model_i")
    config["instrument"]["size"] = size
    config["instrument"]["pixel_scale"] = pixel_scale
    return config


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A 16x16 model_i data set of 3 x 12 images in 4 shards (written in-process)."""
    from deeplense.sim.writer import DatasetPlan, write_dataset

    root = tmp_path_factory.mktemp("data") / "tiny"
    plan = DatasetPlan(
        n_per_class=12, n_classes=3, seed=5, splits={"train": 0.5, "val": 0.25, "test": 0.25}, shard_size=10
    )
    write_dataset(root, tiny_model_i_config(), plan)
    return root


@pytest.fixture(scope="session")
def tiny_runs(tiny_dataset, tmp_path_factory):
    """A trained classification run and a regression run on the tiny data set (in-process)."""
    import logging

    from deeplense.train.config import resolve_config
    from deeplense.train.run import train

    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    root = tmp_path_factory.mktemp("runs")
    common = {"model": {"name": "small_cnn", "kwargs": {"widths": [8, 16]}}, "logging": {"progress_bar": False}}
    runs = {}
    for name, extra in {
        "cls": {"task": "classification", "data": {"path": str(tiny_dataset), "transforms": ["minmax", "dihedral"]}},
        "cls2": {
            "task": "classification",
            "data": {"path": str(tiny_dataset), "transforms": ["minmax"]},
            "train": {"seed": 1},
        },
        "reg": {
            "task": "regression",
            "data": {
                "path": str(tiny_dataset),
                "classes": ["axion"],
                "targets": ["substructure.log10_m_a"],
                "transforms": ["minmax"],
            },
        },
    }.items():
        config = {**common, **extra, "run": {"dir": str(root), "name": name}}
        config["train"] = {"epochs": 2, "batch_size": 6, "threads": 1, **extra.get("train", {})}
        train(resolve_config(config))
        runs[name] = root / name
    return runs
