"""Physical subhalo populations: CDM, WDM (half-mode suppression) and SIDM (cored, collapsing).

docs/physics.md, Dark-matter populations. The three share one CDM draw (mass function, Poisson number, positions,
concentrations) and differ where the dark matter does, so a WDM image with m_hm -> 0 or an SIDM
image with sigma/m -> 0 is the CDM image of the same seed. Formulas and their sources are in
:mod:`deeplense.sim.halos`.
"""

from __future__ import annotations

import math

import numpy as np

from deeplense.core.config import ConfigError
from deeplense.sim import halos as H
from deeplense.sim.components import Column
from deeplense.sim.priors import Param
from deeplense.sim.substructure import POPULATIONS, Population, Subhalos, power_law_masses

__all__ = ["PhysicalCDM", "WarmDarkMatter", "SelfInteractingDarkMatter", "KAPPA_HOST"]

#: Host convergence at which f_sub is defined: an isothermal lens has kappa = 1/2 at theta_E.
KAPPA_HOST = 0.5
_PROFILES = ("tnfw", "nfw", "point_mass", "pseudo_tnfw")
_MIN_CORE = 1e-7  # r_core / r_s of a coreless pseudo-NFW, pyHalo's floor


@POPULATIONS.register("cdm")
class PhysicalCDM(Population):
    """Cold-dark-matter subhalos with a power-law mass function (docs/physics.md, Dark-matter populations).

    dN/dm proportional to m**slope on [m_min, m_max] (M_200c, M_sun). The mean number inside the
    rendering radius r_max comes from ``n_mean`` or from ``f_sub``, the projected mass fraction in
    subhalos where the host has kappa = 1/2 (its Einstein ring): Sigma_sub = f_sub Sigma_crit / 2
    (the convention of Dalal & Kochanek 2002 and pyHalo's sigma_sub in spirit). The number per
    image is Poisson; positions are uniform in projected area; concentrations follow Duffy et al.
    (2008) with ``c_scatter`` dex of log-normal scatter. Profiles (option ``profile``):
    ``tnfw`` (Baltz et al. 2009, r_trunc = tau r_s; the default), ``nfw``, ``point_mass``, or
    ``pseudo_tnfw`` (lenstronomy TNFWC without a core: the SIDM profile at sigma/m = 0).
    """

    kind = "cdm"
    params = (
        Param("f_sub", "", 0, 1, None, "projected subhalo mass fraction at kappa_host = 1/2 (or n_mean)"),
        Param("n_mean", "", 0, 100000, None, "mean number of subhalos within r_max (or f_sub)"),
        Param("slope", "", -3, -1.01, -1.9, "exponent of dN/dm"),
        Param("m_min", "M_sun", 1e4, 1e12, 1e7, "lowest subhalo mass M_200c"),
        Param("m_max", "M_sun", 1e4, 1e12, 1e10, "highest subhalo mass M_200c"),
        Param("r_max", "arcsec", 0.01, 20, 2.5, "rendering radius"),
        Param("tau", "", 1.5, 1000, 10.0, "truncation radius over scale radius"),
        Param("c_scatter", "dex", 0, 1, 0.2, "log-normal scatter of the concentration"),
    )
    options = {"profile": "tnfw"}
    derived = (
        Column("n_sub", "", "number of subhalos rendered"),
        Column("m_sub_total", "M_sun", "total M_200c of the rendered subhalos"),
    )

    alternatives = ("f_sub", "n_mean")

    def validate(self):
        super().validate()
        if self.priors["m_min"].support()[1] >= self.priors["m_max"].support()[0]:
            raise ConfigError(f"{self.where}.params.m_min", "m_min must be below m_max")
        if self.settings["profile"] not in _PROFILES:
            raise ConfigError(f"{self.where}.options.profile", f"expected one of {_PROFILES}")

    # -- the shared CDM draw ----------------------------------------------------------------------
    def mean_count(self, values: dict[str, float]) -> float:
        """Expected number of subhalos within r_max."""
        if "n_mean" in values:
            return values["n_mean"]
        area = math.pi * (values["r_max"] * self.context.mpc_per_arcsec) ** 2
        mass = values["f_sub"] * KAPPA_HOST * self.context.sigma_crit * area
        return mass / H.power_law_mean_mass(values["slope"], values["m_min"], values["m_max"])

    def draw_cdm(self, rng: np.random.Generator, values: dict[str, float]):
        """Masses, positions (arcsec) and CDM concentrations; the draw order is fixed so every
        dark-matter model sees the same CDM realisation for the same seed."""
        n = int(rng.poisson(self.mean_count(values)))
        masses = power_law_masses(rng, n, values["slope"], values["m_min"], values["m_max"])
        radius = values["r_max"] * np.sqrt(rng.uniform(size=n))
        angle = rng.uniform(0, 2 * math.pi, size=n)
        scatter = 10 ** (values["c_scatter"] * rng.standard_normal(n))
        keep = rng.uniform(size=n)  # thinning variates, used by WDM
        ctx = self.context
        conc = H.duffy2008_concentration(masses, ctx.z_lens, ctx.H0 / 100) * scatter
        return masses, radius * np.cos(angle), radius * np.sin(angle), conc, keep

    def realise(self, rng, values):
        masses, x, y, conc, keep = self.draw_cdm(rng, values)
        selected = self.select(masses, keep, values)
        masses, x, y, conc = masses[selected], x[selected], y[selected], conc[selected]
        conc = conc * self.concentration_factor(masses, values)
        extra, tables = self.profiles(rng, masses, x, y, conc, values)
        derived = {"n_sub": float(len(masses)), "m_sub_total": float(masses.sum()), **extra}
        return derived, Subhalos(tables)

    def select(self, masses, keep, values) -> np.ndarray:
        """Which drawn subhalos exist in this dark-matter model (all of them for CDM)."""
        return np.ones(len(masses), dtype=bool)

    def concentration_factor(self, masses, values) -> np.ndarray:
        """Concentration relative to CDM (1 for CDM)."""
        return np.ones(len(masses))

    def profiles(self, rng, masses, x, y, conc, values) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """Catalogue tables of the rendered subhalos."""
        ctx, profile = self.context, self.settings["profile"]
        if profile == "point_mass":
            return {}, {"point_mass": np.stack([x, y, ctx.theta_E(masses)], axis=1)}
        pseudo = profile == "pseudo_tnfw"
        rho_s, r_s = H.nfw_structure(masses, conc, ctx.rho_crit_lens, pseudo=pseudo)
        Rs, alpha = H.nfw_lensing_angles(rho_s, r_s, ctx, pseudo=pseudo)
        if profile == "nfw":
            return {}, {"nfw": np.stack([x, y, Rs, alpha], axis=1)}
        r_trunc = values["tau"] * Rs
        if profile == "tnfw":
            return {}, {"tnfw": np.stack([x, y, Rs, alpha, r_trunc], axis=1)}
        r_core = _MIN_CORE * Rs
        alpha = H.tnfwc_lensing_alpha(rho_s, r_s, _MIN_CORE * r_s, values["tau"] * r_s, ctx)
        return {}, {"tnfwc": np.stack([x, y, Rs, alpha, r_core, r_trunc], axis=1)}


@POPULATIONS.register("wdm")
class WarmDarkMatter(PhysicalCDM):
    """Warm dark matter: the CDM draw thinned by the half-mode suppression of the subhalo mass
    function, (1 + (4.2 m_hm / m)^2.5)^-0.2 (Lovell 2020, pyHalo ``SHMF_LOVELL2020``), with
    concentrations lowered by (1 + 60 m_hm / m)^-0.17 (Bose et al. 2016). Stores the thermal-relic
    mass implied by m_hm (Schneider et al. 2012 as in pyHalo)."""

    kind = "wdm"
    params = (*PhysicalCDM.params, Param("log10_m_hm", "log10(M_sun)", 4, 12, None, "half-mode mass"))
    derived = (
        *PhysicalCDM.derived,
        Column("m_thermal", "keV", "thermal-relic particle mass implied by m_hm"),
    )

    def select(self, masses, keep, values):
        return keep < H.lovell2020_subhalo_suppression(masses, 10 ** values["log10_m_hm"])

    def concentration_factor(self, masses, values):
        return H.bose2016_concentration_suppression(masses, 10 ** values["log10_m_hm"], self.context.z_lens)

    def realise(self, rng, values):
        derived, subhalos = super().realise(rng, values)
        ctx = self.context
        derived["m_thermal"] = float(H.thermal_relic_mass_kev(10 ** values["log10_m_hm"], ctx.Om0, ctx.H0 / 100))
        return derived, subhalos


@POPULATIONS.register("sidm")
class SelfInteractingDarkMatter(PhysicalCDM):
    """Self-interacting dark matter: cored truncated pseudo-NFW subhalos (lenstronomy ``TNFWC``).

    Each subhalo evolves for ``t_age`` Gyr with core-collapse time t_c (Essig et al. 2019;
    Yang et al. 2023 eq. 2.2) for the cross-section ``log10_sigma_over_m``; r_s and the core r_c
    follow the Yang et al. (2023) fits at t / t_c (pyHalo's extrapolation past collapse), and the
    density normalisation keeps the 3-D mass inside r_200, as in pyHalo's ``TNFWCHaloEvolving``.
    A fraction ``f_collapsed`` of subhalos is set deep into core collapse (t / t_c = 1.6: a small
    core and a steep inner profile), as in pyHalo's ``core_collapse_by_mass``.
    """

    kind = "sidm"
    params = (
        *PhysicalCDM.params,
        Param("log10_sigma_over_m", "log10(cm^2/g)", -3, 4, None, "effective self-interaction cross-section"),
        Param("t_age", "Gyr", 0, 14, 8.0, "time over which the subhalos evolve"),
        Param("f_collapsed", "", 0, 1, 0.0, "fraction of subhalos in deep core collapse"),
    )
    derived = (
        *PhysicalCDM.derived,
        Column("n_collapsed", "", "subhalos set into core collapse"),
        Column("median_core", "", "median r_core / r_s0 of the rendered subhalos"),
    )

    options = {"profile": "pseudo_tnfw"}

    def validate(self):
        super().validate()
        if self.settings["profile"] != "pseudo_tnfw":
            raise ConfigError(
                f"{self.where}.options.profile", "sidm subhalos are cored pseudo-NFW (TNFWC): only 'pseudo_tnfw'"
            )

    def profiles(self, rng, masses, x, y, conc, values):
        ctx = self.context
        rho0, rs0 = H.nfw_structure(masses, conc, ctx.rho_crit_lens, pseudo=True)
        r_trunc, r200 = values["tau"] * rs0, conc * rs0
        kpc = 1e3
        t_c = H.sidm_collapse_timescale(rho0 / kpc**3, rs0 * kpc, 10 ** values["log10_sigma_over_m"])
        collapsed = rng.uniform(size=len(masses)) < values["f_collapsed"]
        t_ratio = np.where(collapsed, 1.6, values["t_age"] / t_c)
        rs_factor, rc_factor = H.yang2023_evolution(t_ratio)
        r_s, r_core = rs0 * rs_factor, rs0 * rc_factor
        mass_cdm = H.tnfwc_mass_3d(rho0, rs0, _MIN_CORE * rs0, r_trunc, r200)
        rho = np.where(t_ratio > 0, mass_cdm / H.tnfwc_mass_3d(1.0, r_s, r_core, r_trunc, r200), rho0)
        alpha = H.tnfwc_lensing_alpha(rho, r_s, r_core, r_trunc, ctx)
        to_arcsec = 1 / ctx.mpc_per_arcsec
        table = np.stack([x, y, r_s * to_arcsec, alpha, r_core * to_arcsec, r_trunc * to_arcsec], axis=1)
        extra = {
            "n_collapsed": float(collapsed.sum()),
            "median_core": float(np.median(rc_factor)) if len(masses) else float("nan"),
        }
        return extra, {"tnfwc": table}
