"""``deeplense data inspect`` and ``deeplense data convert`` through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from PIL import Image

from deeplense import open_dataset
from deeplense.data.inspect import noise_sigma
from layouts import gsoc, model_i

CLI = [sys.executable, "-m", "deeplense.cli.main", "data"]


def run(*args):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=300)


def _model_i_with_problems(root):
    truth = model_i(root, n=5)
    np.save(root / "cdm" / "nan.npy", np.full((16, 16), np.nan))
    np.save(root / "cdm" / "copy.npy", np.load(root / "cdm" / "cdm_sim_0.npy"))
    (root / "no_sub" / "cut.npy").write_bytes((root / "no_sub" / "no_sub_sim_0.npy").read_bytes()[:300])
    return truth


def test_inspect_lists_layout_classes_duplicates_and_bad_files(tmp_path):
    _model_i_with_problems(tmp_path / "Model_I")
    result = run("inspect", tmp_path / "Model_I", "--out", tmp_path / "report", "--format", "html")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "layout class_folders, 16 images of shape (1, 16, 16)" in out
    assert "cdm (cdm): 6 images" in out and "axion (axion): 5 images" in out
    assert "column substructure.log10_m_a [log10(eV)]: 5 values" in out
    assert "duplicates: 1 group(s)" in out and "cdm_sim_0.npy = " in out and "copy.npy" in out
    assert "bad files: 2" in out and "nan.npy: 256 NaN/Inf pixels" in out and "cut.npy: truncated" in out
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert [c["count"] for c in summary["classes"]] == [5, 6, 5]
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<table>" in html and "samples.png" in html and "nan.npy" in html
    for png in ("samples.png", "histograms.png"):
        with Image.open(tmp_path / "report" / png) as im:
            assert im.size[0] > 300


def test_convert_keeps_labels_targets_and_stored_splits(tmp_path):
    truth = _model_i_with_problems(tmp_path / "Model_I")
    failed = run("convert", tmp_path / "Model_I", "--out", tmp_path / "ours")
    assert (
        failed.returncode == 2
        and "nan.npy: 256 NaN/Inf pixels" in failed.stderr
        and "--on-bad-file skip" in failed.stderr
    )
    result = run(
        "convert", tmp_path / "Model_I", "--out", tmp_path / "ours", "--on-bad-file", "skip", "--split-seed", "4"
    )
    assert result.returncode == 0, result.stderr
    assert "skipped 2 bad file(s)" in result.stderr
    source = open_dataset(tmp_path / "Model_I", check="full", on_bad_file="skip")
    ours = open_dataset(tmp_path / "ours")
    assert ours.layout == "deeplense" and ours.class_names == source.class_names and len(ours) == len(source) == 16
    np.testing.assert_array_equal(ours.labels, source.labels)
    np.testing.assert_array_equal(ours.images(range(16)), source.images(range(16)))
    assert ours.metadata["file"].tolist() == source.metadata["file"].tolist()
    axion = ours.metadata[ours.metadata["class_name"] == "axion"].sort_values("file")
    np.testing.assert_allclose(axion["value"], truth["m_a"])
    assert ours.units["substructure.log10_m_a"] == "log10(eV)"

    gsoc(tmp_path / "gsoc")
    assert run("convert", tmp_path / "gsoc", "--out", tmp_path / "gsoc_ours").returncode == 0
    converted = open_dataset(tmp_path / "gsoc_ours")
    original = open_dataset(tmp_path / "gsoc")
    assert converted.splits.tolist() == original.splits.tolist()
    assert converted.original_class_names == ["no", "sphere", "vort"]


def test_cli_errors_name_the_path(tmp_path):
    result = run("inspect", tmp_path / "missing")
    assert result.returncode == 2 and "missing: no such file" in result.stderr
    (tmp_path / "x.txt").write_text("hello")
    result = run("inspect", tmp_path / "x.txt")
    assert result.returncode == 2 and "x.txt: cannot read a data set from a .txt file" in result.stderr


def test_noise_estimate_recovers_gaussian_sigma_under_smooth_structure(rng):
    y, x = np.mgrid[:128, :128]
    arc = 50 * np.exp(-((np.hypot(x - 64, y - 64) - 30) ** 2) / 40)
    image = arc + rng.normal(0, 2.0, arc.shape)
    assert abs(noise_sigma(image) / 2.0 - 1) < 0.05
