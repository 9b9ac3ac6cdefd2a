"""Pure, batched torch functions for lensing: deflections, light profiles, PSF convolution.

Conventions follow lenstronomy (the physics oracle of the test suite):

* angles in arcsec; ``x`` grows with the column index, ``y`` with the row index;
* parameters are tensors of shape ``(B, 1)`` broadcast against coordinates of shape
  ``(N,)`` or ``(B, N)``; results have shape ``(B, N)``;
* ellipticities ``e1, e2`` map to orientation ``phi = atan2(e2, e1) / 2`` and axis ratio
  ``q = (1 - |e|) / (1 + |e|)``;
* Einstein radii of elliptical profiles are product-averaged (lenstronomy's convention).

Every function is device- and dtype-agnostic and contains no randomness.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from deeplense.sim import kernels

__all__ = [
    "pixel_grid",
    "ellipticity_to_phi_q",
    "sie_deflection",
    "sis_deflection",
    "shear_deflection",
    "point_mass_deflection",
    "nfw_deflection",
    "tnfw_deflection",
    "tnfwc_g",
    "tnfwc_deflection",
    "line_segment_deflection",
    "sersic_bn",
    "sersic_elliptical",
    "sersic_total_flux",
    "gaussian_blur",
    "kernel_convolve",
    "bin_pixels",
]

_LN_HALF_PLUS_ONE = 1.0 + math.log(0.5)


def pixel_grid(
    size: int,
    pixel_scale: float,
    supersampling: int = 1,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor]:
    """Coordinates (arcsec) of the (sub-)pixel centres of a square image centred on (0, 0).

    Returns flattened ``x, y`` of length ``(size * supersampling) ** 2`` in row-major order.
    """
    n = size * supersampling
    step = pixel_scale / supersampling
    axis = (torch.arange(n, dtype=torch.float64) - (n - 1) / 2.0) * step
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return x.reshape(-1).to(dtype=dtype, device=device), y.reshape(-1).to(dtype=dtype, device=device)


def ellipticity_to_phi_q(e1: Tensor, e2: Tensor) -> tuple[Tensor, Tensor]:
    """Orientation angle (rad) and axis ratio (minor/major) of ellipticity components."""
    phi = torch.atan2(e2, e1) / 2
    c = torch.sqrt(e1**2 + e2**2).clamp(max=0.9999)
    return phi, (1 - c) / (1 + c)


def _rotate(x: Tensor, y: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    return x * cos + y * sin, -x * sin + y * cos


def sie_deflection(
    x: Tensor,
    y: Tensor,
    theta_E: Tensor,
    e1: Tensor,
    e2: Tensor,
    center_x: Tensor,
    center_y: Tensor,
    s_scale: float = 1e-10,
) -> tuple[Tensor, Tensor]:
    """Singular isothermal ellipsoid (lenstronomy ``SIE``: NIE with a tiny core ``s_scale``).

    Keeton & Kochanek (1998) closed form; ``theta_E`` is product-averaged.
    """
    phi, q = ellipticity_to_phi_q(e1, e2)
    cos, sin = torch.cos(phi), torch.sin(phi)
    b = theta_E * torch.sqrt(q)
    s = s_scale / torch.sqrt(q)
    # sqrt(1 - q^2) -> 0 for round lenses; atan(e u)/e and atanh(e u)/e stay exact when clamped.
    ecc = torch.sqrt((1 - q**2).clamp(min=0)).clamp(min=1e-6)
    if kernels.fusable((x, y), (center_x, center_y, cos, sin, s, q, ecc, b)):
        return kernels.sie_deflection(x, y, center_x, center_y, cos, sin, s, q**2, ecc, b / ecc)
    xr, yr = _rotate(x - center_x, y - center_y, cos, sin)
    psi = torch.sqrt(q**2 * (s**2 + xr**2) + yr**2)
    ax = b / ecc * torch.atan(ecc * xr / (psi + s))
    ay = b / ecc * torch.atanh(ecc * yr / (psi + q**2 * s))
    return ax * cos - ay * sin, ax * sin + ay * cos


def sis_deflection(x: Tensor, y: Tensor, theta_E: Tensor, center_x: Tensor, center_y: Tensor) -> tuple[Tensor, Tensor]:
    """Singular isothermal sphere: |alpha| = theta_E."""
    dx, dy = x - center_x, y - center_y
    r = torch.sqrt(dx**2 + dy**2).clamp(min=torch.finfo(dx.dtype).tiny)
    return theta_E * dx / r, theta_E * dy / r


def shear_deflection(x: Tensor, y: Tensor, gamma1: Tensor, gamma2: Tensor) -> tuple[Tensor, Tensor]:
    """External shear with zero deflection at the origin."""
    return gamma1 * x + gamma2 * y, gamma2 * x - gamma1 * y


def point_mass_deflection(
    x: Tensor, y: Tensor, theta_E: Tensor, center_x: Tensor, center_y: Tensor
) -> tuple[Tensor, Tensor]:
    """Point mass: alpha = theta_E^2 (x - x0) / |x - x0|^2 (in place on its own temporaries)."""
    dx, dy = x - center_x, y - center_y
    r2 = dx * dx
    r2 += dy * dy
    a = torch.div(theta_E**2, r2.clamp_(min=torch.finfo(dx.dtype).tiny), out=r2)
    return dx.mul_(a), dy.mul_(a)


def _nfw_F(X: Tensor) -> Tensor:
    """F(X) = arctanh(sqrt(1-X^2))/sqrt(1-X^2) for X<1, arctan(sqrt(X^2-1))/sqrt(X^2-1) for X>1.

    Evaluated in float64: the NFW radial functions cancel catastrophically in float32
    (ln(X/2) + F(X) -> X^2 ln(2/X) / 2 for small X).
    """
    X = X.to(torch.float64)
    s_lo = torch.sqrt((1 - X**2).clamp(min=1e-300))
    s_hi = torch.sqrt((X**2 - 1).clamp(min=1e-300))
    F = torch.where(X < 1, torch.atanh(s_lo.clamp(max=1 - 1e-16)) / s_lo, torch.atan(s_hi) / s_hi)
    d = X - 1  # both branches lose digits near X = 1: second-order series there
    return torch.where(d.abs() < 1e-5, 1 - 2 * d / 3 + 7 * d**2 / 15, F)


def nfw_deflection(
    x: Tensor, y: Tensor, Rs: Tensor, alpha_Rs: Tensor, center_x: Tensor, center_y: Tensor
) -> tuple[Tensor, Tensor]:
    """Navarro-Frenk-White halo; ``alpha_Rs`` is the deflection (arcsec) at projected ``Rs``."""
    Rs = Rs.clamp(min=1e-7)
    if kernels.fusable((x, y), (Rs, alpha_Rs, center_x, center_y)):
        denom, r_floor = Rs * _LN_HALF_PLUS_ONE, torch.full_like(Rs, 1e-8)
        return kernels.nfw_deflection(x, y, center_x, center_y, Rs, alpha_Rs, denom, r_floor, 1e-6)
    dx, dy = x - center_x, y - center_y
    R = torch.sqrt(dx**2 + dy**2).clamp(min=1e-8)
    X = (R / Rs).clamp(min=1e-6).to(torch.float64)
    g = (torch.log(X / 2) + _nfw_F(X)) / X**2
    a = alpha_Rs * g.to(dx.dtype) / (Rs * _LN_HALF_PLUS_ONE)
    return a * dx, a * dy


def tnfw_deflection(
    x: Tensor,
    y: Tensor,
    Rs: Tensor,
    alpha_Rs: Tensor,
    r_trunc: Tensor,
    center_x: Tensor,
    center_y: Tensor,
) -> tuple[Tensor, Tensor]:
    """Truncated NFW (Baltz, Marshall & Oguri 2009), lenstronomy's ``TNFW`` normalisation."""
    smoothing = 1e-3
    if kernels.fusable((x, y), (Rs, alpha_Rs, r_trunc, center_x, center_y)):
        tau, denom = (r_trunc / Rs).to(torch.float64), Rs * _LN_HALF_PLUS_ONE
        return kernels.tnfw_deflection(x, y, center_x, center_y, Rs, alpha_Rs, denom, smoothing * Rs, smoothing, tau)
    dx, dy = x - center_x, y - center_y
    R = torch.sqrt(dx**2 + dy**2)
    R = torch.maximum(R, smoothing * Rs)
    X = (R / Rs).clamp(min=smoothing).to(torch.float64)
    tau = (r_trunc / Rs).to(torch.float64)
    t2 = tau**2
    root = torch.sqrt(t2 + X**2)
    L = torch.log(X / (tau + root))
    g = (
        t2
        / (t2 + 1) ** 2
        * (
            (t2 + 1 + 2 * (X**2 - 1)) * _nfw_F(X)
            + tau * math.pi
            + (t2 - 1) * torch.log(tau)
            + root * (-math.pi + L * (t2 - 1) / tau)
        )
    )
    a = alpha_Rs * (g / X**2).to(dx.dtype) / (Rs * _LN_HALF_PLUS_ONE)
    return a * dx, a * dy


def _tnfwc_u1(x: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """u1(x, b, t) of lenstronomy's TNFWC projection integral (float64), both branches in one.

    With s = (t^2 - b^2) / (b^2 + x^2), u1 = h(s) / sqrt((t^2 + x^2)(b^2 + x^2)) where
    h(s) = asinh(sqrt s)/sqrt s for s > 0 (lenstronomy's arccosh branch), asin(sqrt -s)/sqrt -s
    for s < 0 (its arccos branch) and the series 1 - s/6 + 3 s^2/40 near s = 0 (t = b).
    """
    b2x2, t2x2 = b**2 + x**2, t**2 + x**2
    s = (t**2 - b**2) / b2x2
    root = torch.sqrt(s.abs().clamp(min=1e-300))
    if bool((t > b).all()):  # the sign of s is that of t - b: skip the arcsin branch when unused
        h = torch.asinh(root) / root
    else:
        h = torch.where(s > 0, torch.asinh(root) / root, torch.asin(root.clamp(max=1.0)) / root)
    h = torch.where(s.abs() < 1e-4, 1 - s / 6 + 3 * s**2 / 40, h)
    return h / torch.sqrt(t2x2 * b2x2)


def tnfwc_g(X: Tensor, beta: Tensor, tau: Tensor) -> Tensor:
    """Projected-mass function g(X; beta = r_core/Rs, tau = r_trunc/Rs) of the cored truncated
    pseudo-NFW profile (lenstronomy ``TNFWC``): M_2D(<X Rs) = 4 pi rho0 Rs^3 g(X). Float64."""
    b, t = _tnfwc_shape(beta, tau)
    return _tnfwc_g(X.to(torch.float64), b, t, *_tnfwc_at_zero(b, t))


def _tnfwc_shape(beta: Tensor, tau: Tensor) -> tuple[Tensor, Tensor]:
    """beta and tau in float64, tau moved off the removable singularity tau = 1."""
    b, t = beta.to(torch.float64), tau.to(torch.float64)
    return b, torch.where((t - 1).abs() < 1e-3, torch.ones_like(t) + 1e-3, t)


def _tnfwc_at_zero(b: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """u2(0, t) and u2(0, 1), the X-independent terms of g."""
    zero = torch.zeros_like(t)
    return _tnfwc_u2(zero, b, t), _tnfwc_u2(zero, b, torch.ones_like(t))


def _tnfwc_g(X: Tensor, b: Tensor, t: Tensor, zero_t: Tensor, zero_one: Tensor) -> Tensor:
    """tnfwc_g from float64 X, the shaped b and t, and their :func:`_tnfwc_at_zero` terms."""
    one = torch.ones_like(t)
    return t**2 / (t**2 - 1) * (-_tnfwc_u2(X, b, t) + zero_t + _tnfwc_u2(X, b, one) - zero_one)


def _tnfwc_u2(x: Tensor, b: Tensor, t: Tensor) -> Tensor:
    return (t**2 + x**2) * _tnfwc_u1(x, b, t)


def tnfwc_deflection(
    x: Tensor,
    y: Tensor,
    Rs: Tensor,
    alpha_Rs: Tensor,
    r_core: Tensor,
    r_trunc: Tensor,
    center_x: Tensor,
    center_y: Tensor,
) -> tuple[Tensor, Tensor]:
    """Cored, truncated pseudo-NFW halo (lenstronomy ``TNFWC``, Gilman et al.), closed form.

    Density rho0 Rs^3 / (sqrt(r^2 + r_core^2) (Rs^2 + r^2)) * r_trunc^2 / (r^2 + r_trunc^2);
    ``alpha_Rs`` is this profile's own deflection (arcsec) at projected ``Rs``. It is the profile
    of the self-interacting (SIDM) subhalos of Yang et al. (2023) as used by pyHalo.
    """
    Rs = Rs.clamp(min=1e-8)
    beta, tau = r_core / Rs, r_trunc / Rs
    if kernels.fusable((x, y), (Rs, alpha_Rs, beta, tau, center_x, center_y)):
        b, t = _tnfwc_shape(beta, tau)
        at_zero = _tnfwc_at_zero(b, t)
        g_one = _tnfwc_g(torch.ones_like(b), b, t, *at_zero)
        return kernels.tnfwc_deflection(x, y, center_x, center_y, Rs, alpha_Rs, 1e-8, b, t, *at_zero, g_one)
    dx, dy = x - center_x, y - center_y
    R = torch.sqrt(dx**2 + dy**2).clamp(min=1e-8)
    X = R / Rs
    ratio = tnfwc_g(X, beta, tau) / (tnfwc_g(torch.ones_like(beta), beta, tau) * X.to(torch.float64) ** 2)
    a = alpha_Rs * ratio.to(dx.dtype) / Rs
    return a * dx, a * dy


def line_segment_deflection(
    x: Tensor,
    y: Tensor,
    theta_E: Tensor,
    half_length: Tensor,
    angle: Tensor,
    center_x: Tensor,
    center_y: Tensor,
) -> tuple[Tensor, Tensor]:
    """Uniform line of mass (a cosmic-string-like axion vortex) in closed form.

    The mass, whose point-mass Einstein radius is ``theta_E``, is spread uniformly over a segment
    of half-length ``half_length`` (arcsec) through the centre at position angle ``angle`` (rad).
    Integrating the point-mass deflection along the line gives, with ``w`` the position in the
    segment frame, ``conj(alpha) = theta_E^2 / (2 L) e^{-i angle} [log(w + L) - log(w - L)]``.
    """
    cos, sin = torch.cos(angle), torch.sin(angle)
    if kernels.fusable((x, y), (center_x, center_y, cos, sin, half_length, theta_E)):
        lam = theta_E**2 / (2 * half_length)
        return kernels.line_segment_deflection(x, y, center_x, center_y, cos, sin, half_length, lam)
    u, v = _rotate(x - center_x, y - center_y, cos, sin)
    L = half_length
    tiny = torch.finfo(u.dtype).tiny
    log_ratio = 0.5 * torch.log(((u + L) ** 2 + v**2).clamp(min=tiny) / ((u - L) ** 2 + v**2).clamp(min=tiny))
    arg_diff = torch.atan2(v, u + L) - torch.atan2(v, u - L)
    lam = theta_E**2 / (2 * L)
    return lam * (log_ratio * cos + arg_diff * sin), lam * (log_ratio * sin - arg_diff * cos)


def sersic_bn(n: Tensor) -> Tensor:
    """lenstronomy's approximation b(n) = 1.9992 n - 0.3271 (floored at 1e-5)."""
    return (1.9992 * n - 0.3271).clamp(min=1e-5)


def sersic_elliptical(
    x: Tensor,
    y: Tensor,
    amp: Tensor,
    R_sersic: Tensor,
    n_sersic: Tensor,
    e1: Tensor,
    e2: Tensor,
    center_x: Tensor,
    center_y: Tensor,
) -> Tensor:
    """Elliptical Sersic surface brightness, lenstronomy ``SERSIC_ELLIPSE`` convention.

    ``amp`` is the surface brightness at ``R_sersic`` (the product-averaged half-light radius).
    """
    smoothing = 1e-4
    norm = torch.sqrt((1 - e1**2 - e2**2).abs().clamp(min=1e-6))
    params = (amp, R_sersic, n_sersic, e1, e2, center_x, center_y)
    if kernels.fusable((x, y), params):
        r_sersic, inv_n, neg_bn = R_sersic.clamp(min=smoothing), 1 / n_sersic, -sersic_bn(n_sersic)
        args = (center_x, center_y, e1, e2, norm, r_sersic, inv_n, neg_bn, amp)
        return kernels.sersic_elliptical(x, y, *args, smoothing)
    dx, dy = x - center_x, y - center_y
    xe = ((1 - e1) * dx - e2 * dy) / norm
    ye = (-e2 * dx + (1 + e1) * dy) / norm
    R = torch.sqrt(xe**2 + ye**2).clamp(min=smoothing)
    frac = R / R_sersic.clamp(min=smoothing)
    bn = sersic_bn(n_sersic)
    value = amp * torch.exp(-bn * (frac ** (1 / n_sersic) - 1))
    return torch.where(frac <= 1000.0, value, torch.zeros_like(value))


def sersic_total_flux(amp: Tensor, R_sersic: Tensor, n_sersic: Tensor) -> Tensor:
    """Total flux of a Sersic profile (lenstronomy ``total_flux``; independent of ellipticity)."""
    bn = sersic_bn(n_sersic)
    return (
        amp
        * R_sersic**2
        * 2
        * math.pi
        * n_sersic
        * torch.exp(bn)
        / bn ** (2 * n_sersic)
        * torch.exp(torch.lgamma(2 * n_sersic))
    )


def _gaussian_taps(sigma_px: float, truncation: float) -> list[float]:
    radius = int(truncation * sigma_px + 0.5)
    w = [math.exp(-0.5 * (k / sigma_px) ** 2) for k in range(-radius, radius + 1)]
    total = sum(w)
    return [v / total for v in w]


def gaussian_blur(images: Tensor, sigma_px: float, truncation: float = 4.0) -> Tensor:
    """Separable Gaussian blur of ``(..., H, W)`` images, edge pixels replicated.

    Equal to ``scipy.ndimage.gaussian_filter(mode='nearest', truncate=truncation)``, which is
    lenstronomy's Gaussian PSF convolution. Taps are summed in a fixed order, so each image's
    result does not depend on the batch it is rendered in.
    """
    if sigma_px <= 0:
        return images
    taps = _gaussian_taps(sigma_px, truncation)
    radius = len(taps) // 2
    lead = images.shape[:-2]
    h, w = images.shape[-2:]
    if kernels.enabled(images):
        return kernels.gaussian_blur(images.reshape(-1, h, w), taps).reshape(*lead, h, w)
    out = images.reshape(-1, 1, h, w)
    for dim in (-1, -2):
        pad = (radius, radius, 0, 0) if dim == -1 else (0, 0, radius, radius)
        padded = torch.nn.functional.pad(out, pad, mode="replicate")
        length = out.shape[dim]
        acc = torch.zeros_like(out)
        for k, weight in enumerate(taps):
            acc = acc + weight * padded.narrow(dim, k, length)
        out = acc
    return out.reshape(*lead, h, w)


def kernel_convolve(images: Tensor, kernel: Tensor) -> Tensor:
    """Convolve ``(..., H, W)`` images with a 2-D pixel kernel (odd size), zero padding.

    Same as ``scipy.signal.fftconvolve(image, kernel, mode='same')`` (lenstronomy's pixel PSF).
    """
    kh, kw = kernel.shape
    h, w = images.shape[-2:]
    fh, fw = h + kh - 1, w + kw - 1
    spec = torch.fft.rfft2(images, s=(fh, fw)) * torch.fft.rfft2(kernel.to(images.dtype), s=(fh, fw))
    full = torch.fft.irfft2(spec, s=(fh, fw))
    top, left = (kh - 1) // 2, (kw - 1) // 2
    return full[..., top : top + h, left : left + w]


def bin_pixels(images: Tensor, factor: int) -> Tensor:
    """Average ``factor x factor`` blocks of ``(..., H*factor, W*factor)`` images."""
    if factor == 1:
        return images
    *lead, h, w = images.shape
    blocks = images.reshape(*lead, h // factor, factor, w // factor, factor)
    return blocks.mean(dim=(-3, -1))
