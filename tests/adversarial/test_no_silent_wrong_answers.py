"""Bad data and configs that used to give a result anyway: each must now be a clear error."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from deeplense import open_dataset
from deeplense.core.config import ConfigError
from deeplense.core.errors import DataFormatError
from deeplense.train.config import resolve_config

from .conftest import CLI


def _edit_manifest(data: Path, edit) -> None:
    manifest = json.loads((data / "manifest.json").read_text())
    edit(manifest)
    (data / "manifest.json").write_text(json.dumps(manifest))


def test_manifest_image_shape_that_disagrees_with_the_shards_is_refused(tiny_dataset, attack):
    data = attack.copy(tiny_dataset)
    _edit_manifest(data, lambda m: m["image"].update(shape=[1, 8, 32]))
    attack.refused_to_open(data, r"shard-00000\.h5: images are \(1, 16, 16\), the manifest says \(1, 8, 32\)")


def test_manifest_with_fewer_class_names_than_labels_is_refused(tiny_dataset, attack):
    data = attack.copy(tiny_dataset)
    _edit_manifest(data, lambda m: m.update(class_names=["no_sub", "cdm"]))
    attack.refused_to_open(data, r"labels outside 0\.\.1")


def test_negative_label_in_a_shard_is_refused(tiny_dataset, attack):
    data = attack.copy(tiny_dataset)
    with h5py.File(data / "shards" / "shard-00001.h5", "a") as f:
        f["label"][0] = -1
    attack.refused_to_open(data, r"shard-00001\.h5: labels outside 0\.\.2")


def test_flipped_pixel_bytes_are_found_by_verify_and_by_the_full_check(tmp_path, attack):
    data = tmp_path / "fresh"
    attack.cli(
        "simulate",
        "--preset",
        "model_i",
        "--set",
        "instrument.size=16",
        "--n-per-class",
        4,
        "--out",
        data,
        "--shard-size",
        6,
        expect="handled",
    )
    shard = data / "shards" / "shard-00000.h5"
    with h5py.File(shard, "r") as f:
        offset = f["images"].id.get_chunk_info(0).byte_offset  # the first image's pixels
    raw = bytearray(shard.read_bytes())
    raw[offset + 101] ^= 0x01  # one pixel's low mantissa bit: still a finite, plausible float
    shard.write_bytes(bytes(raw))
    verify = subprocess.run([*CLI, "data", "verify", str(data)], capture_output=True, text=True)
    attack.handled(
        verify.returncode == 1 and "SHA-256" in verify.stdout, verify.stdout + verify.stderr, "silently wrong"
    )
    attack.api(lambda: open_dataset(data, check="full"), error=DataFormatError, match=r"shard-00000\.h5: SHA-256")


def test_convert_refuses_to_finish_one_source_with_another(tmp_path, attack):
    from layouts import model_i

    model_i(tmp_path / "A", n=4, seed=1)
    model_i(tmp_path / "B", n=4, seed=2)
    out = tmp_path / "converted"
    attack.cli("data", "convert", tmp_path / "A", "--out", out, expect="handled")
    (out / "manifest.json").unlink()  # as if the conversion of A had been interrupted
    attack.cli(
        "data",
        "convert",
        tmp_path / "B",
        "--out",
        out,
        match=r"converted_from: .*interrupted conversion of another source",
    )


BASE = {"data": {"simulate": {"preset": "model_i", "set": ["instrument.size=16"], "train": 8}}}


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("train.max_minutes=-1", r"^train\.max_minutes: expected null \(off\) or a number > 0"),
        ("data.max_train=-5", r"^data\.max_train: expected null \(off\) or a whole number > 0"),
        ("train.epochs=1.7", r"^train\.epochs: expected a whole number, got 1\.7"),
        ("data.split_fractions={train: 0.5, val: 0.2}", r"^data\.split_fractions: fractions must sum to 1"),
        ("data.split_fractions={train: 2, test: -1}", r"^data\.split_fractions\.train: fraction must be in \[0, 1\]"),
        ("data.splits={train: train, val: val, test: train}", r"^data\.splits\.test: names the training split"),
        ("run.name=../../escaped", r"^run\.name: expected a plain folder name"),
        ("run.name=/tmp/absolute", r"^run\.name: expected a plain folder name"),
        ("train.batch_size=0", r"^train\.batch_size: must be > 0"),
        ("train.accelerator=gpu", r"^train\.accelerator: gpu: this machine has no CUDA device"),
        ("data.transforms=[minmax, {name: mixup, alpha: 0.2}]", r"^data\.transforms\.1\.name: mixup mixes labels"),
    ],
)
def test_config_values_that_used_to_be_bent_are_refused(override, match, attack):
    attack.api(lambda: resolve_config(BASE, [override]), error=ConfigError, match=match)


def test_more_than_64_integer_classes_stay_classes(tmp_path, attack):
    images = np.random.default_rng(0).normal(size=(200, 8, 8)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "labels.npy", np.arange(200) % 100)
    source = open_dataset(tmp_path / "images.npy")
    attack.handled(
        len(source.class_names) == 100 and not source.parameter_columns, f"{source.class_names[:5]}", "silently wrong"
    )


def test_complex_images_are_refused_not_cut_to_their_real_part(tmp_path, attack):
    np.save(tmp_path / "images.npy", np.ones((4, 8, 8), dtype=np.complex64) * (1 + 2j))
    np.save(tmp_path / "labels.npy", np.arange(4) % 2)
    attack.api(
        lambda: open_dataset(tmp_path / "images.npy"),
        error=DataFormatError,
        match=r"images\.npy: dtype complex64 is complex",
    )


def test_a_fractional_image_size_is_refused_not_truncated(tmp_path, attack):
    attack.cli(
        "simulate",
        "--preset",
        "model_i",
        "--set",
        "instrument.size=31.5",
        "--n-per-class",
        1,
        "--out",
        tmp_path / "x",
        match=r"instrument\.size: expected a whole number, got 31\.5",
    )


def test_evaluate_on_data_with_nan_pixels_names_the_file(tiny_runs, tmp_path, attack):
    from layouts import model_i

    root = tmp_path / "Model_I"
    model_i(root, n=3)
    np.save(root / "cdm" / "broken.npy", np.full((16, 16), np.nan, dtype=np.float32))
    attack.cli("evaluate", tiny_runs["cls"], "--data", root, "--out", tmp_path / "ev", match=r"broken\.npy")
    assert not (tmp_path / "ev").exists()  # nothing half-written


def test_evaluate_on_data_missing_a_class_reports_what_it_can(tiny_runs, tmp_path, attack):
    from layouts import model_i

    root = tmp_path / "Model_I"
    model_i(root, n=3)
    shutil.rmtree(root / "axion")
    result = attack.cli(
        "evaluate",
        tiny_runs["cls"],
        "--data",
        root,
        "--out",
        tmp_path / "ev",
        "--bootstrap",
        20,
        "--pixel-scale",
        0.2,
        "--allow-out-of-domain",
        expect="handled",
    )  # random pixels: declared at the model's scale, and let through its domain check
    assert "AUC undefined" in result.stdout or "auc" in result.stdout
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["n"] == 6 and "auc_macro" not in metrics  # no macro AUC over a class with no images


def test_train_config_yaml_written_by_the_run_round_trips(tmp_path, attack):
    """The resolved config a run writes is read back identically (no key lost or bent)."""
    config = resolve_config(BASE)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    attack.handled(resolve_config(path) == config, "", "silently wrong")
