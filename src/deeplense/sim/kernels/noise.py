"""Compiled noise scheme 2 (:mod:`deeplense.sim.rng`): SplitMix64 draws, normal pairs, Poisson
counts and the DeepLense counts model, with the C library's ``log``/``exp``/``sqrt``."""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit
from torch import Tensor

from deeplense.sim.kernels.common import column_view, unsigned_keys

__all__ = ["normal_pairs", "poisson", "deeplense_counts", "LOG_FACTORIAL"]


# -- noise scheme 2 (see deeplense.sim.rng) ----------------------------------------------------
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


# The rejection loops below are ``while`` loops on purpose: LLVM vectorises a counted loop with an
# early exit, evaluating several attempts at once, which is 6x slower here (one usually suffices).


@njit(cache=True, nogil=True, error_model="numpy")
def _normal_row(key, out):  # pragma: no cover - compiled
    n = out.shape[0]
    pairs = (n + 1) // 2
    for j in range(pairs):
        attempt = 0
        while True:  # Marsaglia's polar method: a pair is rejected with p = 0.21
            bits = _draw(key, np.uint64(attempt * pairs + j + 1))
            u = 2.0 * _high(bits) - 1.0
            v = 2.0 * _low(bits) - 1.0
            s = u * u + v * v
            if s < 1.0 or attempt == 63:  # 64 rejections (p < 1e-42) leave s >= 1: NaN
                break
            attempt += 1
        factor = math.sqrt(-2.0 * math.log(s) / s)
        out[2 * j] = u * factor
        if 2 * j + 1 < n:
            out[2 * j + 1] = v * factor


@njit(cache=True, nogil=True, error_model="numpy")
def _normal_pairs(keys, out):  # pragma: no cover - compiled
    for b in range(out.shape[0]):
        _normal_row(keys[b], out[b])


def normal_pairs(keys: Tensor, n: int, dtype: torch.dtype) -> Tensor:
    """Scheme-2 standard normals ``(len(keys), n)`` for int64 image keys."""
    out = torch.empty(len(keys), n, dtype=dtype)
    _normal_pairs(unsigned_keys(keys), out.numpy())
    return out


#: The inversion search's first steps run without a data-dependent branch (most means below 10
#: need fewer); the count of CDF values below u is the same as the sequential search's.
_UNROLLED_STEPS = 8


@njit(cache=True, nogil=True, error_model="numpy")
def _inversion(key, p, mean):  # pragma: no cover - compiled
    """Sequential inversion for 0 < mean < 10 on the first half of draw p."""
    u = _high(_draw(key, np.uint64(p + 1)))
    prob = math.exp(-mean)
    cdf = prob
    k = 0.0
    for step in range(1, _UNROLLED_STEPS + 1):
        k += u > cdf
        prob = prob * (mean * (1.0 / step))
        cdf += prob
    step = _UNROLLED_STEPS + 1
    while u > cdf and step < 200:
        k += 1.0
        prob = prob * (mean * (1.0 / step))
        cdf += prob
        step += 1
    return k


#: log(k!) for k below its length, tabulated (Python's lgamma); beyond, the library's lgamma.
LOG_FACTORIAL = np.array([math.lgamma(k + 1.0) for k in range(1024)])


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _log_factorial(k):  # pragma: no cover - compiled
    return LOG_FACTORIAL[int(k)] if k < LOG_FACTORIAL.size else math.lgamma(k + 1.0)


@njit(cache=True, nogil=True, error_model="numpy")
def _ptrs(key, p, n, mean):  # pragma: no cover - compiled
    """PTRS (Hoermann 1993) for mean >= 10; attempt t takes both halves of draw t n + p. NaN if
    64 attempts were rejected (probability below 1e-60)."""
    bb = math.sqrt(mean) * 2.53 + 0.931
    a = 0.02483 * bb + -0.059
    v_r = -3.6224 / (bb - 2.0) + 0.9277
    log_alpha = np.nan  # the slow test's per-pixel logs, computed on first need
    log_mean = np.nan
    attempt = 0
    while attempt < 64:
        bits = _draw(key, np.uint64(attempt * n + p + 1))
        attempt += 1
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
        if math.log(V) + log_alpha - math.log(a / (us * us) + bb) <= -mean + k * log_mean - _log_factorial(k):
            return k
    return np.nan


@njit(cache=True, nogil=True, error_model="numpy")
def _poisson_row(key, lam, out, small, large):  # pragma: no cover - compiled
    """One image's variates into ``out``; ``small, large`` are scratch index arrays. Returns 0, or
    1 if a mean was negative or not finite, or 2 if PTRS did not converge. The pixels are first
    listed by regime, so that each regime runs as its own loop."""
    n = lam.shape[0]
    n_small = 0
    n_large = 0
    for p in range(n):
        mean = lam[p]
        if not (0.0 <= mean <= 1.7e308):
            return 1
        out[p] = 0.0
        small[n_small] = p
        large[n_large] = p
        n_small += (mean > 0.0) & (mean < 10.0)
        n_large += mean >= 10.0
    for i in range(n_small):
        out[small[i]] = _inversion(key, small[i], lam[small[i]])
    for i in range(n_large):
        k = _ptrs(key, large[i], n, lam[large[i]])
        if np.isnan(k):
            return 2
        out[large[i]] = k
    return 0


@njit(cache=True, nogil=True, error_model="numpy")
def _poisson(keys, lam, out):  # pragma: no cover - compiled
    small = np.empty(lam.shape[1], np.int64)
    large = np.empty(lam.shape[1], np.int64)
    for b in range(lam.shape[0]):
        status = _poisson_row(keys[b], lam[b], out[b], small, large)
        if status:
            return status
    return 0


def _raise_for(status: int) -> None:
    if status == 1:
        raise ValueError("poisson: means must be finite and >= 0")
    if status == 2:
        raise RuntimeError("poisson: PTRS did not converge")


@njit(cache=True, nogil=True, error_model="numpy")
def _deeplense_counts(model, t, background_var, double_poisson, normal_keys, poisson_keys, out):  # pragma: no cover
    n = model.shape[1]
    z = np.empty(n, model.dtype)
    lam = np.empty(n)
    small = np.empty(n, np.int64)
    large = np.empty(n, np.int64)
    for b in range(model.shape[0]):
        _normal_row(normal_keys[b], z)
        for p in range(n):
            m = model[b, p]
            variance = background_var[b] + abs(m) / t[b] if double_poisson else background_var[b]
            mean = t[b] * (m + z[p] * math.sqrt(variance))
            lam[p] = mean if not mean < 0 else 0.0
        status = _poisson_row(poisson_keys[b], lam, out[b], small, large)
        if status:
            return status
    return 0


def deeplense_counts(model: Tensor, t: Tensor, background_rms: Tensor, double_poisson: bool, keys: tuple) -> Tensor:
    """Scheme-2 ``deeplense_counts`` noise of :class:`deeplense.sim.instruments.DeepLenseCounts` in
    one pass per image: ``Poisson(clip(t (model + z sqrt(background_rms^2 [+ |model| / t])), 0))``
    with ``z`` the normals of ``keys[0]`` and the Poisson variates of ``keys[1]``; float32
    arithmetic as the torch composition does it, with the C library's sqrt."""
    out = torch.empty_like(model)
    status = _deeplense_counts(
        model.contiguous().numpy(),
        column_view(t.to(model.dtype)),
        column_view((background_rms**2).to(model.dtype)),
        bool(double_poisson),
        unsigned_keys(keys[0]),
        unsigned_keys(keys[1]),
        out.numpy(),
    )
    _raise_for(status)
    return out


def poisson(keys: Tensor, lam: Tensor) -> Tensor:
    """Scheme-2 Poisson variates (float64) with float64 means ``lam`` (B, n); negative or
    non-finite means are an error."""
    out = torch.empty_like(lam)
    _raise_for(_poisson(unsigned_keys(keys), lam.contiguous().numpy(), out.numpy()))
    return out
