"""Every deflection and light profile against lenstronomy (PHYSICS.md section 4)."""

import math

import numpy as np
import pytest
import torch
from lenstronomy.LensModel.lens_model import LensModel
from lenstronomy.LightModel.light_model import LightModel
from scipy import integrate

from deeplense.sim import functional as F

N_RANDOM = 25


def _coords(rng, n=400, extent=3.0):
    return rng.uniform(-extent, extent, n), rng.uniform(-extent, extent, n)


def _t(values, dtype):
    return torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=dtype)


def _ours(fn, x, y, params, dtype):
    ax, ay = fn(_t(x, dtype), _t(y, dtype), *[_t([[v]], dtype) for v in params])
    return ax[0].double().numpy(), ay[0].double().numpy()


CASES = {
    "SIE": (
        F.sie_deflection,
        ["theta_E", "e1", "e2", "center_x", "center_y"],
        lambda r: [
            r.uniform(0.5, 2),
            r.uniform(-0.4, 0.4),
            r.uniform(-0.4, 0.4),
            r.uniform(-0.3, 0.3),
            r.uniform(-0.3, 0.3),
        ],
    ),
    "SIS": (
        F.sis_deflection,
        ["theta_E", "center_x", "center_y"],
        lambda r: [r.uniform(0.5, 2), r.uniform(-0.3, 0.3), r.uniform(-0.3, 0.3)],
    ),
    "POINT_MASS": (
        F.point_mass_deflection,
        ["theta_E", "center_x", "center_y"],
        lambda r: [r.uniform(0.01, 1), r.uniform(-1, 1), r.uniform(-1, 1)],
    ),
    "SHEAR": (F.shear_deflection, ["gamma1", "gamma2"], lambda r: [r.uniform(-0.1, 0.1), r.uniform(-0.1, 0.1)]),
    "NFW": (
        F.nfw_deflection,
        ["Rs", "alpha_Rs", "center_x", "center_y"],
        lambda r: [r.uniform(0.05, 2), r.uniform(0.01, 0.5), r.uniform(-1, 1), r.uniform(-1, 1)],
    ),
    "TNFW": (
        F.tnfw_deflection,
        ["Rs", "alpha_Rs", "r_trunc", "center_x", "center_y"],
        lambda r: [r.uniform(0.05, 1), r.uniform(0.01, 0.5), r.uniform(0.2, 5), r.uniform(-1, 1), r.uniform(-1, 1)],
    ),
    "TNFWC": (
        F.tnfwc_deflection,
        ["Rs", "alpha_Rs", "r_core", "r_trunc", "center_x", "center_y"],
        lambda r: [
            r.uniform(0.05, 1),
            r.uniform(0.01, 0.5),
            r.uniform(1e-4, 1.2),
            r.uniform(1.5, 8),
            r.uniform(-1, 1),
            r.uniform(-1, 1),
        ],
    ),
}


@pytest.mark.parametrize("profile", sorted(CASES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_deflection_matches_lenstronomy(profile, dtype, rng):
    fn, names, draw = CASES[profile]
    model = LensModel([profile])
    for _ in range(N_RANDOM):
        params = draw(rng)
        x, y = _coords(rng)
        ref_x, ref_y = model.alpha(x, y, [dict(zip(names, params))])
        ax, ay = _ours(fn, x, y, params, dtype)
        err = max(np.abs(ax - ref_x).max(), np.abs(ay - ref_y).max())
        scale = max(np.abs(ref_x).max(), np.abs(ref_y).max())
        if dtype == torch.float64:
            assert err <= 1e-6, (profile, params, err)
        else:
            assert err <= 1e-4 * max(scale, params[0] if profile in ("SIE", "SIS", "POINT_MASS") else scale), (
                profile,
                err,
            )


def test_sie_round_limit_is_finite_and_matches_sis(rng):
    x, y = _coords(rng)
    ax, ay = _ours(F.sie_deflection, x, y, [1.3, 0.0, 0.0, 0.0, 0.0], torch.float32)
    bx, by = _ours(F.sis_deflection, x, y, [1.3, 0.0, 0.0], torch.float32)
    assert np.abs(ax - bx).max() < 1e-5 and np.abs(ay - by).max() < 1e-5


def test_nfw_near_scale_radius_uses_accurate_series(rng):
    # |X - 1| < 1e-5 takes the series branch: compare with lenstronomy right there.
    Rs, alpha = 0.5, 0.2
    r = Rs * (1 + rng.uniform(-3e-5, 3e-5, 200))
    phi = rng.uniform(0, 2 * math.pi, 200)
    x, y = r * np.cos(phi), r * np.sin(phi)
    ref_x, ref_y = LensModel(["NFW"]).alpha(x, y, [dict(Rs=Rs, alpha_Rs=alpha, center_x=0, center_y=0)])
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 2e-6)):
        ax, ay = _ours(F.nfw_deflection, x, y, [Rs, alpha, 0.0, 0.0], dtype)
        assert np.abs(ax - ref_x).max() < tol and np.abs(ay - ref_y).max() < tol


def _line_element(t, comp, px, py, theta, half, angle, cx, cy):
    """Deflection at (px, py) of the point masses at position t along the line (density theta^2/2L)."""
    kw = dict(theta_E=theta / math.sqrt(2 * half), center_x=cx + t * math.cos(angle), center_y=cy + t * math.sin(angle))
    return LensModel(["POINT_MASS"]).alpha(px, py, [kw])[comp]


def test_tnfwc_is_continuous_where_core_equals_truncation(rng):
    """lenstronomy shifts r_trunc by 1e-3 at r_core = r_trunc; our series is the exact limit."""
    x, y = _coords(rng)
    args = [_t([[v]], torch.float64) for v in (0.4, 0.1)]
    ax_eq, _ = F.tnfwc_deflection(
        _t(x, torch.float64), _t(y, torch.float64), *args, *[_t([[v]], torch.float64) for v in (2.0, 2.0, 0, 0)]
    )
    ax_near, _ = F.tnfwc_deflection(
        _t(x, torch.float64), _t(y, torch.float64), *args, *[_t([[v]], torch.float64) for v in (2.0, 2.0 + 1e-7, 0, 0)]
    )
    np.testing.assert_allclose(ax_eq.numpy(), ax_near.numpy(), rtol=1e-6, atol=1e-12)


def test_line_segment_equals_integrated_point_masses(rng):
    """The closed form against lenstronomy's point mass integrated along the line (quadrature)."""
    for _ in range(3):
        theta, half, angle = rng.uniform(0.05, 0.3), rng.uniform(0.05, 1.5), rng.uniform(0, math.pi)
        cx, cy = rng.uniform(-0.3, 0.3, 2)
        x, y = _coords(rng, n=8, extent=2.0)
        ax, ay = _ours(F.line_segment_deflection, x, y, [theta, half, angle, cx, cy], torch.float64)
        for k in range(len(x)):
            for comp, ours in ((0, ax[k]), (1, ay[k])):
                args = (comp, x[k], y[k], theta, half, angle, cx, cy)
                ref = integrate.quad(_line_element, -half, half, args=args, epsabs=1e-12, limit=200)[0]
                assert abs(ours - ref) < 1e-6


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sersic_matches_lenstronomy(dtype, rng):
    light = LightModel(["SERSIC_ELLIPSE"])
    names = ["amp", "R_sersic", "n_sersic", "e1", "e2", "center_x", "center_y"]
    for _ in range(N_RANDOM):
        params = [
            rng.uniform(1, 50),
            rng.uniform(0.1, 1),
            rng.uniform(0.5, 4),
            *rng.uniform(-0.3, 0.3, 2),
            *rng.uniform(-0.5, 0.5, 2),
        ]
        x, y = _coords(rng)
        ref = light.surface_brightness(x, y, [dict(zip(names, params))])
        ours = F.sersic_elliptical(_t(x, dtype), _t(y, dtype), *[_t([[v]], dtype) for v in params])[0].double().numpy()
        tol = 1e-9 if dtype == torch.float64 else 1e-5
        assert np.abs(ours - ref).max() <= tol * ref.max()
        total = light.total_flux([dict(zip(names, params))])[0]
        ours_total = F.sersic_total_flux(_t([params[0]], dtype), _t([params[1]], dtype), _t([params[2]], dtype))
        assert float(ours_total) == pytest.approx(total, rel=1e-5)


def test_gaussian_blur_equals_scipy_gaussian_filter(rng):
    from scipy import ndimage

    image = rng.uniform(0, 1, (3, 40, 40))
    for sigma, trunc in ((0.74, 4.0), (1.58, 5.0), (0.3, 3.0)):
        ours = F.gaussian_blur(torch.as_tensor(image), sigma, trunc).numpy()
        ref = np.stack([ndimage.gaussian_filter(im, sigma, mode="nearest", truncate=trunc) for im in image])
        assert np.abs(ours - ref).max() < 1e-12


def test_kernel_convolve_equals_fftconvolve(rng):
    from scipy import signal

    image, kernel = rng.uniform(0, 1, (2, 30, 30)), rng.uniform(0, 1, (7, 5))
    ours = F.kernel_convolve(torch.as_tensor(image), torch.as_tensor(kernel)).numpy()
    ref = np.stack([signal.fftconvolve(im, kernel, mode="same") for im in image])
    assert np.abs(ours - ref).max() < 1e-10


def test_pixel_grid_matches_lenstronomy_convention():
    import lenstronomy.Util.simulation_util as sim_util
    from lenstronomy.Data.imaging_data import ImageData

    data = ImageData(**sim_util.data_configure_simple(12, 0.05, 100, 0.01))
    ref_x, ref_y = data.pixel_coordinates
    x, y = F.pixel_grid(12, 0.05, dtype=torch.float64)
    assert np.allclose(x.numpy().reshape(12, 12), ref_x, atol=1e-12)
    assert np.allclose(y.numpy().reshape(12, 12), ref_y, atol=1e-12)
