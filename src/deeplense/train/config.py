"""The training config: defaults, merging a user's YAML onto them, overrides and validation.

Every key has a default here (``DEFAULTS``); a user's file sets any subset. Unknown keys, wrong
types and out-of-range values fail before any work with the dotted key in the message.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

from deeplense.core.config import ConfigError, apply_overrides, load_yaml
from deeplense.tasks import TASKS
from deeplense.tasks.optim import OPTIMIZERS, SCHEDULERS

__all__ = ["DEFAULTS", "resolve_config", "validate_config", "monitor_of"]

DEFAULTS: dict[str, Any] = {
    "task": "classification",
    "data": {
        "path": None,  # any layout open_dataset reads; or use `simulate`
        "simulate": None,  # {preset | config, set: [key=value], seed, train, val, test}: on the fly
        "splits": {"train": "train", "val": "val", "test": "test"},
        "split_seed": 0,
        "split_fractions": {"train": 0.8, "val": 0.1, "test": 0.1},
        "split_file": None,
        "classes": None,  # keep only these classes (e.g. [axion] for log10 m_a regression)
        "targets": [],  # metadata columns a task predicts (regression)
        "transforms": ["minmax", "dihedral"],
        "cache": "memory",
        "workers": 0,
        "on_bad_file": "error",
        "check": "full",  # read every file before training: NaN/Inf and unreadable files are found up front
        "max_train": None,  # cap on training images (first N of a seeded shuffle)
    },
    "model": {
        "name": "small_cnn",
        "pretrained": False,
        "kwargs": {},
        "init_from": None,  # a run directory, checkpoint or shipped model whose encoder starts this run
    },
    "train": {
        "epochs": 20,
        "batch_size": 64,
        "optimizer": "adamw",
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "momentum": 0.9,
        "scheduler": "cosine",
        "warmup_epochs": 0,
        "plateau_patience": 2,
        "grad_clip": 0.0,
        "ema_decay": 0.0,
        "freeze_encoder": False,  # train the head alone on a frozen encoder (a linear probe)
        "layer_decay": 1.0,  # < 1: layer-wise learning-rate decay of a ViT encoder
        "channels_last": True,
        "precision": "auto",  # bf16-mixed on a GPU, 32 on CPU (where bf16 autocast is slower)
        "deterministic": True,
        "seed": 0,
        "early_stopping_patience": 0,  # epochs without improvement of the monitored metric; 0: off
        "max_minutes": None,  # wall-clock budget for fitting
        "accelerator": "auto",
        "devices": 1,
        "strategy": "auto",  # ddp for data-parallel training
        "num_nodes": 1,
        "threads": None,  # torch CPU threads per process
        "val_every_n_epochs": 1,
    },
    "logging": {
        "tensorboard": False,
        "mlflow": False,
        "mlflow_uri": None,  # default: sqlite:///<run dir>/../mlflow.db
        "wandb": False,  # offline
        "log_every_n_steps": 10,
        "progress_bar": True,
    },
    "run": {"dir": "runs", "name": None},
    "tune": {
        "trials": 10,
        "space": {},  # dotted key -> {low, high, log} | {choices: [...]}
        "metric": None,  # default: the monitored validation metric
        "pruning": True,
        "storage": None,  # default: sqlite:///<out>/optuna.db
        "epochs": None,  # epochs per trial (default: train.epochs)
    },
}

# each task's own train.* keys (class weights, losses, ...) are declared by the task
for _task in TASKS.names():
    DEFAULTS["train"].update(TASKS.get(_task).train_defaults)


def monitor_of(task: str) -> tuple[str, str]:
    """(metric, mode) used for checkpoints, early stopping and tuning."""
    return TASKS.get(task).monitor


_CHOICES = {
    "train.optimizer": tuple(OPTIMIZERS.names()),
    "train.scheduler": tuple(SCHEDULERS.names()),
    **{key: values for name in TASKS.names() for key, values in TASKS.get(name).train_choices.items()},
    "train.precision": ("auto", "32", "bf16-mixed", "16-mixed", "64"),
    "data.cache": ("none", "memory"),
    "data.on_bad_file": ("error", "skip"),
    "data.check": ("header", "full"),
}
_POSITIVE = (
    "train.epochs",
    "train.batch_size",
    "train.lr",
    "train.devices",
    "train.num_nodes",
    "train.val_every_n_epochs",
)
_NON_NEGATIVE = (
    "train.weight_decay",
    "train.grad_clip",
    "train.warmup_epochs",
    "train.early_stopping_patience",
    "data.workers",
    "train.seed",
)
#: Keys that count things: whole numbers (``epochs=1.7`` is refused, not truncated).
_INTEGER = (
    "train.epochs",
    "train.batch_size",
    "train.devices",
    "train.num_nodes",
    "train.val_every_n_epochs",
    "train.early_stopping_patience",
    "train.plateau_patience",
    "train.seed",
    "data.workers",
    "data.split_seed",
    "logging.log_every_n_steps",
)
#: Keys that are off when null and otherwise a positive number (whole for counts).
_OPTIONAL_POSITIVE = {"train.max_minutes": False, "data.max_train": True, "train.threads": True}
_FREE_FORM = {"model.kwargs", "tune.space", "data.simulate", "data.splits", "data.split_fractions"}


def _merge(base: dict[str, Any], user: dict[str, Any], where: str = "") -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in user.items():
        here = f"{where}.{key}" if where else key
        if key not in base:
            raise ConfigError(here, f"unknown key; expected one of {sorted(base)}")
        if isinstance(base[key], dict) and here not in _FREE_FORM:
            if not isinstance(value, dict):
                raise ConfigError(here, f"expected a mapping, got {type(value).__name__}")
            out[key] = _merge(base[key], value, here)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _get(config: dict[str, Any], dotted: str) -> Any:
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def validate_config(config: dict[str, Any]) -> None:
    """Check choices, ranges and the cross-section rules; raise naming the first bad key."""
    if str(config["task"]) not in TASKS:
        raise ConfigError("task", f"must be one of {TASKS.names()}, got {config['task']!r}")
    for key, choices in _CHOICES.items():
        value = str(_get(config, key))
        if value not in choices:
            raise ConfigError(key, f"must be one of {list(choices)}, got {value!r}")
    for key in _POSITIVE + _NON_NEGATIVE:
        value = _get(config, key)
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise ConfigError(key, f"expected a number, got {value!r}")
        if key in _POSITIVE and value <= 0 or value < 0:
            raise ConfigError(key, f"must be {'> 0' if key in _POSITIVE else '>= 0'}, got {value}")
    for key in _INTEGER:
        value = _get(config, key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(key, f"expected a whole number, got {value!r}")
    if config["logging"]["log_every_n_steps"] < 1:
        raise ConfigError("logging.log_every_n_steps", "must be >= 1")
    for key, whole in _OPTIONAL_POSITIVE.items():
        value = _get(config, key)
        if value is None:
            continue
        kind = int if whole else int | float
        if not isinstance(value, kind) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
            expected = "a whole number > 0" if whole else "a number > 0"
            raise ConfigError(key, f"expected null (off) or {expected}, got {value!r}")
    run_name = config["run"]["name"]
    if run_name is not None and (
        not isinstance(run_name, str)
        or not run_name.strip()
        or Path(run_name).name != run_name
        or run_name in (".", "..")
    ):
        raise ConfigError("run.name", f"expected a plain folder name inside run.dir, got {run_name!r}")
    accelerator = str(config["train"]["accelerator"])
    if accelerator not in ("auto", "cpu", "gpu", "cuda"):
        raise ConfigError("train.accelerator", f"must be auto, cpu, gpu or cuda, got {accelerator!r}")
    if accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("train.accelerator", f"{accelerator}: this machine has no CUDA device; use auto or cpu")
    decay = config["train"]["layer_decay"]
    if not isinstance(decay, int | float) or isinstance(decay, bool) or not 0 < decay <= 1:
        raise ConfigError("train.layer_decay", f"expected a number in (0, 1], got {decay!r}")
    if not isinstance(config["train"]["freeze_encoder"], bool):
        raise ConfigError("train.freeze_encoder", f"expected true or false, got {config['train']['freeze_encoder']!r}")
    init_from = config["model"]["init_from"]
    if init_from is not None and (not isinstance(init_from, str) or not init_from):
        raise ConfigError(
            "model.init_from", f"expected a run directory, checkpoint or shipped model, got {init_from!r}"
        )
    if config["train"]["freeze_encoder"] and init_from is None:
        raise ConfigError("train.freeze_encoder", "a frozen random encoder learns nothing; give model.init_from")
    if not 0 <= config["train"]["ema_decay"] < 1:
        raise ConfigError("train.ema_decay", f"must be in [0, 1), got {config['train']['ema_decay']}")
    data = config["data"]
    if (data["path"] is None) == (data["simulate"] is None):
        raise ConfigError("data", "give exactly one of data.path and data.simulate")
    if data["path"] is not None and not Path(data["path"]).exists():
        raise ConfigError("data.path", f"{data['path']}: no such file or directory")
    for name in TASKS.names():
        TASKS.get(name).check_train_keys(config["train"])
    TASKS.get(config["task"]).validate(config)
    if not isinstance(data["transforms"], list):
        raise ConfigError("data.transforms", "expected a list of transforms")
    splits = data["splits"]
    if not isinstance(splits, dict) or set(splits) - {"train", "val", "test"} or "train" not in splits:
        raise ConfigError("data.splits", "expected {train: NAME, val: NAME, test: NAME}")
    for role in ("val", "test"):
        if splits.get(role) is not None and splits.get(role) == splits["train"]:
            raise ConfigError(
                f"data.splits.{role}",
                f"names the training split {splits['train']!r}: a model checked on its training images proves nothing",
            )
    from deeplense.sim.writer import parse_splits

    parse_splits(data["split_fractions"], "data.split_fractions")
    if data["simulate"] is not None:
        sim = data["simulate"]
        allowed = {"preset", "config", "set", "seed", "train", "val", "test"}
        unknown = set(sim) - allowed
        if unknown:
            raise ConfigError(f"data.simulate.{sorted(unknown)[0]}", f"unknown key; expected one of {sorted(allowed)}")
        if ("preset" in sim) == ("config" in sim):
            raise ConfigError("data.simulate", "give exactly one of preset and config")
        for part in ("train", "val", "test"):
            if not isinstance(sim.get(part, 0), int) or sim.get(part, 0) < 0:
                raise ConfigError(f"data.simulate.{part}", "expected a number of images >= 0")
        if sim.get("train", 0) < 1:
            raise ConfigError("data.simulate.train", "need at least one training image")
    from deeplense.data.transforms import build_pipeline

    build_pipeline(data["transforms"], "data.transforms")
    if not isinstance(config["model"]["name"], str):
        raise ConfigError("model.name", "expected a model name (see `deeplense models list`)")


def resolve_config(source: str | Path | dict[str, Any], overrides: list[str] | None = None) -> dict[str, Any]:
    """Defaults <- file (or mapping) <- ``key=value`` overrides, validated."""
    user = load_yaml(source) if isinstance(source, str | Path) else copy.deepcopy(source)
    config = _merge(DEFAULTS, user)
    config = apply_overrides(config, overrides or [])
    validate_config(config)
    return config
