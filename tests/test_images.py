"""Whole images, noise and populations against lenstronomy and the declared models."""

import math

import numpy as np
import pytest
import torch
from lenstronomy.Data.imaging_data import ImageData
from lenstronomy.Data.psf import PSF
from lenstronomy.ImSim.image_model import ImageModel
from lenstronomy.LensModel.lens_model import LensModel
from lenstronomy.LightModel.light_model import LightModel
from lenstronomy.Util import simulation_util
from scipy import stats

from deeplense.sim import Simulator, load_preset
from deeplense.sim import rng as R
from deeplense.sim.substructure import power_law_masses


def _lenstronomy_image(sim, sample, *, numerics=None):
    """Noiseless image of one sample rendered by lenstronomy's ImageModel."""
    inst, band = sim.instrument, sim.instrument.bands[0]
    data = ImageData(**simulation_util.data_configure_simple(inst.size, inst.pixel_scale, 1.0, 1.0))
    psf = PSF(psf_type="GAUSSIAN", fwhm=band.psf.fwhm, truncation=band.psf.truncation)
    kinds, kwargs = [], []
    for lens, p in zip(sim.lenses, sample.params):
        if lens.kind == "sie":
            kinds.append("SIE")
            kwargs.append({k: p[k] for k in ("theta_E", "e1", "e2", "center_x", "center_y")})
        elif lens.kind == "shear":
            kinds.append("SHEAR")
            kwargs.append({"gamma1": p["gamma1"], "gamma2": p["gamma2"]})
    for x, y, theta in sample.subhalos.of("point_mass"):
        kinds.append("POINT_MASS")
        kwargs.append(dict(theta_E=theta, center_x=x, center_y=y))
    src = dict(sample.params[len(sim.lenses)])
    if "magnitude" in src:
        raise NotImplementedError
    src_kw = {k: src[k] for k in ("amp", "R_sersic", "n_sersic", "e1", "e2", "center_x", "center_y")}
    model = ImageModel(
        data,
        psf,
        lens_model_class=LensModel(kinds),
        source_model_class=LightModel(["SERSIC_ELLIPSE"]),
        kwargs_numerics=numerics or {"supersampling_factor": inst.supersampling},
    )
    return model.image(kwargs_lens=kwargs, kwargs_source=[src_kw])


@pytest.mark.parametrize("label", [0, 1, 2])
@pytest.mark.parametrize("supersampling", [1, 2])
def test_noiseless_image_matches_lenstronomy(label, supersampling):
    config = load_preset("model_i")
    config["instrument"]["size"] = 48
    config["instrument"]["supersampling"] = supersampling
    sim = Simulator(config, dtype=torch.float64)
    for seed in range(3):
        sample = sim.sample(1000 + seed, label)
        ours = sim.render([sample], noise=False)[0, 0].numpy()
        ref = _lenstronomy_image(sim, sample)
        interior = (slice(6, -6), slice(6, -6))
        assert np.abs(ours - ref)[interior].max() <= 1e-5 * ref.max()


def test_float32_image_close_to_float64():
    config = load_preset("model_i")
    config["instrument"]["size"] = 64
    s64, s32 = Simulator(config, dtype=torch.float64), Simulator(config)
    samples = [s64.sample(7 + i, i % 3) for i in range(6)]
    a = s64.render(samples, noise=False).numpy()
    b = s32.render(samples, noise=False).double().numpy()
    assert np.abs(a - b).max() <= 1e-4 * a.max()


@pytest.mark.parametrize("chunk_bytes", [None, 40 * 40 * 4 * 2])
@pytest.mark.parametrize("preset", ["model_i", "cdm_wdm_sidm"])
def test_batch_composition_does_not_change_an_image(preset, chunk_bytes, monkeypatch):
    """Also with catalogues of different lengths (cdm_wdm_sidm: NFW-like subhalos, WDM thinning),
    and when the subhalos are accumulated two images at a time."""
    if chunk_bytes is not None:
        monkeypatch.setattr("deeplense.sim.simulator._SUBHALO_CHUNK_BYTES", chunk_bytes)
    config = load_preset(preset)
    config["instrument"]["size"] = 40
    sim = Simulator(config)
    seeds, labels = [11, 12, 13, 14, 15, 16], [0, 1, 2, 1, 2, 0]
    together, _ = sim.simulate(seeds, labels)
    for i in (0, 2, 4):
        alone, _ = sim.simulate([seeds[i]], [labels[i]])
        assert np.array_equal(alone[0], together[i])


def test_counter_rng_is_splitmix64():
    mask = (1 << 64) - 1

    def reference(key, i):
        z = (key + (i + 1) * 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    key = 0x123456789ABCDEF
    bits = R._bits(torch.tensor([key]), 8)[0].tolist()
    assert [b & mask for b in bits] == [reference(key, i) for i in range(8)]


# Noise scheme 2 runs in the compiled kernels on CPU; "2-torch" is its torch twin (the GPU path).
SCHEMES = [1, 2, "2-torch"]


def _scheme(scheme, monkeypatch) -> int:
    if scheme == "2-torch":
        monkeypatch.setenv("DEEPLENSE_KERNELS", "0")
        return 2
    return scheme


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("lam", [0.2, 3.0, 9.5, 12.0, 150.0, 2.0e4])
def test_poisson_sampler_matches_the_poisson_law(lam, scheme, monkeypatch):
    keys = torch.arange(200, dtype=torch.int64) * 104729 + 17
    draws = R.poisson(keys, torch.full((200, 500), lam), scheme=_scheme(scheme, monkeypatch)).numpy().ravel()
    assert np.array_equal(draws, np.round(draws)) and draws.min() >= 0
    lo, hi = stats.poisson.ppf([1e-4, 1 - 1e-4], lam)
    edges = np.unique(np.concatenate([[lo], np.quantile(draws, np.linspace(0, 1, 12))[1:-1].round(), [hi + 1]]))
    observed = np.histogram(np.clip(draws, lo, hi), bins=edges)[0]
    probs = np.diff(stats.poisson.cdf(edges - 1, lam))
    probs[0] += stats.poisson.cdf(lo - 1, lam)
    probs[-1] += stats.poisson.sf(hi, lam)
    chi2 = ((observed - probs * draws.size) ** 2 / (probs * draws.size)).sum()
    assert stats.chi2.sf(chi2, len(observed) - 1) > 1e-3


@pytest.mark.parametrize("scheme", SCHEMES)
def test_poisson_variate_depends_only_on_key_column_and_mean(scheme, monkeypatch):
    """Each regime runs on its own elements only (and the inversion drops finished ones as it goes):
    a mixed array must give every element the variate it gets in an array of its own mean."""
    scheme = _scheme(scheme, monkeypatch)
    keys = torch.arange(30, dtype=torch.int64) * 7919 + 3
    regime = torch.rand(30, 400, generator=torch.Generator().manual_seed(0))
    lam = torch.where(regime < 0.3, 0.0, torch.where(regime < 0.7, 6.5, 48.0)).double()
    mixed = R.poisson(keys, lam, scheme=scheme)
    for value in (0.0, 6.5, 48.0):
        alone = R.poisson(keys, torch.full_like(lam, value), scheme=scheme)
        assert torch.equal(mixed[lam == value], alone[lam == value])


@pytest.mark.parametrize("scheme", SCHEMES)
def test_normal_sampler_is_standard_normal(scheme, monkeypatch):
    keys = torch.arange(50, dtype=torch.int64) + 99
    z = R.normal(keys, 2001, dtype=torch.float64, scheme=_scheme(scheme, monkeypatch)).numpy()
    assert stats.kstest(z.ravel(), "norm").pvalue > 1e-3
    # the two members of a pair (scheme 2) are independent, as are neighbouring pixels in scheme 1
    assert abs(stats.pearsonr(z[:, 0:-1:2].ravel(), z[:, 1::2].ravel())[0]) < 4 / math.sqrt(z.size / 2)


@pytest.mark.parametrize("generator", [1, 2])
def test_deeplense_counts_noise_statistics(generator):
    """Poisson(t (m + n_phot + n_bkg)) has mean t m and variance 2 t m + (t sigma_bkg)^2."""
    config = load_preset("model_i")
    config["instrument"]["size"] = 24
    config["instrument"]["pixel_scale"] = 0.15
    config["instrument"]["bands"][0]["noise"]["params"]["exposure_time"] = 2000.0
    config["instrument"]["bands"][0]["noise"]["options"]["generator"] = generator
    sim = Simulator(config, dtype=torch.float64)
    samples = [sim.sample(s, 0) for s in range(400)]
    model = sim.render(samples, noise=False).numpy()
    noisy = sim.render(samples).numpy()
    t, sigma = 2000.0, 0.01
    # compare only bright pixels, where the clip at zero is irrelevant
    bright = model > 0.1
    resid = (noisy - t * model)[bright]
    expected_var = t * model[bright] + t**2 * (model[bright] / t + sigma**2)  # Poisson + double photon + bkg
    z = resid / np.sqrt(expected_var)
    assert z.size > 5000
    assert abs(z.mean()) < 5 / math.sqrt(z.size)
    assert z.var() == pytest.approx(1.0, abs=5 * math.sqrt(2 / z.size))


def test_noise_schemes_give_the_same_pixel_distribution():
    """The same scenes with scheme-1 and scheme-2 noise: the counts are draws of one law."""
    config = load_preset("model_i")
    config["instrument"]["size"] = 32
    config["instrument"]["pixel_scale"] = 0.2
    images = []
    for generator in (1, 2):
        config["instrument"]["bands"][0]["noise"]["options"]["generator"] = generator
        seeds = list(range(500, 650))
        images.append(Simulator(config).simulate(seeds, [s % 3 for s in seeds])[0].ravel())
    assert not np.array_equal(*images)
    assert abs((images[0] == 0).mean() - (images[1] == 0).mean()) < 0.01
    assert stats.ks_2samp(*images).pvalue > 1e-3


@pytest.mark.parametrize("generator", [1, 2])
def test_ccd_noise_statistics_match_lenstronomy_formula(generator):
    from lenstronomy.SimulationAPI.observation_api import SingleBand

    from deeplense.sim.instruments import observing_preset

    config = load_preset("model_iii")
    config["instrument"]["size"] = 40
    config["instrument"]["bands"][0]["noise"].setdefault("options", {})["generator"] = generator
    sim = Simulator(config, dtype=torch.float64)
    samples = [sim.sample(s, 0) for s in range(300)]
    model = sim.render(samples, noise=False).numpy()
    noisy = sim.render(samples).numpy()
    band = SingleBand(**observing_preset("hst_wfc3_f160w"))
    expected_sigma = band.estimate_noise(model)
    z = (noisy - model) / expected_sigma
    assert abs(z.mean()) < 5 / math.sqrt(z.size)
    assert z.var() == pytest.approx(1.0, abs=5 * math.sqrt(2 / z.size))


def test_released_files_switch_gives_doubled_noise_free_model():
    config = load_preset("model_ii")
    config["instrument"]["size"] = 16
    config["instrument"]["bands"][0]["noise"]["options"]["released_files"] = True
    sim = Simulator(config, dtype=torch.float64)
    samples = [sim.sample(s, 1) for s in range(3)]
    assert np.allclose(sim.render(samples).numpy(), 2 * sim.render(samples, noise=False).numpy(), rtol=0, atol=0)


def test_power_law_mass_function_slope(rng):
    masses = power_law_masses(rng, 200_000, -0.9, 1e6, 1e10)
    assert masses.min() >= 1e6 and masses.max() <= 1e10
    # maximum-likelihood slope of a truncated power law, by a 1-D fit
    from scipy import optimize

    logm = np.log(masses)

    def nll(a):
        k = a + 1
        norm = (1e10**k - 1e6**k) / k
        return -(a * logm.sum() - masses.size * np.log(norm))

    fit = optimize.minimize_scalar(nll, bounds=(-1.5, -0.3), method="bounded").x
    assert fit == pytest.approx(-0.9, abs=0.01)


def test_deeplense_cdm_and_vortex_populations():
    sim = Simulator(load_preset("model_i"))
    theta_main = sim.sample(0, 0).params[0]["theta_E"]
    assert theta_main == pytest.approx(1.2814906, rel=2e-6)  # PHYSICS.md section 1
    radii = []
    for s in range(4000):
        cdm = sim.sample(s, 1).subhalos.of("point_mass")
        assert cdm.shape == (25, 3)
        radii.append(np.hypot(cdm[:, 0], cdm[:, 1]))
    radii = np.concatenate(radii)
    assert stats.kstest(radii, stats.uniform(0.25, 1.75).cdf).pvalue > 1e-3  # uniform in r, not area
    vortex = sim.sample(5, 2)
    points = vortex.subhalos.of("point_mass")
    assert points.shape == (100, 3)
    assert points[0, 2] == pytest.approx(0.0221961, rel=2e-5)
    half = 0.03 * 10 ** (-22 - vortex.population["log10_m_a"])
    assert np.hypot(points[0, 0], points[0, 1]) == pytest.approx(half)
    assert -24 <= vortex.population["log10_m_a"] <= -22


def test_closed_form_vortex_close_to_discrete_line_far_away():
    config = load_preset("model_i")
    config["instrument"]["size"] = 48
    config["classes"]["axion"]["params"]["log10_m_a"] = -22.5
    discrete = Simulator(config, dtype=torch.float64)
    config["classes"]["axion"]["options"]["closed_form"] = True
    closed = Simulator(config, dtype=torch.float64)
    a = discrete.render([discrete.sample(3, 2)], noise=False).numpy()
    b = closed.render([closed.sample(3, 2)], noise=False).numpy()
    assert np.abs(a - b).max() < 2e-3 * a.max()
