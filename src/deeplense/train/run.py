"""``train(config)``: one run directory per run, Lightning fit, resume, and the test evaluation.

A run directory holds::

    config.yaml          the fully resolved config
    contract.json        what a checkpoint needs to be used: model, bands, image size, transforms
                         (with fitted statistics), class names or targets with units and normalisation
    split.csv            the split used (stored data)
    metrics.csv          per-step/epoch metrics, merged over the sessions in logs/session-N/
                         (a resumed run adds a session; Lightning CSV logger)
    checkpoints/best.ckpt, checkpoints/last.ckpt
    test_metrics.json, predictions_test.csv   held-out test evaluation of the best checkpoint
    summary.json         wall time, sizes, hardware, best validation and test numbers
"""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from deeplense.core.config import ConfigError, dump_yaml, load_yaml
from deeplense.train.config import validate_config

__all__ = ["train", "make_run_dir", "hardware", "merge_metrics", "quiet_lightning"]

_RUN_DIR_ENV = "DEEPLENSE_RUN_DIR"


def quiet_lightning() -> None:
    """Drop Lightning's tips and hardware banners; keep its warnings that matter."""
    import logging

    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*is smaller than the logging interval.*")
    warnings.filterwarnings("ignore", ".*Experiment logs directory .* exists and is not empty.*")


def hardware() -> dict[str, Any]:
    info = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def make_run_dir(run: dict[str, Any], config: dict[str, Any], create: bool = True) -> Path:
    name = run["name"] or f"{time.strftime('%Y%m%d-%H%M%S')}-{config['model']['name']}-{config['task']}"
    path = Path(run["dir"]) / name
    if (path / "config.yaml").exists():
        raise ConfigError(
            "run.name", f"{path} already holds a run; resume it with --resume {path} or pick another name"
        )
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def _atomic_checkpoint_io():
    """Checkpoints written to a temporary file and renamed: a kill never leaves a torn file."""
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None):
            path = Path(path)
            tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
            super().save_checkpoint(checkpoint, tmp, storage_options)
            os.replace(tmp, path)

    return AtomicCheckpointIO()


def _sessions(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "logs").glob("session-*"), key=lambda p: int(p.name.split("-")[1]))


def merge_metrics(run_dir: Path) -> Path | None:
    """``metrics.csv`` of a run from the CSV logs of all its sessions (a resumed run is one
    session more): rows a later session recomputed (from the epoch it resumed at) are dropped."""
    frames = []
    for session in _sessions(run_dir):
        path = session / "metrics.csv"
        if not path.exists() or path.stat().st_size == 0:
            continue
        frame = pd.read_csv(path)
        start = json.loads((session / "start.json").read_text())["epoch"] if (session / "start.json").exists() else 0
        frames = [f[f["epoch"] < start] for f in frames] + [frame]
    if not frames:
        return None
    out = run_dir / "metrics.csv"
    pd.concat(frames, ignore_index=True).to_csv(out, index=False)
    return out


def _loggers(config: dict[str, Any], run_dir: Path, first_epoch: int) -> list:
    from lightning.pytorch.loggers import CSVLogger

    log = config["logging"]
    session = len(_sessions(run_dir))
    (run_dir / "logs" / f"session-{session}").mkdir(parents=True, exist_ok=True)
    (run_dir / "logs" / f"session-{session}" / "start.json").write_text(json.dumps({"epoch": first_epoch}))
    loggers: list = [CSVLogger(run_dir / "logs", name="", version=f"session-{session}")]
    try:
        if log["tensorboard"]:
            from lightning.pytorch.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(run_dir, name="tensorboard", version=""))
        if log["mlflow"]:
            from lightning.pytorch.loggers import MLFlowLogger

            uri = log["mlflow_uri"] or f"sqlite:///{(run_dir.parent / 'mlflow.db').resolve()}"
            loggers.append(MLFlowLogger(experiment_name="deeplense", run_name=run_dir.name, tracking_uri=uri))
        if log["wandb"]:
            from lightning.pytorch.loggers import WandbLogger

            loggers.append(WandbLogger(project="deeplense", name=run_dir.name, save_dir=str(run_dir), offline=True))
    except (ImportError, ModuleNotFoundError) as exc:
        raise ConfigError("logging", f"{exc}; install the tracking extra: pip install 'deeplense[track]'") from None
    return loggers


def _contract(config: dict[str, Any], data) -> dict[str, Any]:
    from deeplense import __version__

    weights = None
    if config["task"] == "classification" and config["train"]["class_weights"] == "balanced":
        counts = np.maximum(np.asarray(data.class_counts, dtype=np.float64), 1)
        weights = (counts.sum() / (len(counts) * counts)).tolist()
    return {
        "deeplense_version": __version__,
        "task": config["task"],
        "model": config["model"],
        "in_chans": data.in_chans,
        "img_size": data.img_size,
        "transforms": data.pipeline.spec(),
        "class_names": data.class_names,
        "targets": data.targets,
        "target_units": data.target_units,
        "target_mean": data.target_mean,
        "target_std": data.target_std,
        "class_weights": weights,
        "class_counts": data.class_counts,
        "data": data.provenance,
    }


def train(config: dict[str, Any], *, resume: str | Path | None = None, callbacks: list | None = None) -> dict[str, Any]:
    """Fit (or resume) a run; returns its summary (also written to ``summary.json``)."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from deeplense.data.pipeline import make_loader
    from deeplense.train.data import build_data
    from deeplense.train.module import LensingModule, monitor_of

    ckpt_path = None
    launched_by = os.environ.get(_RUN_DIR_ENV)  # a DDP worker process started by rank 0's Trainer
    if launched_by and resume is None:
        resume_dir = Path(launched_by)
        config = load_yaml(resume_dir / "config.yaml")
        run_dir = resume_dir
    elif resume is not None:
        run_dir = Path(resume)
        ckpt_path = run_dir / "checkpoints" / "last.ckpt"
        if not (run_dir / "config.yaml").exists():
            raise ConfigError("resume", f"{run_dir}: not a run directory (no config.yaml)")
        if not ckpt_path.exists():
            raise ConfigError("resume", f"{ckpt_path}: no checkpoint yet; start the run again instead")
        config = load_yaml(run_dir / "config.yaml")
        validate_config(config)
    else:
        run_dir = None
        planned = make_run_dir(config["run"], config, create=False)  # a taken name fails before any work
    quiet_lightning()
    cfg = config["train"]
    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))
    L.seed_everything(int(cfg["seed"]), workers=True, verbose=False)
    data = build_data(config)  # bad data stop the run here, before a run directory exists
    if run_dir is None:
        run_dir = planned
        run_dir.mkdir(parents=True, exist_ok=True)
        dump_yaml(config, run_dir / "config.yaml")
    contract = _contract(config, data)
    if not launched_by:
        data.save_split(run_dir)
        (run_dir / "contract.json").write_text(json.dumps(contract, indent=2))
    module = LensingModule(contract, cfg)
    batch, workers, seed = int(cfg["batch_size"]), int(config["data"]["workers"]), int(cfg["seed"])
    train_loader = make_loader(
        data.train, batch, shuffle=True, workers=workers, seed=seed, drop_last=len(data.train) > batch
    )
    val_loader = make_loader(data.val, batch, workers=workers) if data.val is not None else None
    metric, mode = monitor_of(config["task"])
    if val_loader is None:
        metric, mode = "train_loss_epoch", "min"
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best",
        monitor=metric,
        mode=mode,
        save_top_k=1,
        enable_version_counter=False,
    )
    # every epoch, whatever the metric did (Lightning's save_last follows the best checkpoint's saves)
    last = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", save_top_k=1, enable_version_counter=False)
    all_callbacks = [checkpoint, last, *(callbacks or [])]
    if cfg["early_stopping_patience"] and val_loader is not None:
        all_callbacks.append(EarlyStopping(monitor=metric, mode=mode, patience=int(cfg["early_stopping_patience"])))
    first_epoch = 0
    if ckpt_path is not None:
        first_epoch = int(torch.load(ckpt_path, map_location="cpu", weights_only=True).get("epoch", -1)) + 1
    precision = cfg["precision"]
    if precision == "auto":
        precision = (
            "bf16-mixed" if torch.cuda.is_available() and cfg["accelerator"] in ("auto", "gpu", "cuda") else "32-true"
        )
    trainer = L.Trainer(
        default_root_dir=run_dir,
        max_epochs=int(cfg["epochs"]),
        max_time={"minutes": float(cfg["max_minutes"])} if cfg["max_minutes"] else None,
        accelerator=cfg["accelerator"],
        devices=cfg["devices"],
        strategy=cfg["strategy"],
        num_nodes=int(cfg["num_nodes"]),
        precision=precision,
        gradient_clip_val=cfg["grad_clip"] or None,
        deterministic=bool(cfg["deterministic"]),
        callbacks=all_callbacks,
        logger=_loggers(config, run_dir, first_epoch),
        log_every_n_steps=int(config["logging"]["log_every_n_steps"]),
        enable_progress_bar=bool(config["logging"]["progress_bar"]),
        enable_model_summary=False,
        check_val_every_n_epoch=int(cfg["val_every_n_epochs"]),
        num_sanity_val_steps=0,
        plugins=[_atomic_checkpoint_io()],
    )
    start = time.perf_counter()
    os.environ[_RUN_DIR_ENV] = str(run_dir.resolve())  # inherited by DDP worker processes only
    try:
        trainer.fit(module, train_loader, val_loader, ckpt_path=str(ckpt_path) if ckpt_path else None)
    finally:
        if not launched_by:
            os.environ.pop(_RUN_DIR_ENV, None)
    fit_seconds = time.perf_counter() - start
    if trainer.is_global_zero:
        merge_metrics(run_dir)
    summary: dict[str, Any] = {
        "run_dir": str(run_dir),
        "task": config["task"],
        "model": config["model"]["name"],
        "epochs_completed": int(trainer.current_epoch),
        "fit_seconds_this_session": round(fit_seconds, 1),
        "epochs_this_session": int(trainer.current_epoch) - first_epoch,
        "train_images_per_second": round(
            len(data.train) * (trainer.current_epoch - first_epoch) / max(fit_seconds, 1e-9), 1
        ),
        "sizes": data.provenance.get("sizes"),
        "data": {k: v for k, v in data.provenance.items() if k in ("path", "layout", "bad_files_skipped", "simulate")},
        "monitor": metric,
        "best_val": float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None,
        "hardware": hardware(),
        "stopped_by_time_limit": bool(cfg["max_minutes"]) and trainer.current_epoch < int(cfg["epochs"]),
    }
    if data.test is not None:
        summary["test"] = _test(trainer, module, data, checkpoint, run_dir, batch, workers)
    if trainer.is_global_zero:
        previous = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
        summary["fit_seconds_total"] = round(previous.get("fit_seconds_total", 0.0) + fit_seconds, 1)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _test(trainer, module, data, checkpoint, run_dir: Path, batch: int, workers: int) -> dict[str, Any]:
    from deeplense.data.pipeline import make_loader
    from deeplense.evaluate.metrics import classification_metrics, regression_metrics

    loader = make_loader(data.test, batch, workers=workers)
    best = checkpoint.best_model_path or None
    trainer.test(module, loader, ckpt_path=best if best and Path(best).exists() else None, verbose=False)
    got = module.gathered("test")
    module._outputs["test"] = []
    if not trainer.is_global_zero:
        return {}
    order = np.argsort(got["index"], kind="stable")
    got = {k: v[order] for k, v in got.items()}
    if module.task == "classification":
        metrics = classification_metrics(got["probs"], got["label"], data.class_names)
        table = pd.DataFrame({"index": got["index"], "label": got["label"]})
        for c, name in enumerate(data.class_names):
            table[f"p_{name}"] = got["probs"][:, c]
    else:
        metrics = regression_metrics(got["mean"], got["sigma"], got["target"], data.targets, data.target_units)
        table = pd.DataFrame({"index": got["index"]})
        for t, name in enumerate(data.targets):
            table[f"true_{name}"], table[f"mean_{name}"], table[f"sigma_{name}"] = (
                got["target"][:, t],
                got["mean"][:, t],
                got["sigma"][:, t],
            )
    metrics["checkpoint"] = Path(best).name if best else "last weights"
    (run_dir / "test_metrics.json").write_text(json.dumps(metrics, indent=2))
    table.to_csv(run_dir / "predictions_test.csv", index=False)
    return metrics
