"""Structure of physical subhalos: mass functions, concentrations, NFW normalisations, WDM, SIDM.

Each function names its source; ``tests/test_halos.py`` checks them against pyHalo 1.4.6,
colossus and lenstronomy. Masses are M_200c in M_sun (no little h), lengths in Mpc unless a
name says kpc, densities in M_sun / Mpc^3.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from deeplense.sim import functional as F
from deeplense.sim.cosmology import LensingContext

__all__ = [
    "power_law_mean_mass",
    "duffy2008_concentration",
    "lovell2020_subhalo_suppression",
    "bose2016_concentration_suppression",
    "thermal_relic_mass_kev",
    "nfw_structure",
    "nfw_lensing_angles",
    "tnfwc_lensing_alpha",
    "sidm_collapse_timescale",
    "yang2023_evolution",
    "tnfwc_mass_3d",
]

_ARCSEC = math.pi / (180 * 3600)
_G_NFW_AT_RS = 1 + math.log(0.5)  # NFW projected-mass function at X = 1 (lenstronomy NFW)


def power_law_mean_mass(slope: float, m_min: float, m_max: float) -> float:
    """Mean mass (M_sun) of dN/dm proportional to m**slope on [m_min, m_max]."""

    def moment(k: float) -> float:
        return math.log(m_max / m_min) if abs(k) < 1e-12 else (m_max**k - m_min**k) / k

    return moment(slope + 2) / moment(slope + 1)


def duffy2008_concentration(m200, z: float, h: float):
    """c_200c of relaxed-and-unrelaxed NFW haloes, Duffy et al. (2008, MNRAS 390, L64) Table 1:
    c = 5.71 (M / 2e12 h^-1 M_sun)^-0.084 (1 + z)^-0.47. Extrapolated below their 1e11 M_sun."""
    return 5.71 * (np.asarray(m200) / (2e12 / h)) ** -0.084 * (1 + z) ** -0.47


def lovell2020_subhalo_suppression(m, m_hm: float):
    """WDM / CDM subhalo mass function ratio (1 + (4.2 m_hm / m)^2.5)^-0.2.

    Lovell (2020, ApJ 897, 147) fit to satellites; pyHalo's ``SHMF_LOVELL2020`` (a_wdm = 4.2^2.5).
    """
    return (1 + (4.2 * m_hm / np.asarray(m)) ** 2.5) ** -0.2


def bose2016_concentration_suppression(m, m_hm: float, z: float):
    """c_WDM / c_CDM = (1 + 60 m_hm / m)^-0.17 (1 + z)^(0.026 z - 0.04).

    Bose et al. (2016, MNRAS 455, 318) eq. 17 and its redshift term; pyHalo ``WDM_POLYNOMIAL``.
    """
    return (1 + 60.0 * m_hm / np.asarray(m)) ** -0.17 * (1 + z) ** (0.026 * z - 0.04)


def thermal_relic_mass_kev(m_hm, Om0: float, h: float):
    """Thermal-relic particle mass (keV) whose half-mode mass is ``m_hm`` (M_sun).

    2.32 (Om0 / 0.25)^0.4 (h / 0.7)^0.8 (m_hm / 1e9)^-0.3, the inversion of Schneider et al.
    (2012, MNRAS 424, 684) used by pyHalo (``LensCosmo.halfmode_to_thermal``).
    """
    return 2.32 * (Om0 / 0.25) ** 0.4 * (h / 0.7) ** 0.8 * (np.asarray(m_hm) / 1e9) ** -0.3


def nfw_structure(m200, c, rho_crit: float, *, pseudo: bool = False):
    """``(rho_s, r_s)`` of an NFW halo of mass ``m200`` within r_200c and concentration ``c``.

    ``pseudo`` gives the (1 + x^2) pseudo-NFW that the SIDM profiles generalise (pyHalo
    ``rho0_c_pseudoNFW``): rho_s = 200/3 rho_c c^3 / (ln(1+c^2)/2) instead of / (ln(1+c) - c/(1+c)).
    """
    m200, c = np.asarray(m200, dtype=float), np.asarray(c, dtype=float)
    r200 = (3 * m200 / (4 * math.pi * 200 * rho_crit)) ** (1 / 3)
    shape = np.log(1 + c**2) / 2 if pseudo else np.log(1 + c) - c / (1 + c)
    return 200 / 3 * rho_crit * c**3 / shape, r200 / c


def nfw_lensing_angles(rho_s, r_s, context: LensingContext, *, pseudo: bool = False):
    """``(Rs, alpha_Rs)`` in arcsec, lenstronomy's ``nfw_physical2angle`` convention.

    For the pseudo-NFW, ``alpha_Rs`` is that of the untruncated, coreless ``TNFWC`` profile.
    """
    g1 = math.sqrt(2) * math.log(1 + math.sqrt(2)) + math.log(0.5) if pseudo else _G_NFW_AT_RS
    return np.asarray(r_s) / context.mpc_per_arcsec, _alpha_at_rs(rho_s, r_s, g1, context)


def tnfwc_lensing_alpha(rho0, Rs_mpc, r_core_mpc, r_trunc_mpc, context: LensingContext):
    """``alpha_Rs`` (arcsec) of lenstronomy ``TNFWC`` for physical density normalisation ``rho0``."""
    rc, rt, rs = (torch.as_tensor(np.asarray(v, dtype=np.float64)) for v in (r_core_mpc, r_trunc_mpc, Rs_mpc))
    g1 = F.tnfwc_g(torch.ones_like(rs), rc / rs, rt / rs).numpy()
    return _alpha_at_rs(rho0, Rs_mpc, g1, context)


def _alpha_at_rs(rho, Rs_mpc, g1, context: LensingContext):
    """Deflection (arcsec) at Rs of a halo whose projected mass inside Rs is 4 pi rho Rs^3 g1."""
    d_l = context.mpc_per_arcsec / _ARCSEC
    return np.asarray(rho) * 4 * np.asarray(Rs_mpc) ** 2 * g1 / context.sigma_crit / d_l / _ARCSEC


def tnfwc_mass_3d(rho0, Rs, r_core, r_trunc, r_max, n: int = 129):
    """3-D mass (M_sun) of the ``TNFWC`` density inside ``r_max`` (same length unit as the radii).

    Simpson's rule in ln r on ``n`` (odd) points from 1e-4 r_max (the mass inside that radius is
    below 1e-8 of the total); relative error below 1e-6. pyHalo integrates the same density with
    the trapezoid rule on 1000 log-spaced radii.
    """
    rho0, Rs, r_core, r_trunc, r_max = (
        np.asarray(v, dtype=float)[..., None] for v in (rho0, Rs, r_core, r_trunc, r_max)
    )
    u = np.linspace(math.log(1e-4), 0.0, n)
    r = np.exp(u) * r_max
    rho = rho0 * Rs**3 / (np.sqrt(r**2 + r_core**2) * (Rs**2 + r**2)) * r_trunc**2 / (r**2 + r_trunc**2)
    weights = np.ones(n)
    weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
    return (4 * math.pi * r**3 * rho) @ weights * (u[1] - u[0]) / 3


def sidm_collapse_timescale(rho_s_kpc, r_s_kpc, sigma_over_m):
    """Core-collapse time t_c (Gyr) = 150 / (C sigma/m rho_s r_s sqrt(4 pi G rho_s)), C = 0.75.

    Essig et al. (2019, PRL 123, 121102); Yang et al. (2023, JCAP) eq. 2.2; pyHalo
    ``sidm_collapse_timescale``. ``rho_s`` in M_sun/kpc^3, ``r_s`` in kpc, sigma/m in cm^2/g.
    """
    G = 4.3e-6  # kpc (km/s)^2 / M_sun
    cm2_per_g = 2.0889e-10  # kpc^2 / M_sun
    kms2_per_kpc = 1.05e-33  # (km/s)^2 / kpc in kpc / s^2
    rho_s_kpc = np.asarray(rho_s_kpc)
    denom = (
        cm2_per_g * sigma_over_m * rho_s_kpc * np.asarray(r_s_kpc) * np.sqrt(4 * math.pi * G * rho_s_kpc * kms2_per_kpc)
    )
    return 150 / 0.75 / denom * 3.171e-17


def yang2023_evolution(t_over_tc):
    """``(r_s / r_s0, r_c / r_s0)`` of a gravothermally evolving SIDM halo at time t / t_c.

    Yang et al. (2023, JCAP 2023/10, 032) fits for t/t_c <= 1 and pyHalo's extrapolation into
    core collapse beyond (t/t_c capped at 1.6, r_c floored at 1e-7 r_s).
    """
    t = np.minimum(np.asarray(t_over_tc, dtype=float), 1.6)

    def rs_fit(tt):
        return (
            1.13293
            - 0.518186 * tt
            + 0.30265 * tt**2
            - 0.400463 * tt**3
            + (1 - 1.13293) * np.log(0.001 + tt) / np.log(0.001)
        )

    def rc_fit(tt):
        return 1.06419 * np.sqrt(tt) - 1.33207 * tt + 0.431133 * tt**2 - 0.148087 * tt**3 + 0.024455 * tt**4

    rs = np.where(t <= 1, rs_fit(t), rs_fit(0.5) * np.exp(-0.47 * (t - 0.5) - 2.4 * (t - 0.5) ** 3))
    rc = np.where(t <= 1, rc_fit(t), np.maximum(rc_fit(0.5) - 0.28 * (t - 0.5), 1e-4))
    return rs, np.maximum(rc, 1e-7 * rs)
