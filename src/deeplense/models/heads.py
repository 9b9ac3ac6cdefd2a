"""Task heads on a backbone: class logits, or mean and log-variance per regression target."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from deeplense.models.registry import create_backbone

__all__ = ["LensNet", "build_network", "channels_last"]


class LensNet(nn.Module):
    """``backbone -> Linear``. Classification: ``(B, K)`` logits. Regression with uncertainty:
    ``(B, 2T)``: predicted means then log-variances of the (normalised) targets."""

    def __init__(self, backbone: nn.Module, task: str, n_outputs: int):
        super().__init__()
        if task not in ("classification", "regression"):
            raise ValueError(f"task must be classification or regression, got {task!r}")
        self.backbone, self.task, self.n_outputs = backbone, task, n_outputs
        width = backbone.num_features
        self.head = nn.Linear(width, n_outputs if task == "classification" else 2 * n_outputs)
        if task == "regression":
            nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))

    def split_regression(self, out: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean, variance)``, variance clamped to [1e-6, 1e6]."""
        mean, log_var = out[:, : self.n_outputs], out[:, self.n_outputs :]
        return mean, torch.exp(log_var.clamp(-13.8, 13.8))


def build_network(spec: dict[str, Any], task: str, n_outputs: int, in_chans: int, img_size: int) -> LensNet:
    """``spec``: ``{name, pretrained, kwargs}`` from the ``model`` config section."""
    backbone = create_backbone(
        spec["name"],
        in_chans=in_chans,
        img_size=img_size,
        pretrained=spec.get("pretrained", False),
        **spec.get("kwargs", {}),
    )
    return LensNet(backbone, task, n_outputs)


def channels_last(net: nn.Module) -> nn.Module:
    """``net`` with its 4-D (2-D convolution) weights in channels_last layout, in place. Unlike
    ``net.to(memory_format=torch.channels_last)``, which fails on 5-D tensors such as the group
    convolution weights of ``d4_cnn``, other tensors are left as they are."""
    for p in net.parameters():
        if p.dim() == 4:
            p.data = p.data.contiguous(memory_format=torch.channels_last)
    return net
