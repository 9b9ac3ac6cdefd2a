"""What every kernel module shares: whether kernels serve a tensor, and numpy views of tensors."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor

__all__ = ["enabled", "fusable", "rows_view", "column_view", "typed_scalar", "unsigned_keys"]


def enabled(tensor: Tensor) -> bool:
    """Whether the compiled kernels serve ``tensor``: on CPU, outside autograd, kernels not
    turned off."""
    return (
        tensor.device.type == "cpu"
        and not (tensor.requires_grad and torch.is_grad_enabled())
        and os.environ.get("DEEPLENSE_KERNELS", "1") != "0"
    )


def fusable(coords: tuple[Tensor, ...], params: tuple[Tensor, ...]) -> bool:
    """Whether a fused profile kernel can take these arguments: kernels enabled, one dtype,
    coordinates ``(N,)`` or ``(B, N)`` and parameters ``(B, 1)``."""
    first = coords[0]
    if not enabled(first) or first.dim() not in (1, 2):
        return False
    batch = params[0].shape[0]
    return all(
        t.dtype == first.dtype and enabled(t) and t.shape[-1] == first.shape[-1] and t.dim() == first.dim()
        for t in coords
    ) and all(t.dtype == first.dtype and enabled(t) and t.shape == (batch, 1) for t in params)


def rows_view(coord: Tensor, batch: int) -> np.ndarray:
    """``(B, N)`` numpy view of coordinates given as ``(N,)`` (broadcast, stride 0) or ``(B, N)``."""
    return (coord.unsqueeze(0).expand(batch, -1) if coord.dim() == 1 else coord).numpy()


def column_view(param: Tensor) -> np.ndarray:
    return param.reshape(-1).contiguous().numpy()


def typed_scalar(value: float, dtype: torch.dtype) -> np.generic:
    """``value`` as a numpy scalar of ``dtype``, so that the kernels' arithmetic stays in it."""
    return np.array(value, dtype=torch.empty(0, dtype=dtype).numpy().dtype)[()]


def unsigned_keys(keys: Tensor) -> np.ndarray:
    """int64 image keys as the uint64 the kernels' wrapping arithmetic takes (same bits)."""
    return keys.contiguous().numpy().view(np.uint64)
