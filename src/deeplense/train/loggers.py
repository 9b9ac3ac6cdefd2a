"""Training loggers by name (CSV always; TensorBoard, MLflow with SQLite, W&B offline), the merged
``metrics.csv`` of a run's sessions, and Lightning's console noise turned down."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from typing import Any

import pandas as pd

from deeplense.core.config import ConfigError
from deeplense.core.registry import Registry
from deeplense.core.run_dir import RunDir

__all__ = ["LOGGERS", "build_loggers", "merge_metrics", "quiet_lightning"]

LOGGERS: Registry[Callable[[dict[str, Any], RunDir], Any]] = Registry("logger")


@LOGGERS.register("tensorboard")
def _tensorboard(log: dict[str, Any], run: RunDir) -> Any:
    from lightning.pytorch.loggers import TensorBoardLogger

    return TensorBoardLogger(run.root, name="tensorboard", version="")


@LOGGERS.register("mlflow")
def _mlflow(log: dict[str, Any], run: RunDir) -> Any:
    from lightning.pytorch.loggers import MLFlowLogger

    uri = log["mlflow_uri"] or f"sqlite:///{(run.root.parent / 'mlflow.db').resolve()}"
    return MLFlowLogger(experiment_name="deeplense", run_name=run.root.name, tracking_uri=uri)


@LOGGERS.register("wandb")
def _wandb(log: dict[str, Any], run: RunDir) -> Any:
    from lightning.pytorch.loggers import WandbLogger

    return WandbLogger(project="deeplense", name=run.root.name, save_dir=str(run.root), offline=True)


def quiet_lightning() -> None:
    """Drop Lightning's tips and hardware banners; keep its warnings that matter."""
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*is smaller than the logging interval.*")
    warnings.filterwarnings("ignore", ".*Experiment logs directory .* exists and is not empty.*")


def build_loggers(log: dict[str, Any], run: RunDir, first_epoch: int) -> list[Any]:
    """A CSV logger for this session (``logs/session-N``) and every optional logger switched on
    in the ``logging`` section."""
    from lightning.pytorch.loggers import CSVLogger

    number = len(run.sessions())
    session = run.session(number)
    session.mkdir(parents=True, exist_ok=True)
    (session / "start.json").write_text(json.dumps({"epoch": first_epoch}))
    loggers: list[Any] = [CSVLogger(run.logs, name="", version=session.name)]
    try:
        loggers += [LOGGERS.create(name, log, run) for name in LOGGERS.names() if log.get(name)]
    except ImportError as exc:
        raise ConfigError("logging", f"{exc}; install the tracking extra: pip install 'deeplense[track]'") from None
    return loggers


def merge_metrics(run: RunDir) -> Any:
    """``metrics.csv`` of a run from the CSV logs of all its sessions (a resumed run is one
    session more): rows a later session recomputed (from the epoch it resumed at) are dropped."""
    frames: list[pd.DataFrame] = []
    for session in run.sessions():
        path = session / "metrics.csv"
        if not path.exists() or path.stat().st_size == 0:
            continue
        frame = pd.read_csv(path)
        start = json.loads((session / "start.json").read_text())["epoch"] if (session / "start.json").exists() else 0
        frames = [f[f["epoch"] < start] for f in frames] + [frame]
    if not frames:
        return None
    pd.concat(frames, ignore_index=True).to_csv(run.metrics, index=False)
    return run.metrics
