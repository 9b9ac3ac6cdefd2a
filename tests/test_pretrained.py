"""Pretrained weights shipped with the package: each still reproduces its model card; a modified
file is refused; the CLI lists them; the shipped training configs."""

from __future__ import annotations

import shutil

import pytest

import deeplense
from conftest import run_cli as run
from deeplense.configs import CONFIG_DIR
from deeplense.core.errors import DataFormatError
from deeplense.evaluate.package import measure_check
from deeplense.models.hub import PRETRAINED_DIR, list_pretrained, read_pretrained

SHIPPED = list_pretrained()


def test_the_promised_models_are_shipped():
    assert {"model_i_classifier", "lens_finder_hst", "lens_finder_lsst"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_model_reproduces_its_card(name):
    info, _ = read_pretrained(name)
    model = deeplense.from_pretrained(name)
    card = (info.folder / "README.md").read_text()
    test, check = info.config["test"], info.config["check"]
    assert info.config["commands"].splitlines()[0] in card and f"{check['value']:.4f}" in card
    got = measure_check(model, info.config["check_recipe"])  # regenerated from preset and seed
    assert got["n"] == check["n"] and got["name"] == check["name"]
    assert got["value"] == pytest.approx(check["value"], abs=0.005)
    assert check["interval"][0] <= got["value"] <= check["interval"][1]
    # the small check set agrees with the card's test-split number within their intervals (plus
    # 0.005: a percentile bootstrap interval collapses to a point when every pair is ordered)
    slack = 0.005
    assert check["interval"][0] <= test["interval"][1] + slack and test["interval"][0] <= check["interval"][1] + slack


def test_a_modified_shipped_file_is_refused(tmp_path):
    root = tmp_path / "pretrained"
    shutil.copytree(PRETRAINED_DIR, root)
    weights = root / "lens_finder_lsst" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(DataFormatError, match="model.safetensors: sha256 differs"):
        read_pretrained("lens_finder_lsst", root=root)
    with pytest.raises(DataFormatError, match="no pretrained model 'nope'"):
        deeplense.from_pretrained("nope")


def test_cli_lists_pretrained_models_and_shipped_configs(tmp_path):
    listed = run("models", "pretrained").stdout
    assert all(name in listed for name in SHIPPED)
    configs = run("configs", "list").stdout
    assert "model_i_classification" in configs and "lens_finding_hst" in configs
    shown = run("configs", "show", "lens_finding_hst").stdout
    assert shown == (CONFIG_DIR / "lens_finding_hst.yaml").read_text()
    missing = run("configs", "show", "nope", check=False)
    assert missing.returncode == 2 and "no shipped config 'nope'" in missing.stderr


def test_a_shipped_model_exports_to_onnx_for_other_pipelines(tmp_path):
    """Parity on its card's regenerated check set, and the export predicts what torch does."""
    import json

    import numpy as np

    result = run("export", "lens_finder_lsst", "--out", tmp_path / "onnx", "--n-parity", 64)
    assert float(result.stdout.strip().split("max |difference| = ")[1]) < 1e-5
    assert json.loads((tmp_path / "onnx" / "contract.json").read_text())["input"]["bands"] == ["g", "r", "i"]
    images = np.random.default_rng(5).normal(0.1, 0.05, (4, 3, 64, 64)).astype(np.float32)
    torch_probs = deeplense.from_pretrained("lens_finder_lsst").predict(images)["probs"]
    onnx_probs = deeplense.load_predictor(tmp_path / "onnx").predict(images)["probs"]
    assert np.allclose(onnx_probs, torch_probs, atol=1e-5)
