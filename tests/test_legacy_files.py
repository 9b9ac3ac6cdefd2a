"""Files written before the task architecture: checkpoints load and predict the same numbers, the
data set opens and regenerates bit for bit (see tests/fixtures/legacy/README.md)."""

from pathlib import Path

import numpy as np
import pytest

import deeplense
from deeplense.infer import load_predictor

LEGACY = Path(__file__).parent / "fixtures" / "legacy"


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_old_checkpoints_load_and_predict_what_they_did(task):
    run = LEGACY / "runs" / task
    expected = dict(np.load(run / "expected_predictions.npz"))
    images = deeplense.open_dataset(LEGACY / "dataset").images(np.arange(18))
    got = load_predictor(run).predict(images)
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-6, atol=1e-7)


def test_old_data_set_opens_and_regenerates_bit_for_bit(tmp_path):
    from deeplense.core.config import load_yaml
    from deeplense.sim.writer import DatasetPlan, resolved_sim, write_dataset

    old = deeplense.open_dataset(LEGACY / "dataset")
    assert len(old) == 18 and old.class_names == ["no_sub", "cdm", "axion"]
    stored = load_yaml(LEGACY / "dataset" / "config.yaml")
    plan = stored["dataset"]
    plan.pop("format_version")
    write_dataset(tmp_path / "again", resolved_sim(stored), DatasetPlan(**plan))
    again = deeplense.open_dataset(tmp_path / "again")
    np.testing.assert_array_equal(again.images(np.arange(18)), old.images(np.arange(18)))
    np.testing.assert_array_equal(again.labels, old.labels)


def test_contract_versions_round_trip_migrate_and_refuse_the_future():
    import json

    from deeplense.core.contract import CONTRACT_VERSION, ModelContract
    from deeplense.core.errors import DataFormatError

    flat = json.loads((LEGACY / "runs" / "regression" / "contract.json").read_text())  # version 0
    contract = ModelContract.from_dict(flat)
    assert contract.version == CONTRACT_VERSION and contract.task == "regression"
    assert contract.output.targets == ["substructure.log10_m_a"] and contract.output.target_units == ["log10(eV)"]
    assert contract.input.in_chans == 1 and contract.input.img_size == 16
    assert ModelContract.from_dict(contract.to_dict()) == contract
    with pytest.raises(DataFormatError, match="contract version 99 is newer"):
        ModelContract.from_dict({**contract.to_dict(), "version": 99})
    with pytest.raises(DataFormatError, match="missing field 'task'"):
        ModelContract.from_dict({k: v for k, v in contract.to_dict().items() if k != "task"})


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_training_the_old_runs_config_again_gives_the_same_model(task, tmp_path):
    """The task architecture changed where training lives, not what it computes: the legacy run's
    own config, trained again today, predicts bit for bit what the old code's checkpoint does."""
    import yaml

    from deeplense.train.config import resolve_config
    from deeplense.train.run import train

    config = yaml.safe_load((LEGACY / "runs" / task / "config.yaml").read_text())
    config["data"]["path"] = str(LEGACY / "dataset")
    config["run"] = {"dir": str(tmp_path), "name": task}
    train(resolve_config(config))
    images = deeplense.open_dataset(LEGACY / "dataset").images(np.arange(18))
    again = load_predictor(tmp_path / task).predict(images)
    for key, value in np.load(LEGACY / "runs" / task / "expected_predictions.npz").items():
        np.testing.assert_array_equal(again[key], value)
