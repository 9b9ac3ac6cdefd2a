"""Every ready config in configs/ resolves and validates (with its data path pointed at real data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deeplense.core.config import load_yaml
from deeplense.train.config import resolve_config

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def test_there_are_configs_for_each_preset_and_task():
    names = {p.stem for p in CONFIGS}
    assert {
        "model_i_classification",
        "model_i_regression",
        "model_ii_classification",
        "model_iii_classification",
        "anomaly_model_i",
        "anomaly_model_ii",
        "anomaly_model_iv",
        "pretrain_simclr_model_ii",
        "pretrain_mae_model_ii",
        "finetune_model_ii",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_resolves(path, tiny_dataset):
    raw = load_yaml(path)
    overrides = [f"data.path={tiny_dataset}"] if raw["data"].get("path") else []
    config = resolve_config(path, overrides)
    assert config["task"] in ("classification", "regression", "anomaly", "mae", "simclr")
    if config["task"] == "regression":
        assert config["data"]["targets"]
