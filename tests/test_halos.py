"""Physical subhalo populations (PHYSICS.md sections 2 and 4) against pyHalo, colossus and lenstronomy."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
from astropy.cosmology import FlatLambdaCDM
from lenstronomy.Cosmo.lens_cosmo import LensCosmo as LenstronomyCosmo
from scipy import stats

from deeplense.core.config import ConfigError
from deeplense.sim import halos as H
from deeplense.sim.cosmology import LensingContext
from deeplense.sim.presets import load_preset
from deeplense.sim.simulator import Simulator

CTX = LensingContext(z_lens=0.5, z_source=1.0, H0=70.0, Om0=0.3, Ob0=0.05)


@pytest.fixture(scope="module")
def pyhalo_cosmo():
    from pyHalo.Cosmology.cosmology import Cosmology
    from pyHalo.Halos.lens_cosmo import LensCosmo

    return LensCosmo(0.5, 1.0, Cosmology(astropy_instance=FlatLambdaCDM(H0=70.0, Om0=0.3, Ob0=0.05)))


def test_wdm_mass_function_suppression_equals_pyhalo():
    from pyHalo.Rendering.MassFunctions.mass_function_base import WDMPowerLaw

    m = np.logspace(6, 11, 50)
    for log_mhm in (7.0, 8.3, 9.5):
        ref = WDMPowerLaw._turnover(m, log_mhm, 36.15, 2.5, -0.2)  # pyHalo's SHMF_LOVELL2020 numbers
        np.testing.assert_allclose(H.lovell2020_subhalo_suppression(m, 10**log_mhm), ref, rtol=1e-3)


def test_wdm_concentration_suppression_equals_pyhalo():
    from pyHalo.Halos.concentration import ConcentrationWDMPolynomial, _zEvolutionBose2016

    m = np.logspace(6, 11, 50)
    for log_mhm, z in ((7.5, 0.2), (9.0, 0.5), (8.0, 1.3)):
        model = SimpleNamespace(
            _log_mc=log_mhm,
            _c_scale=60.0,
            _c_power=-0.17,
            _c_power_inner=1.0,
            _mc_suppression_redshift_evolution=True,
            _redshift_evolution=_zEvolutionBose2016(),
        )
        ref = ConcentrationWDMPolynomial.suppression(model, m, z)
        np.testing.assert_allclose(H.bose2016_concentration_suppression(m, 10**log_mhm, z), ref, rtol=1e-12)


def test_thermal_relic_mass_and_sidm_timescale_equal_pyhalo(pyhalo_cosmo):
    for m_hm in (1e7, 3e8, 1e10):
        assert H.thermal_relic_mass_kev(m_hm, 0.3, 0.7) == pytest.approx(
            pyhalo_cosmo.halfmode_to_thermal(m_hm), rel=1e-12
        )
    for rho_s, r_s, sigma in ((1e7, 1.0, 10.0), (3e8, 0.1, 1.0), (5e6, 3.0, 100.0)):
        ref = pyhalo_cosmo.sidm_collapse_timescale(rho_s, r_s, sigma)
        assert H.sidm_collapse_timescale(rho_s, r_s, sigma) == pytest.approx(ref, rel=1e-12)


def test_sidm_profile_evolution_equals_pyhalo():
    from pyHalo.Halos.HaloModels.NFW_core_trunc import evolve_profile

    t = np.concatenate([np.linspace(0, 1, 41), [1.05, 1.2, 1.5, 1.6, 2.5]])
    rs, rc = H.yang2023_evolution(t)
    ref = np.array([evolve_profile(v, 1.0) for v in t])
    np.testing.assert_allclose(rs, ref[:, 0], rtol=1e-12)
    np.testing.assert_allclose(rc, ref[:, 1], rtol=1e-12)


def test_duffy_concentration_equals_colossus():
    from colossus.cosmology import cosmology
    from colossus.halo import concentration

    cosmology.setCosmology("planck18")
    m = np.logspace(7, 13, 13)
    for z, h in ((0.3, 0.7), (0.5, 0.674), (1.0, 0.7)):
        ref = concentration.concentration(m * h, "200c", z, model="duffy08")
        np.testing.assert_allclose(H.duffy2008_concentration(m, z, h), ref, rtol=1e-6)


def test_nfw_angles_equal_lenstronomy_and_pyhalo(pyhalo_cosmo):
    ref = LenstronomyCosmo(0.5, 1.0, cosmo=FlatLambdaCDM(H0=70.0, Om0=0.3, Ob0=0.05))
    for m, c in ((1e8, 20.0), (3e9, 12.0), (1e11, 8.0)):
        rho, rs = H.nfw_structure(m, c, CTX.rho_crit_lens)
        # lenstronomy hard-codes rho_crit and G; astropy differs by 3e-4.
        np.testing.assert_allclose(H.nfw_lensing_angles(rho, rs, CTX), ref.nfw_physical2angle(m, c), rtol=5e-4)
        rho, rs = H.nfw_structure(m, c, CTX.rho_crit_lens, pseudo=True)
        ours = H.nfw_lensing_angles(rho, rs, CTX, pseudo=True)
        np.testing.assert_allclose(ours, pyhalo_cosmo.nfw_physical2angle(m, c, 0.5, pseudo_nfw=True), rtol=2e-4)
        # TNFWC without core and truncation is the pseudo-NFW: same alpha_Rs.
        coreless = H.tnfwc_lensing_alpha(rho, rs, 1e-9 * rs, 1e7 * rs, CTX)
        assert coreless == pytest.approx(ours[1], rel=1e-5)


@pytest.mark.parametrize(
    "rho0, rs, rc, rt, rmax", [(2.0, 1.5, 0.3, 12.0, 20.0), (1.0, 0.2, 1e-6, 2.0, 3.0), (1.0, 1.0, 5.0, 1.5, 50.0)]
)
def test_tnfwc_mass_3d_matches_quadrature(rho0, rs, rc, rt, rmax):
    from scipy.integrate import quad

    def density(r):
        return rho0 * rs**3 / (math.hypot(r, rc) * (rs**2 + r**2)) * rt**2 / (r**2 + rt**2)

    exact, _ = quad(lambda r: 4 * math.pi * r**2 * density(r), 0, rmax, epsabs=0, epsrel=1e-10, limit=200)
    assert H.tnfwc_mass_3d(rho0, rs, rc, rt, rmax) == pytest.approx(exact, rel=1e-6)


def _population(kind, params, options=None):
    cfg = load_preset("cdm_wdm_sidm")
    cfg["classes"] = {"x": {"kind": kind, "params": params, **({"options": options} if options else {})}}
    return Simulator(cfg).populations["x"]


def test_cdm_population_statistics_over_many_draws():
    """Slope, f_sub, Poisson counts and the area-uniform radial distribution, from 1e5+ subhalos."""
    f_sub, slope, m_min, m_max, r_max = 0.05, -1.9, 1e8, 1e10, 2.5
    pop = _population("cdm", {"f_sub": f_sub, "slope": slope, "m_min": m_min, "m_max": m_max, "r_max": r_max})
    rng = np.random.default_rng(3)
    counts, masses, radii = [], [], []
    for _ in range(1500):
        values = pop.sample(rng)
        m, x, y, _, _ = pop.draw_cdm(rng, values)
        counts.append(len(m))
        masses.append(m)
        radii.append(np.hypot(x, y))
    counts, masses, radii = np.array(counts), np.concatenate(masses), np.concatenate(radii)
    assert len(masses) > 1e5
    mean = pop.mean_count(values)
    assert abs(counts.mean() - mean) < 4 * math.sqrt(mean / len(counts))
    assert counts.var() == pytest.approx(mean, rel=0.15)  # Poisson
    # Maximum-likelihood slope of a truncated power law, by a 1-D search.
    grid = np.linspace(-2.1, -1.7, 801)
    logm = np.log(masses)
    k = grid + 1
    loglike = len(masses) * np.log(k / (m_max**k - m_min**k)) + grid * logm.sum()
    fitted = grid[np.argmax(loglike)]
    err = 1 / math.sqrt(len(masses)) * 1.5  # ~ Fisher error for this mass range
    assert abs(fitted - slope) < 4 * err, (fitted, err)
    area = math.pi * (r_max * CTX.mpc_per_arcsec) ** 2
    recovered = masses.sum() / len(counts) / (0.5 * CTX.sigma_crit * area)
    assert recovered == pytest.approx(f_sub, rel=0.05)
    assert stats.kstest((radii / r_max) ** 2, "uniform").pvalue > 1e-3


def test_wdm_thins_the_cdm_draw_by_the_lovell_fraction():
    """Same seed, same CDM draw: the WDM subhalo count and mass match sum(s(m)) and sum(m s(m))."""
    params = {"n_mean": 400.0, "m_min": 1e7, "m_max": 1e10, "log10_m_hm": 8.5}
    cdm = _population("cdm", {k: v for k, v in params.items() if k != "log10_m_hm"})
    wdm = _population("wdm", params)
    n_kept = m_kept = n_exp = n_var = m_exp = m_var = 0.0
    for seed in range(300):
        rng = np.random.default_rng(seed)
        masses = cdm.draw_cdm(rng, cdm.sample(rng))[0]
        rng = np.random.default_rng(seed)
        derived, _ = wdm.realise(rng, wdm.sample(rng))
        s = H.lovell2020_subhalo_suppression(masses, 10**8.5)
        n_kept, m_kept = n_kept + derived["n_sub"], m_kept + derived["m_sub_total"]
        n_exp, n_var = n_exp + s.sum(), n_var + (s * (1 - s)).sum()
        m_exp, m_var = m_exp + (masses * s).sum(), m_var + (masses**2 * s * (1 - s)).sum()
    assert abs(n_kept - n_exp) < 4 * math.sqrt(n_var)
    assert abs(m_kept - m_exp) < 4 * math.sqrt(m_var)
    assert n_exp < 0.5 * 300 * 400  # the suppression is strong at these masses


def test_sidm_without_self_interaction_renders_the_cdm_image():
    cfg = load_preset("cdm_wdm_sidm")
    common = {"f_sub": 0.05, "m_min": 1e8, "m_max": 1e10}
    cfg["classes"] = {
        "cdm": {"kind": "cdm", "params": common, "options": {"profile": "pseudo_tnfw"}},
        "sidm0": {"kind": "sidm", "params": {**common, "log10_sigma_over_m": -3.0}},
        "sidm": {"kind": "sidm", "params": {**common, "log10_sigma_over_m": 2.0}},
        "wdm0": {"kind": "wdm", "params": {**common, "log10_m_hm": 4.0}, "options": {"profile": "pseudo_tnfw"}},
    }
    sim = Simulator(cfg)
    images, _ = sim.simulate([9, 9, 9, 9], [0, 1, 2, 3], noise=False)
    peak = images[0].max()
    assert np.abs(images[1] - images[0]).max() < 1e-4 * peak
    # m_hm = 1e4 still lowers concentrations at 1e8 M_sun by 0.1 % (Bose et al.): near-CDM, not equal.
    assert np.abs(images[3] - images[0]).max() < 2e-3 * peak
    assert np.abs(images[2] - images[0]).max() > 1e-2 * peak
    cores = [sim.sample(9, 2).population["median_core"], sim.sample(9, 1).population["median_core"]]
    assert cores[0] > 100 * cores[1]


def test_sidm_cores_grow_with_cross_section_then_collapse():
    t = np.array([0.01, 0.1, 0.3])
    assert np.all(np.diff(H.yang2023_evolution(t)[1]) > 0)
    assert H.yang2023_evolution(1.6)[1] < H.yang2023_evolution(0.3)[1] / 100


def test_population_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="f_sub or n_mean"):
        _population("cdm", {"f_sub": 0.1, "n_mean": 3.0})
    with pytest.raises(ConfigError, match="m_min"):
        _population("cdm", {"f_sub": 0.1, "m_min": 1e10, "m_max": 1e9})
    with pytest.raises(ConfigError, match="profile"):
        _population("cdm", {"f_sub": 0.1}, {"profile": "burkert"})
    with pytest.raises(ConfigError, match="log10_m_hm"):
        _population("wdm", {"f_sub": 0.1})
    with pytest.raises(ConfigError, match="x.options.profile: sidm .*pseudo_tnfw"):
        _population("sidm", {"f_sub": 0.1, "log10_sigma_over_m": 1.0}, {"profile": "tnfw"})


@pytest.mark.parametrize("profile", ["point_mass", "nfw", "tnfw", "pseudo_tnfw"])
def test_every_cdm_profile_renders_finite_images(profile):
    cfg = load_preset("cdm_wdm_sidm")
    cfg["instrument"]["size"] = 32
    cfg["classes"] = {"cdm": {"kind": "cdm", "params": {"n_mean": 20.0}, "options": {"profile": profile}}}
    images, samples = Simulator(cfg).simulate([1, 2], [0, 0])
    assert np.isfinite(images).all() and samples[0].population["n_sub"] > 0
