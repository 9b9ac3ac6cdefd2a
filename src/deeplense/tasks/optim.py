"""Optimisers and learning-rate schedules by name (``train.optimizer``, ``train.scheduler``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from deeplense.core.registry import Registry

__all__ = ["OPTIMIZERS", "SCHEDULERS", "parameter_groups", "layer_decay_groups", "build_optimization"]

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
    peaks = [group["lr"] for group in opt.param_groups]  # per group: layer-wise decay scales them
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=peaks, total_steps=total_steps)
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
    """Weight decay on weights, none on biases and normalisation parameters; frozen parameters
    are left out."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in net.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def layer_decay_groups(
    net: nn.Module, encoder_attribute: str, weight_decay: float, layer_decay: float, lr: float
) -> list[dict[str, Any]]:
    """Layer-wise learning-rate decay (BEiT; timm's ``param_groups_layer_decay``): the encoder's
    layer ``i`` of ``L`` learns at ``lr * layer_decay ** (L - i)``, the rest of the network at
    ``lr``. The encoder needs timm's ``group_matcher`` (every timm ViT has one)."""
    from timm.optim import param_groups_layer_decay

    encoder = getattr(net, encoder_attribute)
    if not hasattr(encoder, "group_matcher"):
        from deeplense.core.config import ConfigError

        raise ConfigError(
            "train.layer_decay", f"{type(encoder).__name__} has no layers to decay; use it with a timm ViT"
        )
    groups = param_groups_layer_decay(encoder, weight_decay=weight_decay, layer_decay=layer_decay)
    inside = {id(p) for p in encoder.parameters()}
    rest = [(n, p) for n, p in net.named_parameters() if id(p) not in inside and p.requires_grad]
    for group in parameter_groups(nn.ParameterList([p for _, p in rest]), weight_decay):
        group["lr_scale"] = 1.0
        groups.append(group)
    for group in groups:
        group["lr"] = lr * group.pop("lr_scale")
    return [g for g in groups if g["params"]]


def build_optimization(
    net: nn.Module, cfg: dict[str, Any], total_steps: int, monitor: tuple[str, str], encoder_attribute: str = ""
) -> Any:
    """Lightning's ``configure_optimizers`` answer: an optimiser, or it with its schedule."""
    decay = float(cfg.get("layer_decay", 1.0))
    if decay < 1.0:
        groups = layer_decay_groups(net, encoder_attribute, cfg["weight_decay"], decay, cfg["lr"])
    else:
        groups = [{**g, "lr": cfg["lr"]} for g in parameter_groups(net, cfg["weight_decay"]) if g["params"]]
    opt = OPTIMIZERS.create(cfg["optimizer"], groups, cfg)
    sched = SCHEDULERS.create(cfg["scheduler"], opt, cfg, total_steps, monitor)
    return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}
