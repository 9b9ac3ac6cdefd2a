"""Counter-based random numbers for pixel noise, batched in torch on any device.

Each image owns a 64-bit key; the value drawn for pixel ``p`` of stream ``s`` is a pure function
of ``(key, s, p)``. An image's noise therefore never depends on the batch it was rendered in, the
device, or how many images came before it, which is what lets any single image be regenerated from
its stored seed. The generator is SplitMix64 (Steele, Lea & Flood 2014) evaluated at arbitrary
positions: ``mix64(key + (counter + 1) * golden)``.

Poisson variates use the transformed rejection method PTRS (Hoermann 1993, the algorithm numpy uses)
for means >= 10 and sequential inversion below.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["mix64", "uniform", "normal", "poisson", "stream_key"]


def _to_signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN = _to_signed(0x9E3779B97F4A7C15)
_M1 = _to_signed(0xBF58476D1CE4E5B9)
_M2 = _to_signed(0x94D049BB133111EB)
_STREAM = _to_signed(0xD1B54A32D192ED03)


def _shift_right(z: Tensor, n: int) -> Tensor:
    """Logical right shift of int64 tensors holding unsigned 64-bit patterns."""
    return (z >> n) & ((1 << (64 - n)) - 1)


def mix64(z: Tensor) -> Tensor:
    """SplitMix64 finaliser on int64 tensors (wrapping arithmetic)."""
    z = (z ^ _shift_right(z, 30)) * _M1
    z = (z ^ _shift_right(z, 27)) * _M2
    return z ^ _shift_right(z, 31)


def stream_key(keys: Tensor, stream: int) -> Tensor:
    """Independent key for stream number ``stream`` of each image key (int64 tensor)."""
    return mix64(keys + _to_signed(((stream + 1) * _STREAM) % (1 << 64)))


def _open_unit53(bits: Tensor) -> Tensor:
    """Top 53 bits of 64-bit patterns as float64 in the open interval (0, 1)."""
    return (_shift_right(bits, 11).to(torch.float64) + 0.5) * 2.0**-53


def _bits(keys: Tensor, n: int, offset: int = 0) -> Tensor:
    counters = torch.arange(offset + 1, offset + n + 1, dtype=torch.int64, device=keys.device)
    return mix64(keys.reshape(-1, 1) + counters * _GOLDEN)


def uniform(keys: Tensor, n: int, *, offset: int = 0, dtype: torch.dtype = torch.float32) -> Tensor:
    """``(len(keys), n)`` uniform variates in the open interval (0, 1)."""
    mantissa = 23 if dtype == torch.float32 else 52
    top = _shift_right(_bits(keys, n, offset), 64 - mantissa)
    return (top.to(dtype) + 0.5) * (2.0**-mantissa)


def normal(keys: Tensor, n: int, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """``(len(keys), n)`` standard normal variates (Box-Muller)."""
    u = uniform(keys, 2 * n, dtype=torch.float64)
    radius = torch.sqrt(-2.0 * torch.log(u[:, :n]))
    return (radius * torch.cos(2 * math.pi * u[:, n:])).to(dtype)


def poisson(keys: Tensor, lam: Tensor) -> Tensor:
    """Poisson variates with means ``lam`` of shape ``(len(keys), n)``, returned as float64.

    Negative or NaN means are an error; zero means give zero.
    """
    if not torch.isfinite(lam).all() or (lam < 0).any():
        raise ValueError("poisson: means must be finite and >= 0")
    lam = lam.to(torch.float64)
    out = torch.zeros_like(lam)
    small = (lam > 0) & (lam < 10)
    if small.any():
        out = torch.where(small, _poisson_inversion(stream_key(keys, 0), lam, small), out)
    large = lam >= 10
    if large.any():
        out = torch.where(large, _poisson_ptrs(stream_key(keys, 1), lam.clamp(min=10)), out)
    return out


def _poisson_inversion(keys: Tensor, lam: Tensor, where: Tensor) -> Tensor:
    """Sequential CDF search for the elements selected by the mask ``where`` (means below 10)."""
    batch, n = lam.shape
    idx = torch.nonzero(where.reshape(-1), as_tuple=True)[0]
    rows = torch.div(idx, n, rounding_mode="floor")
    cols = idx - rows * n
    counters = cols + 1
    bits = mix64(keys[rows] + counters * _GOLDEN)
    u = _open_unit53(bits)
    mean = lam.reshape(-1)[idx]
    p = torch.exp(-mean)
    cdf = p.clone()
    k = torch.zeros_like(mean)
    for step in range(1, 200):
        above = u > cdf
        if not above.any():
            break
        k += above
        p = p * mean / step
        cdf = cdf + p
    out = torch.zeros(batch * n, dtype=torch.float64, device=lam.device)
    out[idx] = k
    return out.reshape(batch, n)


def _ptrs_attempt(key: Tensor, col: Tensor, attempt: int, n: int, lam: Tensor) -> tuple[Tensor, Tensor]:
    """One PTRS proposal for each element of the flat arrays ``key, col, lam``; returns
    (candidate, accepted). Attempt ``t`` of column ``col`` uses counters ``2 (t n + col) + 1``
    and ``+ 1`` of the row's key. The expensive log test runs only where the quick test fails."""
    counter = 2 * (attempt * n + col) + 1
    U = _open_unit53(mix64(key + counter * _GOLDEN)) - 0.5
    V = _open_unit53(mix64(key + (counter + 1) * _GOLDEN))
    b = 0.931 + 2.53 * torch.sqrt(lam)
    a = -0.059 + 0.02483 * b
    us = 0.5 - U.abs()
    k = torch.floor((2 * a / us + b) * U + lam + 0.43)
    accepted = (us >= 0.07) & (V <= 0.9277 - 3.6224 / (b - 2))
    slow = torch.nonzero(~accepted, as_tuple=True)[0]
    us, V, a, b, k_s, lam = us[slow], V[slow], a[slow], b[slow], k[slow], lam[slow]
    reject = (k_s < 0) | ((us < 0.013) & (V > us))
    log_accept = torch.log(V) + torch.log(1.1239 + 1.1328 / (b - 3.4)) - torch.log(a / (us * us) + b) <= (
        -lam + k_s * torch.log(lam) - torch.lgamma(k_s.clamp(min=0) + 1)
    )
    accepted[slow] = ~reject & log_accept
    return k, accepted


def _poisson_ptrs(keys: Tensor, lam: Tensor) -> Tensor:
    """PTRS for means >= 10 on ``(B, n)`` means; retries only where a proposal was rejected."""
    batch, n = lam.shape
    flat_lam = lam.reshape(-1)
    flat_key = keys.reshape(-1, 1).expand(batch, n).reshape(-1)
    flat_col = torch.arange(n, dtype=torch.int64, device=lam.device).repeat(batch)
    k, accepted = _ptrs_attempt(flat_key, flat_col, 0, n, flat_lam)
    result = torch.where(accepted, k, torch.full_like(k, float("nan")))
    todo = torch.nonzero(~accepted, as_tuple=True)[0]
    for attempt in range(1, 64):
        if todo.numel() == 0:
            return result.reshape(batch, n)
        k, ok = _ptrs_attempt(flat_key[todo], flat_col[todo], attempt, n, flat_lam[todo])
        result[todo[ok]] = k[ok]
        todo = todo[~ok]
    raise RuntimeError("poisson: PTRS did not converge")  # probability below 1e-60
