"""Files written before the task architecture: checkpoints load and predict the same numbers, the
data set opens and regenerates bit for bit (see tests/fixtures/legacy/README.md)."""

from pathlib import Path

import numpy as np
import pytest

import deeplense
from deeplense.train.checkpoint import load_model

LEGACY = Path(__file__).parent / "fixtures" / "legacy"


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_old_checkpoints_load_and_predict_what_they_did(task):
    run = LEGACY / "runs" / task
    expected = dict(np.load(run / "expected_predictions.npz"))
    images = deeplense.open_dataset(LEGACY / "dataset").images(np.arange(18))
    got = load_model(run).predict(images)
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
