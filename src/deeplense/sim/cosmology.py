"""Cosmological distances and the mass-to-Einstein-radius conversion.

Flat LCDM (astropy). A point mass M has ``theta_E = sqrt(4 G M / c^2 * D_ls / (D_l D_s))``.
The public DeepLense generator used *luminosity* distances with ``D_ls = D_s - D_l`` (giving
theta_E = 1.2815 arcsec for 1e12 M_sun at z = 0.5 -> 1.0); the physical choice is
angular-diameter distances (1.66 arcsec). ``distances`` selects the convention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from deeplense.core.config import ConfigError

__all__ = ["LensingContext", "DISTANCE_CONVENTIONS"]

DISTANCE_CONVENTIONS = ("angular_diameter", "luminosity")


@dataclass(frozen=True)
class LensingContext:
    """Redshifts and cosmology shared by every component of a simulation."""

    z_lens: float = 0.5
    z_source: float = 1.0
    H0: float = 70.0
    Om0: float = 0.3
    Ob0: float = 0.05
    distances: str = "angular_diameter"

    def __post_init__(self):
        if not 0 < self.z_lens < self.z_source:
            raise ConfigError("z_lens", f"need 0 < z_lens < z_source, got {self.z_lens}, {self.z_source}")
        if self.distances not in DISTANCE_CONVENTIONS:
            raise ConfigError("cosmology.distances", f"expected one of {DISTANCE_CONVENTIONS}, got {self.distances!r}")

    @cached_property
    def cosmology(self):
        from astropy.cosmology import FlatLambdaCDM

        return FlatLambdaCDM(H0=self.H0, Om0=self.Om0, Ob0=self.Ob0)

    @cached_property
    def distances_mpc(self) -> tuple[float, float, float]:
        """(D_l, D_s, D_ls) in Mpc under the chosen convention."""
        c = self.cosmology
        if self.distances == "luminosity":
            d_l = c.luminosity_distance(self.z_lens).value
            d_s = c.luminosity_distance(self.z_source).value
            return d_l, d_s, d_s - d_l
        d_l = c.angular_diameter_distance(self.z_lens).value
        d_s = c.angular_diameter_distance(self.z_source).value
        return d_l, d_s, c.angular_diameter_distance(self.z_lens, self.z_source).value

    @cached_property
    def _theta_per_sqrt_mass(self) -> float:
        from astropy import constants, units

        d_l, d_s, d_ls = self.distances_mpc
        factor = 4 * constants.G * units.M_sun / constants.c**2 * (d_ls / (d_l * d_s) / units.Mpc)
        return float(np.sqrt(factor.decompose().value)) * 180 / math.pi * 3600

    @cached_property
    def rho_crit_lens(self) -> float:
        """Critical density of the Universe at ``z_lens`` (M_sun / Mpc^3, physical)."""
        from astropy import units

        return float(self.cosmology.critical_density(self.z_lens).to(units.M_sun / units.Mpc**3).value)

    @cached_property
    def sigma_crit(self) -> float:
        """Critical surface density c^2 D_s / (4 pi G D_l D_ls) (M_sun / Mpc^2), chosen distances."""
        from astropy import constants, units

        d_l, d_s, d_ls = self.distances_mpc
        factor = constants.c**2 / (4 * math.pi * constants.G) * d_s / (d_l * d_ls) / units.Mpc
        return float(factor.to(units.M_sun / units.Mpc**2).value)

    @property
    def mpc_per_arcsec(self) -> float:
        """Physical length (Mpc) of one arcsec at the lens, chosen distances."""
        return self.distances_mpc[0] * math.pi / (180 * 3600)

    def theta_E(self, mass):
        """Einstein radius (arcsec) of a point mass ``mass`` (M_sun); arrays allowed."""
        return self._theta_per_sqrt_mass * np.sqrt(mass)

    def mass(self, theta_E):
        """Inverse of :meth:`theta_E`."""
        return (np.asarray(theta_E) / self._theta_per_sqrt_mass) ** 2
