"""Compiled PSF convolution: the separable truncated Gaussian, bit for bit its torch twin."""

from __future__ import annotations

import numpy as np
import torch
from numba import njit
from torch import Tensor

__all__ = ["gaussian_blur"]


@njit(cache=True, nogil=True, error_model="numpy")
def _gaussian_blur(images, taps, out):  # pragma: no cover - compiled
    count, h, w = images.shape
    radius = len(taps) // 2
    zero = taps[0] * 0
    row = np.empty(w + 2 * radius, images.dtype)
    acc = np.empty(w, images.dtype)
    rows = np.empty((h, w), images.dtype)
    for m in range(count):
        for i in range(h):  # along x, edge pixels replicated
            row[radius : radius + w] = images[m, i]
            row[:radius] = images[m, i, 0]
            row[radius + w :] = images[m, i, w - 1]
            acc[:] = zero
            for k in range(len(taps)):
                for j in range(w):
                    acc[j] = acc[j] + taps[k] * row[j + k]
            rows[i] = acc
        for i in range(h):  # along y
            acc[:] = zero
            for k in range(len(taps)):
                source = min(max(i + k - radius, 0), h - 1)
                for j in range(w):
                    acc[j] = acc[j] + taps[k] * rows[source, j]
            out[m, i] = acc


def gaussian_blur(images: Tensor, taps: list[float]) -> Tensor:
    """Separable blur of ``(M, H, W)`` images with normalised ``taps`` (odd length), edges
    replicated, taps summed in order: bit for bit the torch version in
    :func:`deeplense.sim.functional.gaussian_blur`."""
    array = images.contiguous().numpy()
    out = np.empty_like(array)
    _gaussian_blur(array, np.asarray(taps, dtype=array.dtype), out)
    return torch.from_numpy(out)
