"""Optimisers and learning-rate schedules by name (``train.optimizer``, ``train.scheduler``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from deeplense.core.registry import Registry

__all__ = ["OPTIMIZERS", "SCHEDULERS", "parameter_groups", "build_optimization"]

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer")
SCHEDULERS: Registry[Callable[..., dict[str, Any] | None]] = Registry("scheduler")


@OPTIMIZERS.register("adamw")
def _adamw(groups: list[dict[str, Any]], cfg: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=cfg["lr"])


@OPTIMIZERS.register("sgd")
def _sgd(groups: list[dict[str, Any]], cfg: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=cfg["lr"], momentum=cfg["momentum"], nesterov=True)


@SCHEDULERS.register("none")
def _none(opt: Optimizer, cfg: dict[str, Any], total_steps: int, monitor: tuple[str, str]) -> dict[str, Any] | None:
    return None


@SCHEDULERS.register("onecycle")
def _onecycle(opt: Optimizer, cfg: dict[str, Any], total_steps: int, monitor: tuple[str, str]) -> dict[str, Any]:
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=total_steps)
    return {"scheduler": sched, "interval": "step"}


@SCHEDULERS.register("plateau")
def _plateau(opt: Optimizer, cfg: dict[str, Any], total_steps: int, monitor: tuple[str, str]) -> dict[str, Any]:
    metric, mode = monitor
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="max" if mode == "max" else "min", patience=cfg["plateau_patience"], factor=0.3
    )
    return {"scheduler": sched, "monitor": metric, "interval": "epoch"}


@SCHEDULERS.register("cosine")
def _cosine(opt: Optimizer, cfg: dict[str, Any], total_steps: int, monitor: tuple[str, str]) -> dict[str, Any]:
    per_epoch = max(1, total_steps // max(1, cfg["epochs"]))
    warm = int(cfg["warmup_epochs"] * per_epoch)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps - warm))
    sched: torch.optim.lr_scheduler.LRScheduler = cosine
    if warm:
        ramp = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.01, total_iters=warm)
        sched = torch.optim.lr_scheduler.SequentialLR(opt, [ramp, cosine], milestones=[warm])
    return {"scheduler": sched, "interval": "step"}


def parameter_groups(net: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weights, none on biases and normalisation parameters."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in net.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimization(net: nn.Module, cfg: dict[str, Any], total_steps: int, monitor: tuple[str, str]) -> Any:
    """Lightning's ``configure_optimizers`` answer: an optimiser, or it with its schedule."""
    opt = OPTIMIZERS.create(cfg["optimizer"], parameter_groups(net, cfg["weight_decay"]), cfg)
    sched = SCHEDULERS.create(cfg["scheduler"], opt, cfg, total_steps, monitor)
    return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}
