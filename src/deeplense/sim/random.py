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


def _mix64_(z: Tensor) -> Tensor:
    """SplitMix64 finaliser applied in place to a freshly made int64 tensor (one scratch buffer:
    the out-of-place version spends most of its time allocating)."""
    scratch = torch.empty_like(z)
    for shift, multiplier in ((30, _M1), (27, _M2), (31, None)):
        torch.bitwise_right_shift(z, shift, out=scratch)
        scratch &= (1 << (64 - shift)) - 1
        z ^= scratch
        if multiplier is not None:
            z *= multiplier
    return z


def mix64(z: Tensor) -> Tensor:
    """SplitMix64 finaliser on int64 tensors (wrapping arithmetic)."""
    return _mix64_(z.clone())


def stream_key(keys: Tensor, stream: int) -> Tensor:
    """Independent key for stream number ``stream`` of each image key (int64 tensor)."""
    return _mix64_(keys + _to_signed(((stream + 1) * _STREAM) % (1 << 64)))


def _top_bits_as(bits: Tensor, n: int, dtype: torch.dtype) -> Tensor:
    """The top ``n`` bits of 64-bit patterns as ``(top + 0.5) * 2**-n`` in ``dtype``: the open
    interval (0, 1). Overwrites ``bits``."""
    bits >>= 64 - n
    bits &= (1 << n) - 1
    return bits.to(dtype).add_(0.5).mul_(2.0**-n)


def _bits(keys: Tensor, n: int, offset: int = 0) -> Tensor:
    counters = torch.arange(offset + 1, offset + n + 1, dtype=torch.int64, device=keys.device)
    counters *= _GOLDEN
    return _mix64_(keys.reshape(-1, 1) + counters)


def uniform(keys: Tensor, n: int, *, offset: int = 0, dtype: torch.dtype = torch.float32) -> Tensor:
    """``(len(keys), n)`` uniform variates in the open interval (0, 1)."""
    return _top_bits_as(_bits(keys, n, offset), 23 if dtype == torch.float32 else 52, dtype)


def _uniform53(keys: Tensor, counters: Tensor) -> Tensor:
    """float64 uniforms in (0, 1) from the top 53 bits at ``counters`` of the matching ``keys``."""
    return _top_bits_as(_mix64_(keys + counters * _GOLDEN), 53, torch.float64)


def normal(keys: Tensor, n: int, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """``(len(keys), n)`` standard normal variates (Box-Muller)."""
    u = uniform(keys, 2 * n, dtype=torch.float64)
    radius = u[:, :n].log().mul_(-2.0).sqrt_()
    return radius.mul_((2 * math.pi * u[:, n:]).cos_()).to(dtype)


def poisson(keys: Tensor, lam: Tensor) -> Tensor:
    """Poisson variates with means ``lam`` of shape ``(len(keys), n)``, returned as float64.

    Negative or NaN means are an error; zero means give zero. Each regime (inversion below 10,
    PTRS above) runs only on the elements that belong to it.
    """
    if not torch.isfinite(lam).all() or (lam < 0).any():
        raise ValueError("poisson: means must be finite and >= 0")
    batch, n = lam.shape
    flat = lam.reshape(-1).to(torch.float64)
    out = torch.zeros(batch * n, dtype=torch.float64, device=lam.device)
    large = flat >= 10
    for stream, idx, sampler in (
        (0, torch.nonzero((flat > 0) & ~large, as_tuple=True)[0], _poisson_inversion),
        (1, torch.nonzero(large, as_tuple=True)[0], _poisson_ptrs),
    ):
        if idx.numel():
            rows = torch.div(idx, n, rounding_mode="floor")
            out[idx] = sampler(stream_key(keys, stream)[rows], idx - rows * n, n, flat[idx])
    return out.reshape(batch, n)


def _poisson_inversion(key: Tensor, col: Tensor, n: int, mean: Tensor) -> Tensor:
    """Sequential CDF search for means below 10; element ``col`` of a row uses counter ``col + 1``
    of the row's key. Finished elements are dropped from the search every few steps."""
    u = _uniform53(key, col + 1)
    p = torch.exp(-mean)
    cdf = p.clone()
    k = torch.zeros_like(mean)
    out = torch.zeros_like(mean)
    active = torch.arange(len(mean), device=mean.device)  # positions in ``out`` of the rows searched
    for step in range(1, 200):
        above = u > cdf
        if step % 4 == 0:
            keep = torch.nonzero(above, as_tuple=True)[0]
            if keep.numel() == 0:
                break
            out[active] = k
            active, u, p, cdf, k, mean, above = (t[keep] for t in (active, u, p, cdf, k, mean, above))
        k += above
        p.mul_(mean).div_(step)
        cdf += p
    out[active] = k
    return out


def _ptrs_attempt(key: Tensor, col: Tensor, attempt: int, n: int, lam: Tensor) -> tuple[Tensor, Tensor]:
    """One PTRS proposal for each element of the flat arrays ``key, col, lam``; returns
    (candidate, accepted). Attempt ``t`` of column ``col`` uses counters ``2 (t n + col) + 1``
    and ``+ 1`` of the row's key. The expensive log test runs only where the quick test fails."""
    counter = (col + attempt * n).mul_(2).add_(1)
    U = _uniform53(key, counter).sub_(0.5)
    V = _uniform53(key, counter.add_(1))
    b = torch.sqrt(lam).mul_(2.53).add_(0.931)
    a = (0.02483 * b).add_(-0.059)
    us = U.abs().neg_().add_(0.5)
    k = (2 * a).div_(us).add_(b).mul_(U).add_(lam).add_(0.43).floor_()
    accepted = (us >= 0.07) & (V <= torch.div(-3.6224, b - 2).add_(0.9277))
    slow = torch.nonzero(~accepted, as_tuple=True)[0]
    us, V, a, b, k_s, lam = us[slow], V[slow], a[slow], b[slow], k[slow], lam[slow]
    reject = (k_s < 0) | ((us < 0.013) & (V > us))
    log_accept = torch.log(V) + torch.log(1.1239 + 1.1328 / (b - 3.4)) - torch.log(a / (us * us) + b) <= (
        -lam + k_s * torch.log(lam) - torch.lgamma(k_s.clamp(min=0) + 1)
    )
    accepted[slow] = ~reject & log_accept
    return k, accepted


def _poisson_ptrs(key: Tensor, col: Tensor, n: int, lam: Tensor) -> Tensor:
    """PTRS for means >= 10; retries only where a proposal was rejected."""
    k, accepted = _ptrs_attempt(key, col, 0, n, lam)
    result = torch.where(accepted, k, torch.full_like(k, float("nan")))
    todo = torch.nonzero(~accepted, as_tuple=True)[0]
    for attempt in range(1, 64):
        if todo.numel() == 0:
            return result
        k, ok = _ptrs_attempt(key[todo], col[todo], attempt, n, lam[todo])
        result[todo[ok]] = k[ok]
        todo = todo[~ok]
    raise RuntimeError("poisson: PTRS did not converge")  # probability below 1e-60
