"""``train(config)``: one run directory per run (files named by :mod:`deeplense.core.run_dir`),
Lightning fit of the config's task, resume, and the test evaluation of the best checkpoint."""

from __future__ import annotations

import errno
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from deeplense.core.checkpoint import read_checkpoint
from deeplense.core.config import ConfigError, dump_yaml, load_yaml
from deeplense.core.contract import InputSpec, ModelContract, ModelSpec, Provenance
from deeplense.core.run_dir import RunDir
from deeplense.tasks import TASKS
from deeplense.train.config import monitor_of, validate_config
from deeplense.train.data import TrainingData
from deeplense.train.loggers import build_loggers, merge_metrics, quiet_lightning
from deeplense.train.testing import test_best_checkpoint

__all__ = ["train", "make_run_dir", "hardware", "build_contract"]

_RUN_DIR_ENV = "DEEPLENSE_RUN_DIR"


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


def started(run: RunDir) -> bool:
    """Whether a run got as far as its first checkpoint (or finished): only then is it kept
    from a new start. A run stopped before that (crash, kill, bad data) holds nothing to lose."""
    return run.last.exists() or run.best.exists() or run.summary.exists()


def make_run_dir(run: dict[str, Any], config: dict[str, Any], create: bool = True) -> Path:
    name = run["name"] or f"{time.strftime('%Y%m%d-%H%M%S')}-{config['model']['name']}-{config['task']}"
    path = Path(run["dir"]) / name
    if RunDir(path).config.exists() and started(RunDir(path)):
        raise ConfigError(
            "run.name", f"{path} already holds a run; resume it with --resume {path} or pick another name"
        )
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def _safe_checkpoint_io():
    """Checkpoints written to a temporary file and renamed (a kill never leaves a torn file; a
    failed write, such as a full disk, leaves no temporary file) and read as tensors and plain
    data only, whatever ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` says (Lightning's own loader does not
    pass ``weights_only``)."""
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    class SafeCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None):
            path = Path(path)
            tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
            try:
                super().save_checkpoint(checkpoint, tmp, storage_options)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)

        def load_checkpoint(self, path, map_location=None, weights_only=None):
            return read_checkpoint(path)

    return SafeCheckpointIO()


def _build_module(contract: dict[str, Any], cfg: dict[str, Any]) -> Any:
    """The task's Lightning module; a model that cannot be built is a :class:`ConfigError`."""
    from deeplense.train.module import TaskModule

    try:
        return TaskModule(contract, cfg)
    except KeyError as exc:
        raise ConfigError("model.name", str(exc.args[0])) from None
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError("model", f"{contract['model']['name']}: {exc}") from None


def _clear_unstarted(run: RunDir, keep_config: bool = False) -> None:
    """Remove what a run that never reached its first checkpoint left (logs, split, contract),
    so it starts again cleanly; nothing else in the folder is touched."""
    import shutil

    if not run.root.exists() or started(run):
        return
    for path in (run.split, run.contract, run.metrics, *([] if keep_config else [run.config])):
        path.unlink(missing_ok=True)
    shutil.rmtree(run.logs, ignore_errors=True)
    shutil.rmtree(run.checkpoints, ignore_errors=True)


def _init_encoder(module: Any, source: str) -> str:
    """Load the encoder of ``source`` (a run, checkpoint or shipped model) into the module's task;
    returns what the contract records as the weights' origin."""
    from deeplense.core.errors import DataFormatError
    from deeplense.infer import load_predictor

    try:
        donor = load_predictor(source)
        state = donor.encoder_state()
    except (DataFormatError, ValueError, FileNotFoundError) as exc:
        raise ConfigError("model.init_from", str(exc)) from None
    module.task.load_encoder(state, source)
    return f"encoder of the {donor.contract.task} model {source} (sha256 {donor.sha256[:12]})"


def build_contract(config: dict[str, Any], data: TrainingData) -> ModelContract:
    """The contract of a run: the task, the network, what it reads and what it predicts."""
    from deeplense.core.version import __version__

    task = TASKS.get(config["task"])
    model = config["model"]
    return ModelContract(
        task=config["task"],
        model=ModelSpec(name=model["name"], kwargs=dict(model.get("kwargs") or {}), pretrained=model["pretrained"]),
        input=InputSpec(
            in_chans=data.in_chans,
            img_size=data.img_size,
            transforms=data.pipeline.spec(),
            bands=data.image_info.get("bands"),
            pixel_scale_arcsec=data.image_info.get("pixel_scale_arcsec"),
            pixel_units=data.image_info.get("pixel_units"),
            raw_size=data.image_info.get("raw_size"),
            domain=data.image_info.get("domain"),
        ),
        output=task.output_spec(data),
        provenance=Provenance(deeplense_version=__version__, data=data.provenance, class_counts=data.class_counts),
        training=task.training_state(config, data),
    )


def train(config: dict[str, Any], *, resume: str | Path | None = None, callbacks: list | None = None) -> dict[str, Any]:
    """Fit (or resume) a run; returns its summary (also written to ``summary.json``)."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from deeplense.data.datasets import make_loader
    from deeplense.train.data import build_data

    ckpt_path = None
    launched_by = os.environ.get(_RUN_DIR_ENV)  # a DDP worker process started by rank 0's Trainer
    if launched_by and resume is None:
        run_dir = Path(launched_by)
        config = load_yaml(RunDir(run_dir).config)
    elif resume is not None:
        run_dir = Path(resume)
        ckpt_path = RunDir(run_dir).last
        if not RunDir(run_dir).config.exists():
            raise ConfigError("resume", f"{run_dir}: not a run directory (no config.yaml)")
        config = load_yaml(RunDir(run_dir).config)
        validate_config(config)
        if not ckpt_path.exists():  # stopped before its first checkpoint: start it again, in place
            ckpt_path = None
    else:
        run_dir = None
        planned = make_run_dir(config["run"], config, create=False)  # a taken name fails before any work
    quiet_lightning()
    cfg = config["train"]
    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))
    L.seed_everything(int(cfg["seed"]), workers=True, verbose=False)
    data = build_data(config)  # bad data stop the run here, before a run directory exists
    TASKS.get(config["task"]).check_data(data)
    contract = build_contract(config, data).to_dict()
    rng_state = torch.random.get_rng_state()
    module = _build_module(contract, cfg)  # so do unknown models and bad weight files
    init = getattr(getattr(module.task.net, "backbone", None), "weights_source", "random")
    if init != contract["model"]["init"]:  # record what happened, not what was asked for
        contract["model"]["init"] = init
        if init.startswith("random"):
            contract["model"]["pretrained"] = False
        torch.random.set_rng_state(rng_state)  # the same initial weights as without the request
        module = _build_module(contract, cfg)
    if config["model"]["init_from"] is not None:
        if ckpt_path is None:
            contract["model"]["init"] = _init_encoder(module, config["model"]["init_from"])
        else:  # resuming: the checkpoint holds the weights; the donor is no longer needed
            stored = read_checkpoint(ckpt_path).get("hyper_parameters", {}).get("contract", {})
            contract["model"]["init"] = stored.get("model", {}).get("init", contract["model"]["init"])
        module.hparams["contract"] = contract  # the checkpoint records it too
    if run_dir is None:
        run_dir = planned
        _clear_unstarted(RunDir(run_dir))
        run_dir.mkdir(parents=True, exist_ok=True)
        dump_yaml(config, RunDir(run_dir).config)
    elif ckpt_path is None and not launched_by:
        _clear_unstarted(RunDir(run_dir), keep_config=True)
    run = RunDir(run_dir)
    if not launched_by:
        data.save_split(run.split)
        run.write_json(run.contract, contract)
    batch, workers, seed = int(cfg["batch_size"]), int(config["data"]["workers"]), int(cfg["seed"])
    train_loader = make_loader(
        data.train, batch, shuffle=True, workers=workers, seed=seed, drop_last=len(data.train) > batch
    )
    val_loader = make_loader(data.val, batch, workers=workers) if data.val is not None else None
    metric, mode = monitor_of(config["task"])
    if val_loader is None:
        metric, mode = "train_loss_epoch", "min"
    checkpoint = ModelCheckpoint(
        dirpath=run.checkpoints,
        filename="best",
        monitor=metric,
        mode=mode,
        save_top_k=1,
        enable_version_counter=False,
    )
    # every epoch, whatever the metric did (Lightning's save_last follows the best checkpoint's saves)
    last = ModelCheckpoint(dirpath=run.checkpoints, filename="last", save_top_k=1, enable_version_counter=False)
    all_callbacks = [checkpoint, last, *(callbacks or [])]
    if cfg["early_stopping_patience"] and val_loader is not None:
        all_callbacks.append(EarlyStopping(monitor=metric, mode=mode, patience=int(cfg["early_stopping_patience"])))
    first_epoch = 0
    if ckpt_path is not None:
        first_epoch = int(read_checkpoint(ckpt_path).get("epoch", -1)) + 1
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
        logger=build_loggers(config["logging"], run, first_epoch),
        log_every_n_steps=int(config["logging"]["log_every_n_steps"]),
        enable_progress_bar=bool(config["logging"]["progress_bar"]),
        enable_model_summary=False,
        check_val_every_n_epoch=int(cfg["val_every_n_epochs"]),
        num_sanity_val_steps=0,
        plugins=[_safe_checkpoint_io()],
    )
    start = time.perf_counter()
    os.environ[_RUN_DIR_ENV] = str(run_dir.resolve())  # inherited by DDP worker processes only
    try:
        trainer.fit(module, train_loader, val_loader, ckpt_path=str(ckpt_path) if ckpt_path else None)
    except OSError as exc:  # a full disk: name the run (the file in the error may be a temporary one)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise OSError(exc.errno, exc.strerror, str(run_dir)) from None
        raise
    finally:
        if not launched_by:
            os.environ.pop(_RUN_DIR_ENV, None)
    fit_seconds = time.perf_counter() - start
    if trainer.is_global_zero:
        merge_metrics(run)
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
        loader = make_loader(data.test, batch, workers=workers)
        best = str(run.best) if run.best.exists() else None  # this folder's, even if the run was moved
        summary["test"] = test_best_checkpoint(trainer, module, loader, best, run)
    if trainer.is_global_zero:
        summary["fit_seconds_total"] = round(run.read_summary().get("fit_seconds_total", 0.0) + fit_seconds, 1)
        run.write_json(run.summary, summary)
    return summary
