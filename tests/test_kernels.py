"""The compiled CPU kernels against their torch twins, and noise scheme 2 against its definition."""

import copy
import math

import numpy as np
import pytest
import torch

from deeplense.sim import Simulator, kernels, load_preset
from deeplense.sim import functional as F
from deeplense.sim import rng as R
from deeplense.sim.kernels import LOG_FACTORIAL
from deeplense.sim.writer import resolved_sim

MASK = (1 << 64) - 1


def _splitmix(key: int, counter: int) -> int:
    """SplitMix64 of ``key`` at 1-based ``counter``, in Python integers (the definition)."""
    z = (key + counter * 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def _halves(bits: int) -> tuple[float, float]:
    return ((bits >> 32) + 0.5) * 2.0**-32, ((bits & 0xFFFFFFFF) + 0.5) * 2.0**-32


def _without_kernels(monkeypatch, fn, *args, **kwargs):
    with monkeypatch.context() as m:
        m.setenv("DEEPLENSE_KERNELS", "0")
        return fn(*args, **kwargs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("label,closed_form", [(1, False), (2, False), (2, True)])
def test_kernel_render_is_bit_identical_to_torch(label, closed_form, dtype, monkeypatch):
    """Point-mass sums and the Gaussian PSF: same arithmetic in the same order, so the images
    written before the kernels existed are still regenerated exactly."""
    config = load_preset("model_i")
    config["instrument"]["size"] = 37  # odd, and not a multiple of any vector width
    config["instrument"]["pixel_scale"] = 0.2
    config["classes"]["axion"]["options"]["closed_form"] = closed_form
    sim = Simulator(config, dtype=dtype)
    samples = [sim.sample(100 + i, label) for i in range(5)]
    with torch.no_grad():
        fast = sim.render(samples, noise=False)
        slow = _without_kernels(monkeypatch, sim.render, samples, noise=False)
    assert fast.abs().max() > 0
    assert torch.equal(fast, slow)


@pytest.mark.parametrize("profile", ["pseudo_tnfw", "tnfw", "nfw"])
def test_kernel_render_of_physical_populations_is_bit_identical_to_torch(profile, monkeypatch):
    """cdm_wdm_sidm scenes (about 100 NFW-like subhalos an image; cdm with each subhalo profile,
    and the wdm and sidm classes with their own): data sets written before these kernels
    existed regenerate exactly."""
    config = load_preset("cdm_wdm_sidm")
    config["instrument"]["size"] = 21
    config["instrument"]["pixel_scale"] = 0.23
    config["classes"]["cdm"]["options"]["profile"] = profile
    sim = Simulator(config)
    labels = [0, 0, 1, 2] if profile == "pseudo_tnfw" else [0, 0]
    samples = [sim.sample(7 + i, label) for i, label in enumerate(labels)]
    assert all(len(s.subhalos.tables) for s in samples)
    with torch.no_grad():
        fast = sim.deflection(samples)
        slow = _without_kernels(monkeypatch, sim.deflection, samples)
    assert all(torch.equal(a, b) for a, b in zip(fast, slow))


@pytest.mark.parametrize("shape,sigma", [((3, 20, 31), 0.74), ((2, 5, 4), 1.6), ((1, 2, 9), 0.4)])
def test_kernel_blur_is_bit_identical_to_torch(shape, sigma, monkeypatch):
    """Including images smaller than the kernel, where edge replication reaches across."""
    images = torch.rand(shape, generator=torch.Generator().manual_seed(3))
    fast = F.gaussian_blur(images, sigma, 4.0)
    slow = _without_kernels(monkeypatch, F.gaussian_blur, images, sigma, 4.0)
    assert torch.equal(fast, slow)
    assert not torch.equal(fast, images)


def _profile_arguments(batch: int, dtype: torch.dtype) -> dict[str, tuple]:
    g = torch.Generator().manual_seed(5)

    def col(lo, hi):
        return torch.rand(batch, 1, generator=g, dtype=dtype) * (hi - lo) + lo

    return {
        "sie_deflection": (col(0.8, 1.5), col(-0.3, 0.3), col(-0.3, 0.3), col(-0.1, 0.1), col(-0.1, 0.1)),
        "sersic_elliptical": (
            col(5, 20),
            col(0.1, 0.4),
            col(0.6, 4),
            col(-0.2, 0.2),
            col(-0.2, 0.2),
            *[col(-0.3, 0.3)] * 2,
        ),
        "line_segment_deflection": (col(0.01, 0.1), col(0.2, 1.0), col(0, 3.1), col(-1, 1), col(-1, 1)),
        # Rs up to 0.8 arcsec: pixels inside and outside the scale radius (both branches of F)
        "nfw_deflection": (col(0.05, 0.8), col(0.001, 0.05), col(-1, 1), col(-1, 1)),
        "tnfw_deflection": (col(0.05, 0.8), col(0.001, 0.05), col(0.1, 4), col(-1, 1), col(-1, 1)),
        # cores up to 3 Rs and truncation from 0.5 Rs: both branches of u1 (s > 0 and s < 0)
        "tnfwc_deflection": (col(0.05, 0.8), col(0.001, 0.05), col(0, 2), col(0.4, 4), col(-1, 1), col(-1, 1)),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "name",
    [
        "sie_deflection",
        "sersic_elliptical",
        "line_segment_deflection",
        "nfw_deflection",
        "tnfw_deflection",
        "tnfwc_deflection",
    ],
)
def test_fused_profiles_are_bit_identical_to_torch(name, dtype, monkeypatch):
    """On the pixel grid ``(N,)`` and on per-image coordinates ``(B, N)`` (lensed positions)."""
    x, y = F.pixel_grid(23, 0.17, dtype=dtype)
    params = _profile_arguments(4, dtype)[name]
    shifted = (x + 0.05 * torch.arange(4, dtype=dtype)[:, None], y - 0.03 * torch.arange(4, dtype=dtype)[:, None])
    for coords in ((x, y), shifted):
        fast = getattr(F, name)(*coords, *params)
        slow = _without_kernels(monkeypatch, getattr(F, name), *coords, *params)
        for a, b in zip(fast if isinstance(fast, tuple) else (fast,), slow if isinstance(slow, tuple) else (slow,)):
            assert a.shape == (4, x.numel()) and torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_nfw_family_is_bit_identical_at_its_special_points(dtype, monkeypatch):
    """Pixels at the centre (radius floors), at X = 1 +- 1e-6 (F's series), X = 1e-6, 1e-4 and
    30; truncation at tau = 1 +- 1e-4 (moved off the singularity); TNFWC cores of 1e-7 Rs (the
    coreless floor), near tau (u1's series for small s) and equal to tau (s = 0, and t = 1 below
    the core: the arcsin branch). The NFW deflection at X = 1 is alpha_Rs by definition."""
    Rs = torch.tensor([[0.3], [0.5], [0.2]], dtype=dtype)
    ratios = torch.tensor([0.0, 1e-6, 1e-4, 1 - 1e-6, 1.0, 1 + 1e-6, 0.5, 2.0, 30.0], dtype=dtype)
    angle = torch.linspace(0.1, 6.0, len(ratios), dtype=dtype)
    cx, cy = torch.tensor([[0.1], [-0.2], [0.0]], dtype=dtype), torch.tensor([[0.0], [0.3], [-0.1]], dtype=dtype)
    x, y = cx + Rs * ratios * torch.cos(angle), cy + Rs * ratios * torch.sin(angle)
    alpha = torch.full_like(Rs, 0.02)
    tau = torch.tensor([[1 + 1e-4], [1 - 1e-4], [5.0]], dtype=dtype)
    cases = {
        "nfw_deflection": (Rs, alpha, cx, cy),
        "tnfw_deflection": (Rs, alpha, tau * Rs, cx, cy),
        "tnfwc_deflection": (
            Rs,
            alpha,
            torch.tensor([[1e-7], [1.0 - 1e-4], [5.0]], dtype=dtype) * Rs,
            tau * Rs,
            cx,
            cy,
        ),
    }
    for name, params in cases.items():
        fast = getattr(F, name)(x, y, *params)
        slow = _without_kernels(monkeypatch, getattr(F, name), x, y, *params)
        for a, b in zip(fast, slow):
            assert torch.isfinite(a).all() and torch.equal(a, b), name
    ax, ay = F.nfw_deflection(x, y, *cases["nfw_deflection"])
    radial = ax * torch.cos(angle) + ay * torch.sin(angle)  # pixel 4 sits at X = 1
    assert torch.allclose(radial[:, 4], alpha[:, 0], rtol=1e-5)


def test_profiles_under_autograd_take_the_torch_path():
    x, y = F.pixel_grid(9, 0.3, dtype=torch.float64)
    params = [p.clone().requires_grad_() for p in _profile_arguments(2, torch.float64)["sie_deflection"]]
    ax, ay = F.sie_deflection(x, y, *params)
    (ax.sum() + ay.sum()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)


def test_scheme2_normals_follow_the_polar_method_definition():
    """Pair j of an image with m pairs takes draw t m + j at attempt t (1-based counters)."""
    key, n = 0x0123456789ABCDEF, 11
    m = (n + 1) // 2
    expected = []
    for j in range(m):
        for attempt in range(64):
            high, low = _halves(_splitmix(key, attempt * m + j + 1))
            u, v = 2.0 * high - 1.0, 2.0 * low - 1.0
            s = u * u + v * v
            if s < 1.0:
                factor = math.sqrt(-2.0 * math.log(s) / s)
                expected += [u * factor, v * factor]
                break
    z = R.normal(torch.tensor([key]), n, dtype=torch.float64, scheme=2)[0].numpy()
    np.testing.assert_allclose(z, expected[:n], rtol=1e-14, atol=1e-15)


def _poisson_reference(key: int, p: int, n: int, mean: float) -> float:
    """Scheme-2 Poisson variate of pixel p (of n) with the given mean, in plain Python."""
    if mean == 0:
        return 0.0
    if mean < 10:
        u = _halves(_splitmix(key, p + 1))[0]
        prob = math.exp(-mean)
        cdf, k = prob, 0
        while u > cdf:
            k += 1
            prob *= mean * (1.0 / k)
            cdf += prob
        return float(k)
    b = math.sqrt(mean) * 2.53 + 0.931
    a = 0.02483 * b - 0.059
    for attempt in range(64):
        high, V = _halves(_splitmix(key, attempt * n + p + 1))
        U = high - 0.5
        us = 0.5 - abs(U)
        k = math.floor((2 * a / us + b) * U + mean + 0.43)
        if us >= 0.07 and V <= -3.6224 / (b - 2) + 0.9277:
            return float(k)
        if k < 0 or (us < 0.013 and V > us):
            continue
        lhs = math.log(V) + math.log(1.1239 + 1.1328 / (b - 3.4)) - math.log(a / (us * us) + b)
        if lhs <= -mean + k * math.log(mean) - (LOG_FACTORIAL[k] if k < len(LOG_FACTORIAL) else math.lgamma(k + 1)):
            return float(k)
    raise AssertionError("no acceptance in 64 attempts")


def test_scheme2_poisson_follows_its_definition():
    key = 987654321987
    means = [0.0, 0.3, 2.5, 7.0, 9.99, 10.0, 17.5, 60.0, 1234.5, 5.0e4] * 3
    got = R.poisson(torch.tensor([key]), torch.tensor([means], dtype=torch.float64), scheme=2)[0].tolist()
    assert got == [_poisson_reference(key, p, len(means), mean) for p, mean in enumerate(means)]


def test_scheme2_kernels_agree_with_the_torch_twin(monkeypatch):
    """The twin is the GPU path: same draws, float rounding apart."""
    keys = torch.tensor([5, -17, 2**62 + 3], dtype=torch.int64)
    z = R.normal(keys, 4001, dtype=torch.float64, scheme=2)
    z_twin = _without_kernels(monkeypatch, R.normal, keys, 4001, dtype=torch.float64, scheme=2)
    torch.testing.assert_close(z, z_twin, rtol=1e-13, atol=1e-13)
    lam = torch.rand(3, 4000, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 40
    lam[:, ::7] = 0.0
    counts = R.poisson(keys, lam, scheme=2)
    assert torch.equal(counts, _without_kernels(monkeypatch, R.poisson, keys, lam, scheme=2))


@pytest.mark.parametrize("bad", [float("nan"), -1.0, float("inf")])
def test_scheme2_poisson_rejects_bad_means(bad):
    lam = torch.tensor([[1.0, bad, 3.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="finite and >= 0"):
        R.poisson(torch.tensor([1]), lam, scheme=2)


def test_data_sets_without_a_recorded_generator_regenerate_with_scheme_1():
    config = load_preset("model_i")
    config["instrument"]["size"] = 16
    config["instrument"]["pixel_scale"] = 0.3
    new = Simulator(config).to_yaml()
    assert new["instrument"]["bands"][0]["noise"]["options"]["generator"] == 2
    legacy = copy.deepcopy(new)
    del legacy["instrument"]["bands"][0]["noise"]["options"]["generator"]
    assert resolved_sim(legacy)["instrument"]["bands"][0]["noise"]["options"]["generator"] == 1
    assert resolved_sim(new)["instrument"]["bands"][0]["noise"]["options"]["generator"] == 2
    old_sim, new_sim = Simulator(resolved_sim(legacy)), Simulator(resolved_sim(new))
    scheme_1 = copy.deepcopy(config)
    scheme_1["instrument"]["bands"][0]["noise"]["options"]["generator"] = 1
    reference = Simulator(scheme_1)
    old, _ = old_sim.simulate([4, 5], [1, 2])
    assert np.array_equal(old, reference.simulate([4, 5], [1, 2])[0])
    assert not np.array_equal(old, new_sim.simulate([4, 5], [1, 2])[0])


def test_unknown_generator_is_a_config_error_naming_the_key():
    from deeplense.core.config import ConfigError

    config = load_preset("model_i")
    config["instrument"]["bands"][0]["noise"]["options"]["generator"] = 3
    with pytest.raises(ConfigError, match=r"noise\.options\.generator"):
        Simulator(config)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("double_poisson", [True, False])
def test_fused_counts_noise_equals_its_composition(dtype, double_poisson):
    """The one-pass deeplense_counts kernel gives what its pieces (scheme-2 normals, the torch
    arithmetic, scheme-2 Poisson) give one after the other."""
    g = torch.Generator().manual_seed(0)
    model = torch.rand(3, 2001, generator=g, dtype=dtype) ** 4 * 3
    t = torch.rand(3, 1, generator=g, dtype=dtype) * 2000 + 1000
    rms = torch.full((3, 1), 0.01, dtype=dtype)
    keys = (torch.tensor([3, 4, 5]), torch.tensor([-8, 9, 2**40]))
    fused = kernels.deeplense_counts(model, t, rms, double_poisson, keys)
    variance = rms**2 + model.abs() / t if double_poisson else rms**2
    z = R.normal(keys[0], 2001, dtype=dtype, scheme=2)
    lam = (t * (model + z * torch.sqrt(variance))).clamp(min=0)
    assert torch.equal(fused, R.poisson(keys[1], lam, scheme=2).to(dtype))
    with pytest.raises(ValueError, match="finite"):
        kernels.deeplense_counts(torch.full_like(model, float("nan")), t, rms, double_poisson, keys)
