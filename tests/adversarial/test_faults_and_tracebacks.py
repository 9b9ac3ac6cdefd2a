"""Faults and malformed input that used to end in a traceback, a stuck run or a leak: each ends in
one clear line, or is handled, and nothing already finished is lost."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from deeplense import open_dataset
from deeplense.core.errors import DataFormatError

from .conftest import CLI, mount_tmpfs, unmount

SIM = ["--preset", "model_i", "--set", "instrument.size=16"]


@pytest.mark.parametrize(
    ("corrupt", "match"),
    [
        (lambda text: text[: len(text) // 2], r"manifest\.json: not valid JSON"),
        (lambda text: "[1, 2, 3]", r"manifest\.json: expected a JSON object"),
        (lambda text: text.replace('"shards"', '"shardz"'), r"field 'shards' is missing"),
        (lambda text: text.replace('"class_names"', '"classes_"'), r"field 'class_names' is missing"),
        (lambda text: text.replace('"start": 0', '"start": 5'), r"field 'shards\[0\]' covers 5"),
        (lambda text: text.replace('"n_images": 36', '"n_images": 99999999999'), r"the shards hold 36 images"),
        (lambda text: text.replace('"shape": [', '"shape": ["x", '), r"field 'image\.shape'"),
        (lambda text: "\xff\xfe" + text, r"manifest\.json: not valid JSON"),
    ],
)
def test_corrupt_manifests_are_one_clear_error(tiny_dataset, attack, corrupt, match):
    data = attack.copy(tiny_dataset)
    manifest = data / "manifest.json"
    manifest.write_bytes(corrupt(manifest.read_text()).encode("utf-8", "surrogateescape"))
    attack.api(lambda: open_dataset(data), error=DataFormatError, match=match)


def test_a_symlink_loop_in_a_data_folder_is_no_traceback(tmp_path, attack):
    from layouts import model_i

    root = tmp_path / "Model_I"
    model_i(root, n=2)
    os.symlink("loop.npy", root / "cdm" / "loop.npy")  # points at itself
    os.symlink(root, root / "axion" / "up")  # a folder link back up the tree
    attack.cli("data", "inspect", root, expect="no traceback")


def test_non_utf8_file_names_are_no_traceback(tmp_path, attack):
    from layouts import model_i

    root = tmp_path / "Model_I"
    model_i(root, n=2)
    name = os.fsencode(root / "cdm") + b"/\xff\xfe-image.npy"
    with open(name, "wb") as f:
        np.save(f, np.ones((16, 16), np.float32))
    attack.cli("data", "inspect", root, expect="no traceback")
    attack.cli("data", "convert", root, "--out", tmp_path / "out", expect="no traceback")


def test_a_read_only_output_folder_is_one_clear_line(tmp_path, attack):
    target = tmp_path / "ro"
    if not mount_tmpfs(target, "1m", read_only=True):
        pytest.skip("this machine does not allow mounting a read-only tmpfs")
    try:
        attack.cli("simulate", *SIM, "--n-per-class", 1, "--out", target / "x", match=r"ro/x: cannot write")
    finally:
        unmount(target)


def test_set_values_that_are_not_yaml_name_the_key(tmp_path, attack):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"data": {"simulate": {"preset": "model_i", "train": 4}}}))
    attack.cli("train", config, "--set", "train.lr=[1, 2", match=r"train\.lr: the value '\[1, 2' is not valid YAML")


def test_cuda_device_without_cuda_is_one_clear_line(tmp_path, attack):
    attack.cli(
        "simulate",
        *SIM,
        "--n-per-class",
        1,
        "--out",
        tmp_path / "x",
        "--device",
        "cuda",
        match=r"device: cuda: this machine has no CUDA",
    )


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("data.transforms=[{name: minmax, strength: 3}]", r"data\.transforms\.0: minmax: .*strength"),
        ("model.kwargs={depthh: 2}", r"model: small_cnn: .*depthh"),
        ("model.name=resnet_18", r"model\.name: unknown model 'resnet_18'"),
        ("model.pretrained=/nowhere/weights.pth", r"/nowhere/weights\.pth: no such weight file"),
        ("train.batch_size=0", r"train\.batch_size: must be > 0"),
    ],
)
def test_bad_transform_and_model_arguments_are_one_clear_line_and_leave_no_run(tmp_path, attack, override, match):
    config = tmp_path / "c.yaml"
    sim = {"preset": "model_i", "set": ["instrument.size=16"], "train": 8, "val": 4}
    config.write_text(yaml.safe_dump({"data": {"simulate": sim}, "run": {"dir": str(tmp_path / "runs"), "name": "r"}}))
    attack.cli("train", config, "--set", override, match=match)
    assert not (tmp_path / "runs" / "r").exists()


def test_simulate_batch_size_zero_is_one_clear_line(tmp_path, attack):
    attack.cli(
        "simulate",
        *SIM,
        "--n-per-class",
        1,
        "--out",
        tmp_path / "x",
        "--batch-size",
        0,
        match=r"batch_size: expected a whole number >= 1",
    )


def test_a_full_disk_stops_simulate_cleanly_and_the_rerun_finishes_the_same_images(tmp_path, attack):
    disk = tmp_path / "disk"
    if not mount_tmpfs(disk, "256k"):
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        args = [*SIM, "--set", "instrument.size=32", "--n-per-class", 20, "--shard-size", 6, "--seed", 3]
        attack.cli(
            "simulate",
            *args,
            "--out",
            disk / "ds",
            match=r"no space left on the device; everything finished so far is kept",
        )
        kept = sorted(p.name for p in (disk / "ds" / "shards").iterdir())
        assert kept and not [n for n in kept if n.endswith(".tmp")]
        subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
        attack.cli("simulate", *args, "--out", disk / "ds", expect="handled")
        attack.cli("simulate", *args, "--out", tmp_path / "reference", expect="handled")
        resumed, reference = open_dataset(disk / "ds"), open_dataset(tmp_path / "reference")
        same = np.array_equal(resumed.images(np.arange(60)), reference.images(np.arange(60)))
        attack.handled(same and len(resumed) == 60, "resumed images differ from an uninterrupted run")
    finally:
        unmount(disk)


def test_a_full_disk_stops_convert_cleanly(tmp_path, attack):
    from layouts import model_i

    model_i(tmp_path / "src", n=40, size=32)
    disk = tmp_path / "disk"
    if not mount_tmpfs(disk, "100k"):
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        attack.cli(
            "data", "convert", tmp_path / "src", "--out", disk / "out", "--shard-size", 16, match=r"no space left"
        )
        assert not list((disk / "out" / "shards").glob("*.tmp"))
    finally:
        unmount(disk)


def _crashed_run(tmp_path: Path) -> tuple[Path, Path]:
    """A run directory as a crash before the first checkpoint leaves it: config, contract and
    logs, no checkpoint."""
    sim = {"preset": "model_i", "set": ["instrument.size=16"], "train": 12, "val": 6, "test": 6}
    config = {
        "data": {"simulate": sim, "transforms": ["minmax"]},
        "model": {"name": "small_cnn", "kwargs": {"widths": [4, 8]}},
        "train": {"epochs": 1, "batch_size": 6, "threads": 1},
        "logging": {"progress_bar": False},
        "run": {"dir": str(tmp_path / "runs"), "name": "crashed"},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    run = tmp_path / "runs" / "crashed"
    (run / "logs" / "session-0").mkdir(parents=True)
    from deeplense.train.config import resolve_config

    (run / "config.yaml").write_text(yaml.safe_dump(resolve_config(path)))
    (run / "contract.json").write_text("{}")
    return path, run


def test_a_run_that_died_before_its_first_checkpoint_starts_again(tmp_path, attack):
    config, run = _crashed_run(tmp_path)
    attack.cli("train", config, expect="handled")
    attack.handled((run / "checkpoints" / "last.ckpt").exists() and (run / "summary.json").exists(), "no checkpoint")


def test_a_run_that_died_before_its_first_checkpoint_resumes(tmp_path, attack):
    _, run = _crashed_run(tmp_path)
    attack.cli("train", "--resume", run, expect="handled")
    attack.handled(json.loads((run / "summary.json").read_text())["epochs_completed"] == 1, "not trained")


def test_a_second_simulate_on_the_same_output_is_refused_while_the_first_runs(tmp_path, attack):
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".lock", "w") as held:  # the first writer holds the lock
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("4242")
        held.flush()
        attack.cli(
            "simulate",
            *SIM,
            "--n-per-class",
            2,
            "--out",
            out,
            match=r"out is in use by another deeplense process \(pid 4242\)",
        )
    attack.cli("simulate", *SIM, "--n-per-class", 2, "--out", out, expect="handled")  # the lock went with its holder


def _group_processes(pgid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def test_workers_exit_when_the_main_simulate_process_is_killed(tmp_path, attack):
    out = tmp_path / "out"
    args = [*CLI, "simulate", *SIM, "--set", "instrument.size=64", "--n-per-class", "4000", "--shard-size", "50"]
    main = subprocess.Popen(
        [*args, "--workers", "2", "--out", str(out)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(_group_processes(main.pid)) < 3:  # main, two workers (and the tracker)
        time.sleep(0.5)
    assert len(_group_processes(main.pid)) >= 3, "the workers never started"
    os.kill(main.pid, signal.SIGKILL)
    main.wait()
    deadline = time.time() + 30
    while time.time() < deadline and _group_processes(main.pid):
        time.sleep(0.5)
    left = _group_processes(main.pid)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    attack.handled(not left, f"processes left running: {left}", "leak")


def test_tune_marks_a_trial_left_running_by_a_killed_study_as_failed(tmp_path, attack):
    import optuna

    out = tmp_path / "study"
    out.mkdir()
    storage = f"sqlite:///{out / 'optuna.db'}"
    study = optuna.create_study(study_name="deeplense", storage=storage, direction="maximize")
    study.ask()  # a trial that was RUNNING when its process was killed
    (out / "trials" / "trial-0").mkdir(parents=True)
    sim = {"preset": "model_i", "set": ["instrument.size=16"], "train": 12, "val": 6}
    config = tmp_path / "t.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"simulate": sim, "transforms": ["minmax"]},
                "model": {"name": "small_cnn", "kwargs": {"widths": [4]}},
                "train": {"epochs": 1, "batch_size": 6, "threads": 1},
                "logging": {"progress_bar": False},
                "tune": {"space": {"train.lr": {"low": 1.0e-3, "high": 1.0e-2, "log": True}}},
            }
        )
    )
    attack.cli("tune", config, "--trials", 2, "--out", out, expect="handled")
    states = [t.state.name for t in optuna.load_study(study_name="deeplense", storage=storage).trials]
    renamed = (out / "trials" / "trial-0.interrupted").exists()
    attack.handled(states[0] == "FAIL" and "RUNNING" not in states and renamed, f"{states}", "stuck")


def test_a_full_disk_stops_training_cleanly_and_the_run_continues_after(tmp_path, attack):
    disk = tmp_path / "disk"
    if not mount_tmpfs(disk, "48k"):
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        sim = {"preset": "model_i", "set": ["instrument.size=16"], "train": 12, "val": 6, "test": 6}
        config = tmp_path / "c.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "data": {"simulate": sim, "transforms": ["minmax"]},
                    "model": {"name": "small_cnn", "kwargs": {"widths": [8, 16, 32]}},
                    "train": {"epochs": 2, "batch_size": 6, "threads": 1},
                    "logging": {"progress_bar": False},
                    "run": {"dir": str(disk / "runs"), "name": "r"},
                }
            )
        )
        attack.cli("train", config, match=r"runs/r: no space left on the device")
        assert not list((disk / "runs" / "r" / "checkpoints").glob("*.tmp"))
        subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
        attack.cli("train", "--resume", disk / "runs" / "r", expect="handled")
        summary = json.loads((disk / "runs" / "r" / "summary.json").read_text())
        attack.handled(summary["epochs_completed"] == 2 and "test" in summary, json.dumps(summary)[:500])
    finally:
        unmount(disk)
