"""Compiled CPU kernels (numba) for the simulator's hot loops.

torch's eager CPU ops make one pass over memory per arithmetic step, so a sum of K point-mass
deflections over N pixels costs about 11 K full passes. The kernels here do the same arithmetic,
in the same order and precision, one pixel at a time (one pass), which is what makes the CPU engine
several times faster than lenstronomy. Each kernel has a torch twin that is the reference and the
path on other devices; the tests hold them to each other.

Kernels are compiled on first use and cached on disk (``NUMBA_CACHE_DIR`` moves the cache).
``DEEPLENSE_KERNELS=0`` turns them off (the torch twins run instead).
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from numba import njit
from torch import Tensor

__all__ = ["enabled", "add_point_masses", "gaussian_blur", "normal_pairs", "poisson"]


def enabled(tensor: Tensor) -> bool:
    """Whether the compiled kernels serve ``tensor``: on CPU, outside autograd, kernels not
    turned off."""
    return (
        tensor.device.type == "cpu"
        and not (tensor.requires_grad and torch.is_grad_enabled())
        and os.environ.get("DEEPLENSE_KERNELS", "1") != "0"
    )


@njit(cache=True, nogil=True, error_model="numpy")
def _add_point_masses(x, y, rows, counts, tiny, ax, ay):  # pragma: no cover - compiled
    for b in range(ax.shape[0]):
        for k in range(counts[b]):
            cx, cy, te = rows[b, k, 0], rows[b, k, 1], rows[b, k, 2]
            te2 = te * te
            for p in range(x.shape[0]):
                dx = x[p] - cx
                dy = y[p] - cy
                r2 = dx * dx
                r2 = r2 + dy * dy
                if r2 < tiny:
                    r2 = tiny
                a = te2 / r2
                ax[b, p] += dx * a
                ay[b, p] += dy * a


def add_point_masses(x: Tensor, y: Tensor, rows: Tensor, counts: Tensor, ax: Tensor, ay: Tensor) -> None:
    """Add to ``ax, ay`` (B, N) the deflections of point masses ``rows`` (B, K, [center_x, center_y,
    theta_E]), of which image b has the first ``counts[b]``, in catalogue order; ``x, y`` (N,) in
    arcsec. Bit for bit :func:`deeplense.sim.functional.point_mass_deflection` summed in order."""
    dtype = x.dtype
    _add_point_masses(
        x.numpy(),
        y.numpy(),
        rows.to(dtype).contiguous().numpy(),
        counts.to(torch.int64).numpy(),
        np.array(torch.finfo(dtype).tiny, dtype=x.numpy().dtype)[()],
        ax.numpy(),
        ay.numpy(),
    )


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


# -- noise scheme 2 (see deeplense.sim.random) ----------------------------------------------------
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_LOW32 = np.uint64(0xFFFFFFFF)
_S27, _S30, _S31, _S32 = np.uint64(27), np.uint64(30), np.uint64(31), np.uint64(32)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _draw(key, counter):  # pragma: no cover - compiled
    """SplitMix64 at ``counter`` (1-based) of ``key`` (both uint64, wrapping)."""
    z = key + counter * _GOLDEN
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _high(bits):  # pragma: no cover - compiled
    return (float(bits >> _S32) + 0.5) * 2.0**-32


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _low(bits):  # pragma: no cover - compiled
    return (float(bits & _LOW32) + 0.5) * 2.0**-32


@njit(cache=True, nogil=True, error_model="numpy")
def _normal_pairs(keys, out):  # pragma: no cover - compiled
    n = out.shape[1]
    pairs = (n + 1) // 2
    for b in range(out.shape[0]):
        for j in range(pairs):
            for attempt in range(64):  # Marsaglia's polar method: a pair is rejected with p = 0.21
                bits = _draw(keys[b], np.uint64(attempt * pairs + j + 1))
                u = 2.0 * _high(bits) - 1.0
                v = 2.0 * _low(bits) - 1.0
                s = u * u + v * v
                if s < 1.0:
                    factor = math.sqrt(-2.0 * math.log(s) / s)
                    out[b, 2 * j] = u * factor
                    if 2 * j + 1 < n:
                        out[b, 2 * j + 1] = v * factor
                    break


def normal_pairs(keys: Tensor, n: int, dtype: torch.dtype) -> Tensor:
    """Scheme-2 standard normals ``(len(keys), n)`` for int64 image keys."""
    out = torch.empty(len(keys), n, dtype=dtype)
    _normal_pairs(keys.contiguous().numpy().view(np.uint64), out.numpy())
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def _inversion(key, p, mean):  # pragma: no cover - compiled
    """Sequential inversion for 0 < mean < 10 on the first half of draw p."""
    u = _high(_draw(key, np.uint64(p + 1)))
    prob = math.exp(-mean)
    cdf = prob
    k = 0.0
    for step in range(1, 200):
        if u <= cdf:
            break
        k += 1.0
        prob = prob * (mean / step)
        cdf += prob
    return k


@njit(cache=True, nogil=True, error_model="numpy")
def _ptrs(key, p, n, mean):  # pragma: no cover - compiled
    """PTRS (Hoermann 1993) for mean >= 10; attempt t takes both halves of draw t n + p. NaN if
    64 attempts were rejected (probability below 1e-60)."""
    bb = math.sqrt(mean) * 2.53 + 0.931
    a = 0.02483 * bb + -0.059
    v_r = -3.6224 / (bb - 2.0) + 0.9277
    log_alpha = np.nan  # the slow test's per-pixel logs, computed on first need
    log_mean = np.nan
    for attempt in range(64):
        bits = _draw(key, np.uint64(attempt * n + p + 1))
        U = _high(bits) - 0.5
        V = _low(bits)
        us = -abs(U) + 0.5
        k = np.floor(((2.0 * a) / us + bb) * U + mean + 0.43)
        if us >= 0.07 and V <= v_r:
            return k
        if k < 0.0 or (us < 0.013 and V > us):
            continue
        if np.isnan(log_alpha):
            log_alpha = math.log(1.1239 + 1.1328 / (bb - 3.4))
            log_mean = math.log(mean)
        if math.log(V) + log_alpha - math.log(a / (us * us) + bb) <= -mean + k * log_mean - math.lgamma(k + 1.0):
            return k
    return np.nan


@njit(cache=True, nogil=True, error_model="numpy")
def _poisson(keys, lam, out):  # pragma: no cover - compiled
    """Returns 0, or 1 if a mean was negative or not finite, or 2 if PTRS did not converge. Each
    image's pixels are first listed by regime, so each regime runs as its own loop."""
    n = lam.shape[1]
    small = np.empty(n, np.int64)
    large = np.empty(n, np.int64)
    for b in range(lam.shape[0]):
        n_small = 0
        n_large = 0
        for p in range(n):
            mean = lam[b, p]
            if not (0.0 <= mean <= 1.7e308):
                return 1
            out[b, p] = 0.0
            small[n_small] = p
            large[n_large] = p
            n_small += (mean > 0.0) & (mean < 10.0)
            n_large += mean >= 10.0
        for i in range(n_small):
            out[b, small[i]] = _inversion(keys[b], small[i], lam[b, small[i]])
        for i in range(n_large):
            k = _ptrs(keys[b], large[i], n, lam[b, large[i]])
            if np.isnan(k):
                return 2
            out[b, large[i]] = k
    return 0


def poisson(keys: Tensor, lam: Tensor) -> Tensor:
    """Scheme-2 Poisson variates (float64) with float64 means ``lam`` (B, n); negative or
    non-finite means are an error."""
    out = torch.empty_like(lam)
    status = _poisson(keys.contiguous().numpy().view(np.uint64), lam.contiguous().numpy(), out.numpy())
    if status == 1:
        raise ValueError("poisson: means must be finite and >= 0")
    if status == 2:
        raise RuntimeError("poisson: PTRS did not converge")
    return out
