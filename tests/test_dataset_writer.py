"""Writing and reading data sets through the real CLI: determinism, resume, parallelism, errors."""

import json
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

import deeplense
from conftest import CLI, run_cli

TINY = ["--preset", "model_i", "--set", "instrument.size=16", "--set", "instrument.pixel_scale=0.2"]


def all_images(root):
    ds = deeplense.open_dataset(root)
    order = np.argsort(ds.metadata["index"].to_numpy())
    return np.stack([ds[int(i)][0].numpy() for i in order]), ds.metadata.iloc[order].reset_index(drop=True)


def test_simulate_writes_a_self_describing_dataset(tmp_path):
    out = tmp_path / "ds"
    result = run_cli("simulate", *TINY, "--n-per-class", 10, "--out", out, "--seed", 3, "--shard-size", 8)
    assert "wrote 30 images" in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["class_names"] == ["no_sub", "cdm", "axion"]
    assert manifest["counts"]["cdm"] == {"train": 8, "val": 1, "test": 1}
    assert manifest["image"]["shape"] == [1, 16, 16] and manifest["image"]["pixel_units"] == ["counts"]
    assert len(manifest["shards"]) == 4
    ds = deeplense.open_dataset(out)
    assert len(ds) == 30 and ds.class_names == ["no_sub", "cdm", "axion"]
    image, label, params = ds[4]
    assert image.dtype == np.float32 or str(image.dtype) == "torch.float32"
    assert tuple(image.shape) == (1, 16, 16) and label == 1
    assert params["main_lens.theta_E"] == pytest.approx(1.2814906, rel=2e-6)
    meta = ds.metadata
    assert sorted(meta["index"]) == list(range(30))
    axion = meta[meta["class_name"] == "axion"]
    assert axion["substructure.log10_m_a"].between(-24, -22).all()
    assert meta[meta["class_name"] == "cdm"]["substructure.log10_m_a"].isna().all()
    assert meta["seed"].nunique() == 30
    with h5py.File(out / "shards" / "shard-00000.h5") as f:
        assert f["subhalos/point_mass"].shape[1:] == (100, 3)
        assert f["params/substructure.log10_m_a"].attrs["unit"] == "log10(eV)"
    train = deeplense.open_dataset(out, split="train")
    assert len(train) == 24 and set(train.metadata["split"]) == {"train"}


def test_same_command_is_bit_identical_and_workers_do_not_matter(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run_cli("simulate", *TINY, "--n-per-class", 8, "--out", a, "--seed", 5, "--shard-size", 5)
    run_cli("simulate", *TINY, "--n-per-class", 8, "--out", b, "--seed", 5, "--shard-size", 5, "--workers", 2)
    images_a, meta_a = all_images(a)
    images_b, meta_b = all_images(b)
    assert np.array_equal(images_a, images_b)
    assert meta_a.equals(meta_b)


def test_regenerate_one_image_from_its_seed(tmp_path):
    out = tmp_path / "ds"
    run_cli("simulate", *TINY, "--n-per-class", 4, "--out", out, "--seed", 1)
    result = run_cli("simulate", "--regenerate", out, "--index", 7, "--save", tmp_path / "img.npy")
    assert "max |regenerated - stored| = 0" in result.stdout
    stored = all_images(out)[0][7]
    assert np.array_equal(np.load(tmp_path / "img.npy"), stored)


def test_data_set_from_before_noise_scheme_2_still_regenerates(tmp_path):
    """A data set whose config.yaml records no noise generator (written before scheme 2 existed,
    made here with scheme 1 and the record removed) regenerates exactly; finishing it with today's
    default config is refused, naming the generator."""
    out = tmp_path / "old"
    legacy = [*TINY, "--set", "instrument.bands.0.noise.options.generator=1"]
    run_cli("simulate", *legacy, "--n-per-class", 3, "--out", out, "--seed", 2)
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["instrument"]["bands"][0]["noise"]["options"].pop("generator") == 1
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for index in (1, 4, 8):
        result = run_cli("simulate", "--regenerate", out, "--index", index)
        assert "max |regenerated - stored| = 0" in result.stdout
    resumed = run_cli("simulate", *TINY, "--n-per-class", 3, "--out", out, "--seed", 2, check=False)
    assert resumed.returncode != 0 and "noise.options.generator" in resumed.stdout + resumed.stderr
    # a config whose classes were reordered (e.g. by a tool that sorts keys) is refused, not misread
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=True))
    reordered = run_cli("simulate", "--regenerate", out, "--index", 8, check=False)
    assert reordered.returncode != 0 and "differ from the data set's" in reordered.stdout + reordered.stderr


def test_killed_run_resumes_without_losing_or_duplicating(tmp_path):
    out, reference = tmp_path / "ds", tmp_path / "ref"
    args = ["simulate", *TINY, "--n-per-class", "40", "--seed", "9", "--shard-size", "6"]
    proc = subprocess.Popen([*CLI, *args, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    shards = out / "shards"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(shards.glob("*.h5"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = len(list(shards.glob("*.h5")))
    assert 3 <= written < 20, "the run must be interrupted part-way"
    assert not (out / "manifest.json").exists()
    result = run_cli(*args, "--out", out)
    assert "wrote 120 images" in result.stdout
    rendered = int(result.stdout.split("(")[2].split()[0])
    assert rendered == 120 - 6 * written
    run_cli(*args, "--out", reference)
    images, meta = all_images(out)
    ref_images, ref_meta = all_images(reference)
    assert sorted(meta["index"]) == list(range(120))
    assert np.array_equal(images, ref_images) and meta.equals(ref_meta)
    assert not list(shards.glob("*.tmp"))


def test_dask_cluster_gives_the_same_dataset(tmp_path):
    distributed = pytest.importorskip("distributed")
    out, reference = tmp_path / "dask", tmp_path / "ref"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        run_cli(
            "simulate",
            *TINY,
            "--n-per-class",
            6,
            "--out",
            out,
            "--seed",
            2,
            "--shard-size",
            4,
            "--scheduler",
            cluster.scheduler_address,
        )
    run_cli("simulate", *TINY, "--n-per-class", 6, "--out", reference, "--seed", 2, "--shard-size", 4)
    assert np.array_equal(all_images(out)[0], all_images(reference)[0])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "lens.0.params.e1=0.9"], "lens.0.params.e1"),
        (["--set", "lens.0.params.typo=1"], "lens.0.params.typo"),
        (["--set", "instrument.nonsense=1"], "instrument.nonsense"),
        (["--split", "train=0.8,val=0.3"], "sum to 1"),
        (["--split", "train=0.8,test=x"], "split.test"),
        (["--set", "classes.axion.params.log10_m_a={uniform: [-22, -24]}"], "classes.axion.params.log10_m_a"),
        (["--set", "instrument.bands.0.noise.kind=warp"], "instrument.bands.0.noise.kind"),
    ],
)
def test_bad_configs_fail_before_any_work_naming_the_key(tmp_path, extra, message):
    out = tmp_path / "bad"
    result = run_cli("simulate", *TINY, "--n-per-class", 2, "--out", out, *extra, check=False)
    assert result.returncode == 2
    assert message in result.stderr
    assert not out.exists()


def test_config_file_unknown_top_level_key(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        Path(deeplense.__file__).parent.joinpath("sim/presets/model_i.yaml").read_text() + "\nlense: []\n"
    )
    result = run_cli("simulate", "--config", config, "--n-per-class", 2, "--out", tmp_path / "o", check=False)
    assert result.returncode == 2 and "lense" in result.stderr


def test_refuses_to_mix_two_datasets_in_one_directory(tmp_path):
    out = tmp_path / "ds"
    run_cli("simulate", *TINY, "--n-per-class", 2, "--out", out, "--seed", 1)
    result = run_cli("simulate", *TINY, "--n-per-class", 2, "--out", out, "--seed", 2, check=False)
    assert result.returncode == 2 and "dataset.seed" in result.stderr


def test_truncated_shard_is_reported_with_its_name(tmp_path):
    out = tmp_path / "ds"
    run_cli("simulate", *TINY, "--n-per-class", 2, "--out", out)
    shard = out / "shards" / "shard-00000.h5"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 3])
    with pytest.raises(deeplense.data.shards.DataFormatError, match="shard-00000.h5"):
        deeplense.open_dataset(out)


def test_presets_command_lists_the_deeplense_models():
    result = run_cli("presets")
    for name in ("model_i", "model_ii", "model_iii"):
        assert name in result.stdout


def test_model_ii_and_iii_presets_render(tmp_path):
    for preset in ("model_ii", "model_iii"):
        out = tmp_path / preset
        run_cli("simulate", "--preset", preset, "--set", "instrument.size=16", "--n-per-class", 2, "--out", out)
        images, meta = all_images(out)
        assert images.shape == (6, 1, 16, 16) and np.isfinite(images).all()
