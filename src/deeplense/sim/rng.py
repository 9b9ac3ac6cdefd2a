"""Counter-based random numbers for pixel noise, batched in torch on any device.

Each image owns a 64-bit key; the value drawn for pixel ``p`` of stream ``s`` is a pure function
of ``(key, s, p)``. An image's noise therefore never depends on the batch it was rendered in, the
device, or how many images came before it, which is what lets any single image be regenerated from
its stored seed. The generator is SplitMix64 (Steele, Lea & Flood 2014) evaluated at arbitrary
positions: ``mix64(key + (counter + 1) * golden)``.

Poisson variates use the transformed rejection method PTRS (Hoermann 1993, the algorithm numpy uses)
for means >= 10 and sequential inversion below.

Two schemes exist; data sets record which one made them (the noise models' ``generator`` option),
so that every stored image can be regenerated:

- scheme 1: every uniform takes the top 53 (float64) bits of its own 64-bit draw; Box-Muller
  keeps one of its two outputs; the two Poisson regimes use separate streams.
- scheme 2 (the default since the compiled kernels): a 64-bit draw gives two 32-bit uniforms;
  normals come in pairs from Marsaglia's polar method (pair ``j`` of an image with ``m`` pairs
  takes draw ``t m + j`` for its attempt ``t``, giving pixels ``2j`` and ``2j + 1``); Poisson uses
  one stream, pixel ``p`` of an ``n``-pixel image taking draw ``t n + p`` for its attempt ``t``.
  The inversion search uses the first half of attempt 0 and ``p_k = p_(k-1) (mean (1 / k))``;
  PTRS attempt ``t`` uses both halves as ``U + 1/2`` and ``V``, and log(k!) from a table for
  k < 1024. On CPU it runs in :mod:`deeplense.sim.kernels` (fewer draws, no trigonometry, one
  pass per pixel); the torch code here is its reference and the path on other devices (their
  ``log`` and ``exp`` may round differently in the last bit, so CPU and GPU agree to float
  rounding, not bit for bit).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["mix64", "uniform", "normal", "poisson", "stream_key", "SCHEMES"]

#: The noise schemes (see the module docstring); data sets without a record used scheme 1.
SCHEMES = (1, 2)


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


def _draws(keys: Tensor, counters: Tensor) -> Tensor:
    """The 64-bit draws at (1-based) ``counters`` of the matching ``keys``."""
    return _mix64_(keys + counters * _GOLDEN)


def _bits(keys: Tensor, n: int, offset: int = 0) -> Tensor:
    counters = torch.arange(offset + 1, offset + n + 1, dtype=torch.int64, device=keys.device)
    return _draws(keys.reshape(-1, 1), counters)


def uniform(keys: Tensor, n: int, *, offset: int = 0, dtype: torch.dtype = torch.float32) -> Tensor:
    """``(len(keys), n)`` uniform variates in the open interval (0, 1)."""
    return _top_bits_as(_bits(keys, n, offset), 23 if dtype == torch.float32 else 52, dtype)


def _uniform53(keys: Tensor, counters: Tensor) -> Tensor:
    """float64 uniforms in (0, 1) from the top 53 bits at ``counters`` of the matching ``keys``."""
    return _top_bits_as(_draws(keys, counters), 53, torch.float64)


def _halves(bits: Tensor) -> tuple[Tensor, Tensor]:
    """The high and low 32 bits of 64-bit patterns as float64 uniforms ``(h + 0.5) * 2**-32`` in
    the open interval (0, 1) (scheme 2)."""
    high = torch.bitwise_right_shift(bits, 32).bitwise_and_(0xFFFFFFFF).to(torch.float64)
    low = bits.bitwise_and_(0xFFFFFFFF).to(torch.float64)
    return high.add_(0.5).mul_(2.0**-32), low.add_(0.5).mul_(2.0**-32)


def _check_scheme(scheme: int) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown noise scheme {scheme!r}; known: {SCHEMES}")


def normal(keys: Tensor, n: int, *, dtype: torch.dtype = torch.float32, scheme: int = 1) -> Tensor:
    """``(len(keys), n)`` standard normal variates (Box-Muller) of noise scheme ``scheme``."""
    _check_scheme(scheme)
    if scheme == 2:
        return _normal_pairs(keys, n, dtype)
    u = uniform(keys, 2 * n, dtype=torch.float64)
    radius = u[:, :n].log().mul_(-2.0).sqrt_()
    return radius.mul_((2 * math.pi * u[:, n:]).cos_()).to(dtype)


def _normal_pairs(keys: Tensor, n: int, dtype: torch.dtype) -> Tensor:
    """Scheme 2 normals: draw ``j`` gives pixels ``2j`` (cosine) and ``2j + 1`` (sine)."""
    from deeplense.sim import kernels

    if kernels.enabled(keys):
        return kernels.normal_pairs(keys, n, dtype)
    m = (n + 1) // 2
    pairs = torch.empty(len(keys) * m, 2, dtype=torch.float64, device=keys.device)
    todo = torch.arange(len(keys) * m, device=keys.device)
    key, index = keys.repeat_interleave(m), torch.arange(m, device=keys.device).repeat(len(keys))
    for attempt in range(64):  # Marsaglia's polar method; rejected pairs try the next draw
        u, v = _halves(_draws(key, index + attempt * m + 1))
        u.mul_(2.0).sub_(1.0)
        v.mul_(2.0).sub_(1.0)
        s = u * u + v * v
        ok = s < 1.0
        s = s[ok]
        factor = torch.log(s).mul_(-2.0).div_(s).sqrt_()
        pairs[todo[ok]] = torch.stack((u[ok] * factor, v[ok] * factor), dim=-1)
        todo, key, index = todo[~ok], key[~ok], index[~ok]
        if todo.numel() == 0:
            return pairs.reshape(len(keys), 2 * m)[:, :n].to(dtype)
    raise RuntimeError("normal: the polar method did not converge")  # probability below 1e-40


def poisson(keys: Tensor, lam: Tensor, *, scheme: int = 1) -> Tensor:
    """Poisson variates with means ``lam`` of shape ``(len(keys), n)``, returned as float64, of
    noise scheme ``scheme``.

    Negative or NaN means are an error; zero means give zero. Each regime (inversion below 10,
    PTRS above) runs only on the elements that belong to it.
    """
    _check_scheme(scheme)
    if scheme == 2:
        from deeplense.sim import kernels

        if kernels.enabled(keys):
            return kernels.poisson(keys, lam.to(torch.float64))
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
            key = keys[rows] if scheme == 2 else stream_key(keys, stream)[rows]
            out[idx] = sampler(key, idx - rows * n, n, flat[idx], scheme)
    return out.reshape(batch, n)


def _poisson_inversion(key: Tensor, col: Tensor, n: int, mean: Tensor, scheme: int) -> Tensor:
    """Sequential CDF search for means below 10; element ``col`` of a row uses counter ``col + 1``
    of the row's key. Finished elements are dropped from the search every few steps."""
    u = _uniform53(key, col + 1) if scheme == 1 else _halves(_draws(key, col + 1))[0]
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
        if scheme == 1:
            p.mul_(mean).div_(step)
        else:
            p.mul_(mean * (1.0 / step))
        cdf += p
    out[active] = k
    return out


def _ptrs_attempt(key: Tensor, col: Tensor, attempt: int, n: int, lam: Tensor, scheme: int) -> tuple[Tensor, Tensor]:
    """One PTRS proposal for each element of the flat arrays ``key, col, lam``; returns
    (candidate, accepted). In scheme 1, attempt ``t`` of column ``col`` uses counters
    ``2 (t n + col) + 1`` and ``+ 1`` of the row's key; in scheme 2 both halves of counter
    ``t n + col + 1``. The expensive log test runs only where the quick test fails."""
    if scheme == 1:
        counter = (col + attempt * n).mul_(2).add_(1)
        U = _uniform53(key, counter).sub_(0.5)
        V = _uniform53(key, counter.add_(1))
    else:
        U, V = _halves(_draws(key, col + attempt * n + 1))
        U.sub_(0.5)
    b = torch.sqrt(lam).mul_(2.53).add_(0.931)
    a = (0.02483 * b).add_(-0.059)
    us = U.abs().neg_().add_(0.5)
    k = (2 * a).div_(us).add_(b).mul_(U).add_(lam).add_(0.43).floor_()
    accepted = (us >= 0.07) & (V <= torch.div(-3.6224, b - 2).add_(0.9277))
    slow = torch.nonzero(~accepted, as_tuple=True)[0]
    us, V, a, b, k_s, lam = us[slow], V[slow], a[slow], b[slow], k[slow], lam[slow]
    reject = (k_s < 0) | ((us < 0.013) & (V > us))
    log_accept = torch.log(V) + torch.log(1.1239 + 1.1328 / (b - 3.4)) - torch.log(a / (us * us) + b) <= (
        -lam + k_s * torch.log(lam) - _log_factorial(k_s.clamp(min=0), scheme)
    )
    accepted[slow] = ~reject & log_accept
    return k, accepted


def _log_factorial(k: Tensor, scheme: int) -> Tensor:
    """log(k!) of whole numbers k >= 0: scheme 2 takes small k from the kernels' table."""
    if scheme == 1:
        return torch.lgamma(k + 1)
    from deeplense.sim.kernels import LOG_FACTORIAL

    table = torch.as_tensor(LOG_FACTORIAL, device=k.device)
    small = k < len(table)
    return torch.where(small, table[torch.where(small, k, 0).long()], torch.lgamma(k + 1))


def _poisson_ptrs(key: Tensor, col: Tensor, n: int, lam: Tensor, scheme: int) -> Tensor:
    """PTRS for means >= 10; retries only where a proposal was rejected."""
    k, accepted = _ptrs_attempt(key, col, 0, n, lam, scheme)
    result = torch.where(accepted, k, torch.full_like(k, float("nan")))
    todo = torch.nonzero(~accepted, as_tuple=True)[0]
    for attempt in range(1, 64):
        if todo.numel() == 0:
            return result
        k, ok = _ptrs_attempt(key[todo], col[todo], attempt, n, lam[todo], scheme)
        result[todo[ok]] = k[ok]
        todo = todo[~ok]
    raise RuntimeError("poisson: PTRS did not converge")  # probability below 1e-60
