"""The training engine end to end: CLI runs, checkpoints, exact resume, config errors."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import CLI
from conftest import run_cli as run
from deeplense.core.config import ConfigError
from deeplense.infer import load_predictor
from deeplense.train.config import resolve_config

TINY_SIM = {
    "preset": "model_i",
    "set": ["instrument.size=32", "instrument.pixel_scale=0.2"],
    "seed": 0,
    "train": 96,
    "val": 48,
    "test": 48,
}


def write_config(path, **sections):
    config = {
        "task": "classification",
        "data": {"simulate": TINY_SIM, "transforms": ["minmax", "dihedral"]},
        "model": {"name": "small_cnn", "kwargs": {"widths": [8, 16]}},
        "train": {"epochs": 2, "batch_size": 16, "threads": 1},
        "logging": {"progress_bar": False},
        "run": {"dir": str(path.parent / "runs"), "name": path.stem},
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(config))
    return path


def test_classification_run_writes_a_complete_run_directory(tmp_path):
    config = write_config(tmp_path / "cls.yaml")
    result = run("train", config, "--set", "train.lr=3e-3")
    run_dir = tmp_path / "runs" / "cls"
    assert f"run: {run_dir}" in result.stdout and "test (48 images)" in result.stdout
    for name in (
        "config.yaml",
        "contract.json",
        "metrics.csv",
        "summary.json",
        "test_metrics.json",
        "predictions_test.csv",
    ):
        assert (run_dir / name).exists(), name
    assert (run_dir / "checkpoints" / "best.ckpt").exists() and (run_dir / "checkpoints" / "last.ckpt").exists()
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["train"]["lr"] == 3e-3 and resolved["train"]["scheduler"] == "cosine"  # defaults written out
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert {"train_loss_epoch", "val_loss", "val_auc_macro", "val_acc"} <= set(metrics.columns)
    test = json.loads((run_dir / "test_metrics.json").read_text())
    assert test["n"] == 48 and set(test["auc_per_class"]) == {"no_sub", "cdm", "axion"}
    assert np.asarray(test["confusion_matrix"]).sum() == 48
    # the checkpoint alone rebuilds the model and reproduces the test predictions
    model = load_predictor(run_dir)
    assert model.contract.output.class_names == ["no_sub", "cdm", "axion"] and model.contract.input.img_size == 32
    assert model.contract.input.bands == ["model_i"] and model.contract.input.pixel_scale_arcsec == pytest.approx(0.2)
    from deeplense.data.datasets import SimulatedImages
    from deeplense.train.data import simulation_config

    raw = SimulatedImages(simulation_config(TINY_SIM), 2, 48).raw_images(np.arange(48))
    stored = pd.read_csv(run_dir / "predictions_test.csv")
    np.testing.assert_allclose(model.predict(raw)["probs"], stored[["p_no_sub", "p_cdm", "p_axion"]], atol=1e-5)


def test_regression_on_stored_axion_images_with_uncertainty(tiny_dataset, tmp_path):
    config = write_config(
        tmp_path / "reg.yaml",
        task="regression",
        data={
            "simulate": None,
            "path": str(tiny_dataset),
            "classes": ["axion"],
            "targets": ["substructure.log10_m_a"],
            "transforms": ["minmax"],
        },
        # the equivariant network's 5-D group-convolution weights must survive channels_last (default)
        model={"name": "d4_cnn", "kwargs": {"widths": [4, 8], "group": "d2"}},
        train={"epochs": 2, "batch_size": 4, "scheduler": "onecycle", "ema_decay": 0.9, "grad_clip": 1.0},
    )
    run("train", config)
    run_dir = tmp_path / "runs" / "reg"
    contract = json.loads((run_dir / "contract.json").read_text())
    assert contract["version"] == 1 and contract["task"] == "regression"
    output = contract["output"]
    assert output["targets"] == ["substructure.log10_m_a"] and output["target_units"] == ["log10(eV)"]
    assert -24 < output["target_mean"][0] < -22
    test = json.loads((run_dir / "test_metrics.json").read_text())
    entry = test["substructure.log10_m_a"]
    assert entry["unit"] == "log10(eV)" and 0 <= entry["coverage_68"] <= entry["coverage_95"] <= 1
    split = pd.read_csv(run_dir / "split.csv")
    assert set(split["split"]) == {"train", "val", "test"} and len(split) == 12
    predictions = pd.read_csv(run_dir / "predictions_test.csv")
    assert (predictions["sigma_substructure.log10_m_a"] > 0).all()


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_an_interrupted_run_resumes_exactly(tmp_path):
    sections = {"train": {"epochs": 4, "batch_size": 16, "threads": 1, "ema_decay": 0.5}}
    run("train", write_config(tmp_path / "straight.yaml", **sections))
    config = write_config(tmp_path / "killed.yaml", **sections)
    run_dir = tmp_path / "runs" / "killed"
    proc = subprocess.Popen([*CLI, "train", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (run_dir / "checkpoints" / "last.ckpt").exists():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    epoch = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["epoch"]
    assert epoch < 3, "the run finished before it could be interrupted"
    result = run("train", "--resume", run_dir)
    assert "epochs: 4" in result.stdout
    straight, resumed = (
        _weights(tmp_path / "runs" / "straight" / "checkpoints" / "last.ckpt"),
        _weights(run_dir / "checkpoints" / "last.ckpt"),
    )
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    epochs = pd.read_csv(run_dir / "metrics.csv").dropna(subset=["val_loss"])["epoch"].tolist()
    assert sorted(set(epochs)) == [0, 1, 2, 3]


def test_config_errors_name_the_key(tmp_path):
    base = {"data": {"simulate": TINY_SIM}}
    with pytest.raises(ConfigError, match=r"^train.lrr: unknown key"):
        resolve_config({**base, "train": {"lrr": 1}})
    with pytest.raises(ConfigError, match=r"^train.optimizer: must be one of"):
        resolve_config({**base, "train": {"optimizer": "adam"}})
    with pytest.raises(ConfigError, match=r"^train.epochs: must be > 0"):
        resolve_config(base, ["train.epochs=0"])
    with pytest.raises(ConfigError, match=r"^data: give exactly one of data.path and data.simulate"):
        resolve_config({"data": {"simulate": TINY_SIM, "path": str(tmp_path)}})
    with pytest.raises(ConfigError, match=r"^data.targets: a regression task needs"):
        resolve_config({**base, "task": "regression"})
    with pytest.raises(ConfigError, match=r"^data.transforms.0.name: unknown transform"):
        resolve_config({"data": {"simulate": TINY_SIM, "transforms": ["flipp"]}})
    with pytest.raises(ConfigError, match=r"^data.path: .*nowhere: no such file"):
        resolve_config({"data": {"path": str(tmp_path / "nowhere")}})
    result = run("train", write_config(tmp_path / "bad.yaml"), "--set", "train.sheduler=cosine", check=False)
    assert result.returncode == 2 and "train.sheduler: unknown key" in result.stderr


def test_tune_runs_an_optuna_study_in_sqlite_and_writes_the_best_config(tmp_path):
    import sqlite3

    config = write_config(
        tmp_path / "tune.yaml",
        train={"epochs": 2, "batch_size": 16, "threads": 1},
        tune={
            "trials": 3,
            "space": {
                "train.lr": {"low": 1e-4, "high": 1e-2, "log": True},
                "model.kwargs.widths": {"choices": [[8], [8, 16]]},
            },
        },
    )
    result = run("tune", config, "--out", tmp_path / "study")
    assert "best trial" in result.stdout and "3 trials" in result.stdout
    best = yaml.safe_load((tmp_path / "study" / "best_config.yaml").read_text())
    assert 1e-4 <= best["train"]["lr"] <= 1e-2 and best["model"]["kwargs"]["widths"] in ([8], [8, 16])
    with sqlite3.connect(tmp_path / "study" / "optuna.db") as db:
        assert db.execute("select count(*) from trials").fetchone()[0] == 3
    trials = pd.read_csv(tmp_path / "study" / "trials.csv")
    assert len(trials) == 3 and "params_train.lr" in trials
    # the study continues where it stopped
    result = run("tune", config, "--out", tmp_path / "study", "--trials", "4")
    with sqlite3.connect(tmp_path / "study" / "optuna.db") as db:
        assert db.execute("select count(*) from trials").fetchone()[0] == 4


def test_ensemble_of_two_runs_by_mean_and_stacking(tmp_path):
    for seed in (0, 1):
        run(
            "train",
            write_config(tmp_path / f"m{seed}.yaml", train={"epochs": 2, "batch_size": 16, "threads": 1, "seed": seed}),
        )
    runs = [tmp_path / "runs" / "m0", tmp_path / "runs" / "m1"]
    for method in ("mean", "stack"):
        result = run("ensemble", *runs, "--out", tmp_path / method, "--method", method)
        assert f"ensemble ({method})" in result.stdout
        report = json.loads((tmp_path / method / "ensemble_metrics.json").read_text())
        assert report["n_test"] == 48 and len(report["member_metrics"]) == 2
        probs = pd.read_csv(tmp_path / method / "predictions_test.csv")[["p_no_sub", "p_cdm", "p_axion"]].to_numpy()
        np.testing.assert_allclose(probs.sum(1), 1, atol=1e-6)
    members = [pd.read_csv(r / "predictions_test.csv")[["p_no_sub", "p_cdm", "p_axion"]].to_numpy() for r in runs]
    mean = pd.read_csv(tmp_path / "mean" / "predictions_test.csv")[["p_no_sub", "p_cdm", "p_axion"]].to_numpy()
    np.testing.assert_allclose(mean, (members[0] + members[1]) / 2, atol=1e-5)


def test_data_parallel_training_with_two_cpu_processes(tmp_path):
    config = write_config(
        tmp_path / "ddp.yaml",
        train={"epochs": 2, "batch_size": 16, "threads": 1, "devices": 2, "strategy": "ddp", "accelerator": "cpu"},
    )
    result = run("train", config)
    run_dir = tmp_path / "runs" / "ddp"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs_completed"] == 2
    test = json.loads((run_dir / "test_metrics.json").read_text())
    assert test["n"] == 48  # predictions of both processes gathered, each image once
    assert "test (48 images)" in result.stdout


def test_optional_loggers_tensorboard_mlflow_sqlite_and_wandb_offline(tmp_path):
    import sqlite3

    config = write_config(
        tmp_path / "logged.yaml",
        data={"simulate": {**TINY_SIM, "train": 32, "val": 16, "test": 0}},
        train={"epochs": 1, "batch_size": 16, "threads": 1},
        logging={"tensorboard": True, "mlflow": True, "wandb": True, "progress_bar": False, "log_every_n_steps": 1},
    )
    env_result = subprocess.run(
        [*CLI, "train", str(config)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"},
    )
    assert env_result.returncode == 0, env_result.stderr
    run_dir = tmp_path / "runs" / "logged"
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    with sqlite3.connect(tmp_path / "runs" / "mlflow.db") as db:
        keys = {row[0] for row in db.execute("select key from metrics")}
    assert {"train_loss_step", "val_loss"} <= keys
    assert list((run_dir / "wandb").glob("offline-run-*"))


def test_ema_warms_up_so_the_initial_weights_do_not_linger():
    from deeplense.tasks.base import ema_update

    update = ema_update(0.999)
    averaged, current = [torch.zeros(3), torch.tensor(0)], [torch.ones(3), torch.tensor(7)]
    for n in range(200):
        update(averaged, current, torch.tensor(n + 1))
    # plain EMA at 0.999 would still hold 0.999**200 = 82 % of the initial zeros
    assert averaged[0].min() > 0.99 and averaged[1].item() == 7


def test_training_on_a_folder_with_bad_files_stops_or_skips_them(tmp_path):
    from layouts import model_i

    root = tmp_path / "Model_I"
    model_i(root, n=8)
    np.save(root / "cdm" / "nan.npy", np.full((16, 16), np.nan))
    (root / "axion" / "broken.npy").write_bytes(b"\x93NUMPY garbage")
    config = write_config(
        tmp_path / "bad.yaml",
        data={"simulate": None, "path": str(root), "transforms": ["minmax"]},
        train={"epochs": 1, "batch_size": 4, "threads": 1},
    )
    stopped = run("train", config, check=False)
    assert stopped.returncode == 2
    assert "nan.npy: 256 NaN/Inf pixels" in stopped.stderr and "broken.npy" in stopped.stderr
    assert not (tmp_path / "runs" / "bad").exists()  # stopped before training, nothing to clean up
    skipped = run("train", config, "--on-bad-file", "skip")
    assert "skipped 2 bad file(s)" in skipped.stdout
    split = pd.read_csv(tmp_path / "runs" / "bad" / "split.csv")
    assert len(split) == 24 and not split["key"].str.contains("nan.npy").any()


def _regression_module(*overrides: str, **output):
    """The regression task for one target named ``t`` (16x16 single-band images)."""
    from deeplense.core.contract import InputSpec, ModelContract, ModelSpec, OutputSpec
    from deeplense.tasks.regression import Regression

    regression = {"task": "regression", "data": {"simulate": TINY_SIM, "targets": ["substructure.log10_m_a"]}}
    train = resolve_config(regression, list(overrides))["train"]
    contract = ModelContract(
        task="regression",
        model=ModelSpec("small_cnn"),
        input=InputSpec(in_chans=1, img_size=16),
        output=OutputSpec(targets=["t"], target_units=["dex"], **output),
    )
    return Regression(contract, train)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_beta_nll_weights_each_sample_by_its_variance_to_the_power_beta(beta):
    losses = {}
    for name in ("gaussian_nll", "beta_nll"):
        module = _regression_module(f"train.nll_beta={beta}", f"train.loss={name}")
        var = torch.tensor([[0.01], [1.0], [25.0]])
        out = torch.cat([torch.zeros(3, 1), var.log()], 1).requires_grad_()
        y = torch.tensor([1.0, 1.0, 1.0])[:, None]
        loss = module.loss(out, {"target": y})
        (grad,) = torch.autograd.grad(loss, out)
        losses[name] = loss.item()
        # d/d(mean) of the per-sample NLL is (mean - y) / var; beta_nll multiplies it by var**beta
        power = beta if name == "beta_nll" else 0.0
        assert torch.allclose(grad[:, 0], -(var[:, 0] ** (power - 1)) / 3, rtol=1e-5)
    if beta == 0.0:
        assert losses["beta_nll"] == pytest.approx(losses["gaussian_nll"])
    with pytest.raises(ConfigError, match=r"^train.nll_beta: must be in \[0, 1\]"):
        resolve_config({"data": {"simulate": TINY_SIM}}, ["train.nll_beta=2"])


def test_sigma_scaling_fits_the_validation_errors_and_old_checkpoints_load():
    module = _regression_module(target_std=[2.0])
    old_state = {k: v for k, v in module.state_dict().items() if k != "sigma_scale"}
    rng = np.random.default_rng(0)
    mean, sigma = rng.normal(size=(4000, 1)), np.full((4000, 1), 0.5)
    got = {"mean": mean, "sigma": sigma, "target": mean + rng.normal(0, 1.5, size=(4000, 1))}
    # errors three times the predicted sigma: the fitted factor is 3, and a second fit keeps it
    assert np.allclose(module._recalibrate(got), 1.5, rtol=0.05)
    assert module.sigma_scale.item() == pytest.approx(3.0, rel=0.05)
    got["sigma"] = sigma * module.sigma_scale.item()
    module._recalibrate(got)
    assert module.sigma_scale.item() == pytest.approx(3.0, rel=0.05)
    out = torch.tensor([[0.0, np.log(0.25)]])  # normalised mean 0, variance 0.25
    assert module.decode(out)["sigma"].item() == pytest.approx(0.5 * 2.0 * module.sigma_scale.item())
    module.load_state_dict(old_state)  # a checkpoint from before sigma scaling
    assert module.sigma_scale.item() == 1.0


def test_a_task_refuses_data_without_what_it_needs_before_any_work(tiny_dataset, tmp_path):
    from deeplense.train.run import train

    config = {
        "task": "classification",
        "data": {"path": str(tiny_dataset), "classes": ["axion"], "transforms": ["minmax"]},
        "run": {"dir": str(tmp_path), "name": "one_class"},
        "train": {"epochs": 1, "threads": 1},
    }
    with pytest.raises(ConfigError, match=r"needs images of two classes or more; the training split has \['axion'\]"):
        train(resolve_config(config))
    assert not (tmp_path / "one_class").exists()
