"""Compiled light profiles: the elliptical Sersic, bit for bit its torch twin."""

from __future__ import annotations

import numpy as np
import torch
from numba import njit
from torch import Tensor

from deeplense.sim.kernels.common import column_view, rows_view, typed_scalar

__all__ = ["sersic_elliptical"]


@njit(cache=True, nogil=True, error_model="numpy")
def _sersic_radius2(x, y, cx, cy, a1, e2, ne2, a2, norm, out):  # pragma: no cover - compiled
    for b in range(out.shape[0]):
        for p in range(out.shape[1]):
            dx = x[b, p] - cx[b]
            dy = y[b, p] - cy[b]
            xe = (a1[b] * dx - e2[b] * dy) / norm[b]
            ye = (ne2[b] * dx + a2[b] * dy) / norm[b]
            out[b, p] = xe * xe + ye * ye


@njit(cache=True, nogil=True, error_model="numpy")
def _sersic_fraction(r_sersic, smoothing, radius):  # pragma: no cover - compiled
    """Overwrites the elliptical radius with R / R_sersic, R floored at ``smoothing``."""
    for b in range(radius.shape[0]):
        for p in range(radius.shape[1]):
            r = radius[b, p]
            if r < smoothing:
                r = smoothing
            radius[b, p] = r / r_sersic[b]


@njit(cache=True, nogil=True, error_model="numpy")
def _sersic_exponent(neg_bn, power):  # pragma: no cover - compiled
    one = np.ones(1, power.dtype)[0]  # a literal 1 would promote float32 to float64
    for b in range(power.shape[0]):
        for p in range(power.shape[1]):
            power[b, p] = neg_bn[b] * (power[b, p] - one)


@njit(cache=True, nogil=True, error_model="numpy")
def _sersic_value(amp, frac, value):  # pragma: no cover - compiled
    for b in range(value.shape[0]):
        for p in range(value.shape[1]):
            value[b, p] = amp[b] * value[b, p] if frac[b, p] <= 1000.0 else 0.0


def sersic_elliptical(x, y, cx, cy, e1, e2, norm, r_sersic, inv_n, neg_bn, amp, smoothing: float) -> Tensor:
    """The per-pixel arithmetic of :func:`deeplense.sim.functional.sersic_elliptical` in fused
    passes around torch's ``sqrt``, ``pow`` and ``exp``; ``r_sersic`` is already floored at
    ``smoothing``, ``inv_n`` is ``1 / n_sersic`` and ``neg_bn`` is ``-b(n)``, all ``(B, 1)``."""
    batch = cx.shape[0]
    frac = torch.empty(batch, x.shape[-1], dtype=x.dtype)
    columns = (column_view(t) for t in (cx, cy, 1 - e1, e2, -e2, 1 + e1, norm))
    _sersic_radius2(rows_view(x, batch), rows_view(y, batch), *columns, frac.numpy())
    torch.sqrt_(frac)
    _sersic_fraction(column_view(r_sersic), typed_scalar(smoothing, frac.dtype), frac.numpy())
    power = torch.pow(frac, inv_n)
    _sersic_exponent(column_view(neg_bn), power.numpy())
    value = torch.exp_(power)
    _sersic_value(column_view(amp), frac.numpy(), value.numpy())
    return value
