import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)


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
