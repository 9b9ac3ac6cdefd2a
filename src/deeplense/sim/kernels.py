"""Compiled CPU kernels (numba) for the simulator's hot loops.

torch's eager CPU ops make one pass over memory per arithmetic step, so a sum of K point-mass
deflections over N pixels costs about 11 K full passes. The kernels here work one pixel at a time,
which is what makes the CPU engine several times faster than lenstronomy (docs/benchmarks.md).
Each kernel has a torch twin, the reference and the path on other devices:

- the render kernels (point masses, profiles, PSF) do the twin's arithmetic in the same order and
  precision and call torch for ``sqrt`` and every transcendental function, so their results are
  bit for bit the twin's, and data sets written without them regenerate exactly;
- the noise kernels implement noise scheme 2 (:mod:`deeplense.sim.random`) with the C library's
  ``log``/``exp``/``sqrt``; the twin agrees to float rounding.

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

__all__ = [
    "enabled",
    "fusable",
    "add_point_masses",
    "gaussian_blur",
    "sie_deflection",
    "line_segment_deflection",
    "nfw_deflection",
    "tnfw_deflection",
    "tnfwc_deflection",
    "sersic_elliptical",
    "normal_pairs",
    "poisson",
    "deeplense_counts",
]


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
        _scalar(torch.finfo(dtype).tiny, dtype),
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


def _rows(coord: Tensor, batch: int) -> np.ndarray:
    """``(B, N)`` numpy view of coordinates given as ``(N,)`` (broadcast, stride 0) or ``(B, N)``."""
    return (coord.unsqueeze(0).expand(batch, -1) if coord.dim() == 1 else coord).numpy()


def _column(param: Tensor) -> np.ndarray:
    return param.reshape(-1).contiguous().numpy()


def _scalar(value: float, dtype: torch.dtype) -> np.generic:
    """``value`` as a numpy scalar of ``dtype``, so that the kernels' arithmetic stays in it."""
    return np.array(value, dtype=torch.empty(0, dtype=dtype).numpy().dtype)[()]


def _unsigned(keys: Tensor) -> np.ndarray:
    """int64 image keys as the uint64 the kernels' wrapping arithmetic takes (same bits)."""
    return keys.contiguous().numpy().view(np.uint64)


# The profile kernels leave every transcendental function, and sqrt, to torch: its vectorised
# versions do not always round like the C library's (sqrt included), and calling them on the same
# (B, N) tensors as the torch path keeps the results bit for bit equal to it.


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _rotated(x, y, cx, cy, cos, sin):  # pragma: no cover - compiled
    """(x - cx, y - cy) in the frame turned by the angle of (cos, sin): functional._rotate."""
    dx = x - cx
    dy = y - cy
    return dx * cos + dy * sin, -dx * sin + dy * cos


@njit(cache=True, nogil=True, error_model="numpy")
def _sie_radicand(x, y, cx, cy, cos, sin, s2, q2, out):  # pragma: no cover - compiled
    for b in range(out.shape[0]):
        for p in range(out.shape[1]):
            xr, yr = _rotated(x[b, p], y[b, p], cx[b], cy[b], cos[b], sin[b])
            out[b, p] = q2[b] * (s2[b] + xr * xr) + yr * yr


@njit(cache=True, nogil=True, error_model="numpy")
def _sie_arguments(x, y, cx, cy, cos, sin, ecc, s, q2s, psi, arg_y):  # pragma: no cover - compiled
    """Overwrites ``psi`` with the argument of atan."""
    for b in range(psi.shape[0]):
        for p in range(psi.shape[1]):
            xr, yr = _rotated(x[b, p], y[b, p], cx[b], cy[b], cos[b], sin[b])
            arg_y[b, p] = ecc[b] * yr / (psi[b, p] + q2s[b])
            psi[b, p] = ecc[b] * xr / (psi[b, p] + s[b])


@njit(cache=True, nogil=True, error_model="numpy")
def _rotate_back(scale, cos, sin, ax, ay):  # pragma: no cover - compiled
    for b in range(ax.shape[0]):
        for p in range(ax.shape[1]):
            u = scale[b] * ax[b, p]
            v = scale[b] * ay[b, p]
            ax[b, p] = u * cos[b] - v * sin[b]
            ay[b, p] = u * sin[b] + v * cos[b]


def sie_deflection(x, y, cx, cy, cos, sin, s, q2, ecc, scale) -> tuple[Tensor, Tensor]:
    """The per-pixel arithmetic of :func:`deeplense.sim.functional.sie_deflection` in three fused
    passes around torch's ``sqrt``, ``atan`` and ``atanh``; ``scale`` is ``b / ecc``, the other
    parameters as named there, all ``(B, 1)``."""
    batch = cx.shape[0]
    xs, ys = _rows(x, batch), _rows(y, batch)
    cx, cy, cos, sin = (_column(t) for t in (cx, cy, cos, sin))
    psi = torch.empty(batch, x.shape[-1], dtype=x.dtype)
    _sie_radicand(xs, ys, cx, cy, cos, sin, _column(s**2), _column(q2), psi.numpy())
    torch.sqrt_(psi)
    arg_y = torch.empty_like(psi)
    _sie_arguments(xs, ys, cx, cy, cos, sin, _column(ecc), _column(s), _column(q2 * s), psi.numpy(), arg_y.numpy())
    ax, ay = torch.atan_(psi), torch.atanh_(arg_y)
    _rotate_back(_column(scale), cos, sin, ax.numpy(), ay.numpy())
    return ax, ay


@njit(cache=True, nogil=True, error_model="numpy")
def _line_terms(x, y, cx, cy, cos, sin, half_length, tiny, ratio, v_out, plus, minus):  # pragma: no cover
    for b in range(ratio.shape[0]):
        length = half_length[b]
        for p in range(ratio.shape[1]):
            u, v = _rotated(x[b, p], y[b, p], cx[b], cy[b], cos[b], sin[b])
            up = u + length
            um = u - length
            num = up * up + v * v
            den = um * um + v * v
            if num < tiny:
                num = tiny
            if den < tiny:
                den = tiny
            ratio[b, p] = num / den
            v_out[b, p] = v
            plus[b, p] = up
            minus[b, p] = um


@njit(cache=True, nogil=True, error_model="numpy")
def _line_combine(lam, cos, sin, log_ratio, angle_plus, angle_minus):  # pragma: no cover - compiled
    """Overwrites ``log_ratio`` and ``angle_plus`` with the deflection's x and y components."""
    half = np.full(1, 0.5, log_ratio.dtype)[0]  # a literal 0.5 would promote float32 to float64
    for b in range(log_ratio.shape[0]):
        for p in range(log_ratio.shape[1]):
            lr = half * log_ratio[b, p]
            diff = angle_plus[b, p] - angle_minus[b, p]
            log_ratio[b, p] = lam[b] * (lr * cos[b] + diff * sin[b])
            angle_plus[b, p] = lam[b] * (lr * sin[b] - diff * cos[b])


def line_segment_deflection(x, y, cx, cy, cos, sin, half_length, lam) -> tuple[Tensor, Tensor]:
    """The per-pixel arithmetic of :func:`deeplense.sim.functional.line_segment_deflection` in two
    fused passes around torch's ``log`` and ``atan2``; ``lam`` is ``theta_E^2 / (2 L)``."""
    batch = cx.shape[0]
    ratio = torch.empty(batch, x.shape[-1], dtype=x.dtype)
    v, plus, minus = torch.empty_like(ratio), torch.empty_like(ratio), torch.empty_like(ratio)
    columns = (_column(t) for t in (cx, cy, cos, sin, half_length))
    tiny = _scalar(torch.finfo(x.dtype).tiny, x.dtype)
    _line_terms(_rows(x, batch), _rows(y, batch), *columns, tiny, ratio.numpy(), v.numpy(), plus.numpy(), minus.numpy())
    log_ratio, angle_plus, angle_minus = torch.log_(ratio), torch.atan2(v, plus), torch.atan2(v, minus)
    _line_combine(_column(lam), _column(cos), _column(sin), log_ratio.numpy(), angle_plus.numpy(), angle_minus.numpy())
    return log_ratio, angle_plus


# -- NFW-like subhalos: fused passes around torch's sqrt, atanh, atan and log -----------------------


@njit(cache=True, nogil=True, error_model="numpy")
def _squared_radius(x, y, cx, cy, out):  # pragma: no cover - compiled
    for b in range(out.shape[0]):
        for p in range(out.shape[1]):
            dx = x[b, p] - cx[b]
            dy = y[b, p] - cy[b]
            r2 = dx * dx
            out[b, p] = r2 + dy * dy


@njit(cache=True, nogil=True, error_model="numpy")
def _nfw_scaled_radius(radius, r_floor, rs, x_floor, big_x, below, above):  # pragma: no cover - compiled
    """X = max(max(R, r_floor) / Rs, x_floor), widened to float64, into ``big_x``; the radicands
    of _nfw_F, max(1 - X^2, 1e-300) and max(X^2 - 1, 1e-300), into ``below`` and ``above``."""
    for b in range(radius.shape[0]):
        for p in range(radius.shape[1]):
            r = radius[b, p]
            if r < r_floor[b]:
                r = r_floor[b]
            scaled = r / rs[b]
            if scaled < x_floor:
                scaled = x_floor
            big_x[b, p] = scaled
            x2 = big_x[b, p] * big_x[b, p]
            below[b, p] = max(1.0 - x2, 1e-300)
            above[b, p] = max(x2 - 1.0, 1e-300)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _nfw_f(big_x, root_below, root_above, atanh_v, atan_v):  # pragma: no cover - compiled
    """F(X) of functional._nfw_F from torch's square roots, atanh and atan at X."""
    value = atanh_v / root_below if big_x < 1.0 else atan_v / root_above
    d = big_x - 1.0
    if abs(d) < 1e-5:
        value = 1.0 - 2.0 * d / 3.0 + 7.0 * (d * d) / 15.0
    return value


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _scale_offsets(x, y, cx, cy, alpha, denom, ax, ay, b, p):  # pragma: no cover - compiled
    """The profiles' last step, ``a = alpha g / denom`` times (dx, dy), where ``g`` (g(X) / X^2)
    was stored in ``ax`` and so rounded to the output precision as torch's ``.to`` does."""
    a = alpha[b] * ax[b, p]
    a = a / denom[b]
    ax[b, p] = a * (x[b, p] - cx[b])
    ay[b, p] = a * (y[b, p] - cy[b])


@njit(cache=True, nogil=True, error_model="numpy")
def _nfw_combine(x, y, cx, cy, alpha, denom, parts, log_half_x, ax, ay):  # pragma: no cover - compiled
    big_x, root_below, root_above, atanh_v, atan_v = parts
    for b in range(ax.shape[0]):
        for p in range(ax.shape[1]):
            big = big_x[b, p]
            f = _nfw_f(big, root_below[b, p], root_above[b, p], atanh_v[b, p], atan_v[b, p])
            ax[b, p] = (log_half_x[b, p] + f) / (big * big)
            _scale_offsets(x, y, cx, cy, alpha, denom, ax, ay, b, p)


@njit(cache=True, nogil=True, error_model="numpy")
def _tnfw_combine(x, y, cx, cy, alpha, denom, columns, parts, root, log_v, ax, ay):  # pragma: no cover
    """``columns`` (6, B): t2 / (t2 + 1)^2, t2 + 1, tau pi, (t2 - 1) log tau, t2 - 1, tau."""
    big_x, root_below, root_above, atanh_v, atan_v = parts
    for b in range(ax.shape[0]):
        c0, t2p1, tau_pi, log_term = columns[0, b], columns[1, b], columns[2, b], columns[3, b]
        t2m1, tau = columns[4, b], columns[5, b]
        for p in range(ax.shape[1]):
            big = big_x[b, p]
            x2 = big * big
            f = _nfw_f(big, root_below[b, p], root_above[b, p], atanh_v[b, p], atan_v[b, p])
            bracket = (t2p1 + 2.0 * (x2 - 1.0)) * f
            bracket = bracket + tau_pi
            bracket = bracket + log_term
            inner = log_v[b, p] * t2m1 / tau
            bracket = bracket + root[b, p] * (inner - math.pi)
            ax[b, p] = c0 * bracket / x2
            _scale_offsets(x, y, cx, cy, alpha, denom, ax, ay, b, p)


@njit(cache=True, nogil=True, error_model="numpy")
def _tnfwc_radicands(radius, r_floor, rs, columns, big_x, at_tau, at_one):  # pragma: no cover - compiled
    """X = max(R, r_floor) / Rs, widened to float64, into ``big_x``; for functional._tnfwc_u1 at
    t = tau and at t = 1, s, max(|s|, 1e-300) and (t^2 + X^2)(b^2 + X^2) into planes 0, 1 and 4
    of ``at_tau`` and ``at_one``. ``columns`` (4, B): b^2, tau^2, tau^2 - b^2, 1 - b^2."""
    for b in range(radius.shape[0]):
        b2, t2, t2_minus_b2, one_minus_b2 = columns[0, b], columns[1, b], columns[2, b], columns[3, b]
        for p in range(radius.shape[1]):
            r = radius[b, p]
            if r < r_floor:
                r = r_floor
            big_x[b, p] = r / rs[b]
            x2 = big_x[b, p] * big_x[b, p]
            b2x2 = b2 + x2
            for out, top, t2x2 in ((at_tau, t2_minus_b2, t2 + x2), (at_one, one_minus_b2, 1.0 + x2)):
                value = top / b2x2
                out[0, b, p] = value
                out[1, b, p] = max(abs(value), 1e-300)
                out[4, b, p] = t2x2 * b2x2


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _tnfwc_u2(planes, b, p, t2x2):  # pragma: no cover - compiled
    """(t^2 + X^2) u1 of functional._tnfwc_u1 from the planes s, sqrt(max(|s|, 1e-300)),
    its asinh and asin (torch's), and the product's square root."""
    s, root = planes[0, b, p], planes[1, b, p]
    h = planes[2, b, p] / root if s > 0 else planes[3, b, p] / root
    if abs(s) < 1e-4:
        h = 1.0 - s / 6.0 + 3.0 * (s * s) / 40.0
    return t2x2 * (h / planes[4, b, p])


@njit(cache=True, nogil=True, error_model="numpy")
def _tnfwc_combine(x, y, cx, cy, alpha, rs, columns, big_x, at_tau, at_one, ax, ay):  # pragma: no cover
    """``columns`` (5, B): tau^2, tau^2 / (tau^2 - 1), u2(0, tau), u2(0, 1) and g(1)."""
    for b in range(ax.shape[0]):
        t2, scale, zero_t, zero_one, g_one = columns[0, b], columns[1, b], columns[2, b], columns[3, b], columns[4, b]
        for p in range(ax.shape[1]):
            x2 = big_x[b, p] * big_x[b, p]
            g = -_tnfwc_u2(at_tau, b, p, t2 + x2) + zero_t
            g = g + _tnfwc_u2(at_one, b, p, 1.0 + x2)
            g = scale * (g - zero_one)
            ax[b, p] = g / (g_one * x2)
            _scale_offsets(x, y, cx, cy, alpha, rs, ax, ay, b, p)


def _radius(x, y, cx, cy) -> Tensor:
    """Distance (B, N) of ``x, y`` from the centres ``cx, cy`` (B, 1), in their precision."""
    batch = cx.shape[0]
    radius = torch.empty(batch, x.shape[-1], dtype=x.dtype)
    _squared_radius(_rows(x, batch), _rows(y, batch), _column(cx), _column(cy), radius.numpy())
    return torch.sqrt_(radius)


def _offsets(x, y, cx, cy, alpha, denom) -> tuple[np.ndarray, ...]:
    """The arguments of _scale_offsets as the combine kernels take them."""
    batch = cx.shape[0]
    return _rows(x, batch), _rows(y, batch), _column(cx), _column(cy), _column(alpha), _column(denom)


def _nfw_parts(x, y, cx, cy, r_floor, rs, x_floor: float) -> tuple[Tensor, ...]:
    """float64 (B, N) arrays X, sqrt(1 - X^2), sqrt(X^2 - 1), atanh and atan of _nfw_F, with X
    as nfw_deflection and tnfw_deflection form it from R floored at the column ``r_floor``."""
    radius = _radius(x, y, cx, cy)
    big_x = torch.empty(radius.shape, dtype=torch.float64)
    below, above = torch.empty_like(big_x), torch.empty_like(big_x)
    floors = (_column(r_floor), _column(rs), _scalar(x_floor, x.dtype))
    _nfw_scaled_radius(radius.numpy(), *floors, big_x.numpy(), below.numpy(), above.numpy())
    root_below, root_above = torch.sqrt_(below), torch.sqrt_(above)
    atanh_v = torch.atanh_(root_below.clamp(max=1 - 1e-16))
    return big_x, root_below, root_above, atanh_v, torch.atan(root_above)


def nfw_deflection(x, y, cx, cy, rs, alpha, denom, r_floor, x_floor: float) -> tuple[Tensor, Tensor]:
    """The per-pixel arithmetic of :func:`deeplense.sim.functional.nfw_deflection` in fused passes
    around torch's ``sqrt``, ``atanh``, ``atan`` and ``log``; ``denom`` is ``Rs (1 + ln 1/2)``
    and ``r_floor`` the column that R is floored at, all ``(B, 1)``."""
    parts = _nfw_parts(x, y, cx, cy, r_floor, rs, x_floor)
    log_half_x = torch.log(parts[0] / 2)
    ax, ay = torch.empty(parts[0].shape, dtype=x.dtype), torch.empty(parts[0].shape, dtype=x.dtype)
    arrays = tuple(t.numpy() for t in parts)
    _nfw_combine(*_offsets(x, y, cx, cy, alpha, denom), arrays, log_half_x.numpy(), ax.numpy(), ay.numpy())
    return ax, ay


def tnfw_deflection(x, y, cx, cy, rs, alpha, denom, r_floor, x_floor: float, tau) -> tuple[Tensor, Tensor]:
    """The per-pixel arithmetic of :func:`deeplense.sim.functional.tnfw_deflection`, as
    :func:`nfw_deflection` does it; ``tau`` is ``r_trunc / Rs`` in float64, ``(B, 1)``."""
    parts = _nfw_parts(x, y, cx, cy, r_floor, rs, x_floor)
    big_x = parts[0]
    t2 = tau**2
    root = torch.sqrt(t2 + big_x**2)
    log_v = torch.log(big_x / (tau + root))
    columns = torch.cat(
        [
            t2 / (t2 + 1) ** 2,
            t2 + 1,
            tau * math.pi,
            (t2 - 1) * torch.log(tau),
            t2 - 1,
            tau,
        ],
        dim=1,
    )
    ax, ay = torch.empty(big_x.shape, dtype=x.dtype), torch.empty(big_x.shape, dtype=x.dtype)
    head = (*_offsets(x, y, cx, cy, alpha, denom), columns.T.contiguous().numpy(), tuple(t.numpy() for t in parts))
    _tnfw_combine(*head, root.numpy(), log_v.numpy(), ax.numpy(), ay.numpy())
    return ax, ay


def tnfwc_deflection(
    x, y, cx, cy, rs, alpha, r_floor: float, beta, tau, zero_t, zero_one, g_one
) -> tuple[Tensor, Tensor]:
    """The per-pixel arithmetic of :func:`deeplense.sim.functional.tnfwc_deflection` in fused
    passes around torch's ``sqrt``, ``asinh`` and ``asin``. ``beta`` and ``tau`` (float64, tau
    moved off 1 as tnfwc_g does) and the values ``u2(0, tau)``, ``u2(0, 1)`` and ``g(1)`` are
    ``(B, 1)`` columns; R is floored at ``r_floor``."""
    radius = _radius(x, y, cx, cy)
    big_x = torch.empty(radius.shape, dtype=torch.float64)
    at_tau, at_one = (torch.empty(5, *radius.shape, dtype=torch.float64) for _ in range(2))
    b2, t2 = beta**2, tau**2
    columns = torch.cat([b2, t2, t2 - b2, 1 - b2], dim=1).T.contiguous().numpy()
    floor = _scalar(r_floor, x.dtype)
    _tnfwc_radicands(radius.numpy(), floor, _column(rs), columns, big_x.numpy(), at_tau.numpy(), at_one.numpy())
    for planes, t in ((at_tau, tau), (at_one, torch.ones_like(tau))):
        root = torch.sqrt_(planes[1])
        torch.asinh(root, out=planes[2])
        if not bool((t > beta).all()):  # as _tnfwc_u1: arcsin only where some s < 0
            torch.asin(root.clamp(max=1.0), out=planes[3])
        torch.sqrt_(planes[4])
    ax, ay = torch.empty_like(radius), torch.empty_like(radius)
    columns = torch.cat([t2, t2 / (t2 - 1), zero_t, zero_one, g_one], dim=1).T.contiguous().numpy()
    head = (*_offsets(x, y, cx, cy, alpha, rs), columns, big_x.numpy())
    _tnfwc_combine(*head, at_tau.numpy(), at_one.numpy(), ax.numpy(), ay.numpy())
    return ax, ay


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
    columns = (_column(t) for t in (cx, cy, 1 - e1, e2, -e2, 1 + e1, norm))
    _sersic_radius2(_rows(x, batch), _rows(y, batch), *columns, frac.numpy())
    torch.sqrt_(frac)
    _sersic_fraction(_column(r_sersic), _scalar(smoothing, frac.dtype), frac.numpy())
    power = torch.pow(frac, inv_n)
    _sersic_exponent(_column(neg_bn), power.numpy())
    value = torch.exp_(power)
    _sersic_value(_column(amp), frac.numpy(), value.numpy())
    return value


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
    _normal_pairs(_unsigned(keys), out.numpy())
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
        _column(t.to(model.dtype)),
        _column((background_rms**2).to(model.dtype)),
        bool(double_poisson),
        _unsigned(keys[0]),
        _unsigned(keys[1]),
        out.numpy(),
    )
    _raise_for(status)
    return out


def poisson(keys: Tensor, lam: Tensor) -> Tensor:
    """Scheme-2 Poisson variates (float64) with float64 means ``lam`` (B, n); negative or
    non-finite means are an error."""
    out = torch.empty_like(lam)
    _raise_for(_poisson(_unsigned(keys), lam.contiguous().numpy(), out.numpy()))
    return out
