"""Compiled deflections: point-mass sums, SIE, line segment, NFW, truncated NFW and TNFWC, bit for
bit their torch twins in :mod:`deeplense.sim.functional`."""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit
from torch import Tensor

from deeplense.sim.kernels.common import column_view, rows_view, typed_scalar

__all__ = [
    "add_point_masses",
    "sie_deflection",
    "line_segment_deflection",
    "nfw_deflection",
    "tnfw_deflection",
    "tnfwc_deflection",
]


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
        typed_scalar(torch.finfo(dtype).tiny, dtype),
        ax.numpy(),
        ay.numpy(),
    )


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
    xs, ys = rows_view(x, batch), rows_view(y, batch)
    cx, cy, cos, sin = (column_view(t) for t in (cx, cy, cos, sin))
    psi = torch.empty(batch, x.shape[-1], dtype=x.dtype)
    _sie_radicand(xs, ys, cx, cy, cos, sin, column_view(s**2), column_view(q2), psi.numpy())
    torch.sqrt_(psi)
    arg_y = torch.empty_like(psi)
    _sie_arguments(
        xs, ys, cx, cy, cos, sin, column_view(ecc), column_view(s), column_view(q2 * s), psi.numpy(), arg_y.numpy()
    )
    ax, ay = torch.atan_(psi), torch.atanh_(arg_y)
    _rotate_back(column_view(scale), cos, sin, ax.numpy(), ay.numpy())
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
    columns = (column_view(t) for t in (cx, cy, cos, sin, half_length))
    tiny = typed_scalar(torch.finfo(x.dtype).tiny, x.dtype)
    _line_terms(
        rows_view(x, batch), rows_view(y, batch), *columns, tiny, ratio.numpy(), v.numpy(), plus.numpy(), minus.numpy()
    )
    log_ratio, angle_plus, angle_minus = torch.log_(ratio), torch.atan2(v, plus), torch.atan2(v, minus)
    _line_combine(
        column_view(lam), column_view(cos), column_view(sin), log_ratio.numpy(), angle_plus.numpy(), angle_minus.numpy()
    )
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
    _squared_radius(rows_view(x, batch), rows_view(y, batch), column_view(cx), column_view(cy), radius.numpy())
    return torch.sqrt_(radius)


def _offsets(x, y, cx, cy, alpha, denom) -> tuple[np.ndarray, ...]:
    """The arguments of _scale_offsets as the combine kernels take them."""
    batch = cx.shape[0]
    return (
        rows_view(x, batch),
        rows_view(y, batch),
        column_view(cx),
        column_view(cy),
        column_view(alpha),
        column_view(denom),
    )


def _nfw_parts(x, y, cx, cy, r_floor, rs, x_floor: float) -> tuple[Tensor, ...]:
    """float64 (B, N) arrays X, sqrt(1 - X^2), sqrt(X^2 - 1), atanh and atan of _nfw_F, with X
    as nfw_deflection and tnfw_deflection form it from R floored at the column ``r_floor``."""
    radius = _radius(x, y, cx, cy)
    big_x = torch.empty(radius.shape, dtype=torch.float64)
    below, above = torch.empty_like(big_x), torch.empty_like(big_x)
    floors = (column_view(r_floor), column_view(rs), typed_scalar(x_floor, x.dtype))
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
    floor = typed_scalar(r_floor, x.dtype)
    _tnfwc_radicands(radius.numpy(), floor, column_view(rs), columns, big_x.numpy(), at_tau.numpy(), at_one.numpy())
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
