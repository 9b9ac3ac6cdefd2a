"""Heads on a backbone's pooled features, and the network a task trains: ``backbone -> head``.

Every backbone (ours and timm's) has ``forward_features`` (spatial map) and ``forward_head``
(pooled ``(B, num_features)``), so a task can put a head on the pooled features or a decoder on
the spatial map.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor, nn

from deeplense.core.registry import Registry
from deeplense.models.registry import create_backbone

__all__ = ["HEADS", "LinearHead", "GaussianHead", "Network", "build_network", "channels_last"]

HEADS: Registry[type[nn.Module]] = Registry("head")


@HEADS.register("linear")
class LinearHead(nn.Linear):
    """``(B, F) -> (B, n_outputs)``: class logits."""

    def __init__(self, width: int, n_outputs: int):
        super().__init__(width, n_outputs)
        self.n_outputs = n_outputs


@HEADS.register("gaussian")
class GaussianHead(nn.Linear):
    """``(B, F) -> (B, 2 n_outputs)``: means then log-variances of the (normalised) targets."""

    def __init__(self, width: int, n_outputs: int):
        super().__init__(width, 2 * n_outputs)
        self.n_outputs = n_outputs
        nn.init.zeros_(self.bias)

    def split(self, out: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean, variance)``, variance clamped to [1e-6, 1e6]."""
        mean, log_var = out[:, : self.n_outputs], out[:, self.n_outputs :]
        return mean, torch.exp(log_var.clamp(-13.8, 13.8))


class Network(nn.Module):
    """``backbone -> head``; ``forward_features`` exposes the backbone's spatial map."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward_features(self, x: Tensor) -> Tensor:
        return cast(Tensor, self.backbone.forward_features(x))  # type: ignore[operator]

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


def build_network(spec: dict[str, Any], head: str, n_outputs: int, in_chans: int, img_size: int) -> Network:
    """``spec``: ``{name, pretrained, kwargs}`` (the ``model`` config section); ``head``: a name in
    :data:`HEADS`."""
    backbone = create_backbone(
        spec["name"],
        in_chans=in_chans,
        img_size=img_size,
        pretrained=spec.get("pretrained", False),
        **spec.get("kwargs", {}),
    )
    return Network(backbone, HEADS.create(head, backbone.num_features, n_outputs))


def channels_last(net: nn.Module) -> nn.Module:
    """``net`` with its 4-D (2-D convolution) weights in channels_last layout, in place. Unlike
    ``net.to(memory_format=torch.channels_last)``, which fails on 5-D tensors such as the group
    convolution weights of ``d4_cnn``, other tensors are left as they are."""
    for p in net.parameters():
        if p.dim() == 4:
            p.data = p.data.contiguous(memory_format=torch.channels_last)
    return net
