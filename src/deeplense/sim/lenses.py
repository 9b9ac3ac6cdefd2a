"""Lens components: parameter declarations around the batched deflections of ``functional``."""

from __future__ import annotations

import math
from typing import ClassVar

from torch import Tensor

from deeplense.core.registry import Registry
from deeplense.sim import functional as F
from deeplense.sim.components import Component, MassOrEinsteinRadius
from deeplense.sim.priors import Param

__all__ = ["LENSES", "LensComponent"]

LENSES: Registry[type[LensComponent]] = Registry("lens profile")

_CX = Param("center_x", "arcsec", -10, 10, 0.0, "profile centre, x")
_CY = Param("center_y", "arcsec", -10, 10, 0.0, "profile centre, y")
_THETA = Param("theta_E", "arcsec", 0, 10, None, "Einstein radius (give this or mass)")
_MASS = Param("mass", "M_sun", 0, 1e15, None, "mass whose point-mass Einstein radius is theta_E")
_E1 = Param("e1", "", -0.5, 0.5, 0.0, "ellipticity component along x")
_E2 = Param("e2", "", -0.5, 0.5, 0.0, "ellipticity component along the diagonal")


class LensComponent(Component):
    """A deflector: ``deflection(x, y, p)`` (a static method) with ``p`` a dict of ``(B, 1)``
    tensors. The same registry serves the main lens and the subhalos: a profile that can be a
    subhalo declares ``catalogue_columns``, the row layout of its subhalo catalogues."""

    catalogue_columns: ClassVar[tuple[str, ...] | None] = None

    @staticmethod
    def deflection(x: Tensor, y: Tensor, p: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


@LENSES.register("sie")
class SIE(MassOrEinsteinRadius, LensComponent):
    """Singular isothermal ellipsoid, lenstronomy ``SIE`` conventions (product-averaged theta_E)."""

    kind = "sie"
    params = (_THETA, _MASS, _E1, _E2, _CX, _CY)

    @staticmethod
    def deflection(x, y, p):
        return F.sie_deflection(x, y, p["theta_E"], p["e1"], p["e2"], p["center_x"], p["center_y"])


@LENSES.register("sis")
class SIS(MassOrEinsteinRadius, LensComponent):
    """Singular isothermal sphere."""

    kind = "sis"
    params = (_THETA, _MASS, _CX, _CY)

    @staticmethod
    def deflection(x, y, p):
        return F.sis_deflection(x, y, p["theta_E"], p["center_x"], p["center_y"])


@LENSES.register("point_mass")
class PointMass(MassOrEinsteinRadius, LensComponent):
    """Point mass."""

    kind = "point_mass"
    params = (_THETA, _MASS, _CX, _CY)
    catalogue_columns = ("center_x", "center_y", "theta_E")

    @staticmethod
    def deflection(x, y, p):
        return F.point_mass_deflection(x, y, p["theta_E"], p["center_x"], p["center_y"])


@LENSES.register("shear")
class Shear(LensComponent):
    """External shear (zero deflection at the origin)."""

    kind = "shear"
    params = (
        Param("gamma1", "", -0.5, 0.5, 0.0, "shear component along x"),
        Param("gamma2", "", -0.5, 0.5, 0.0, "shear component along the diagonal"),
    )

    @staticmethod
    def deflection(x, y, p):
        return F.shear_deflection(x, y, p["gamma1"], p["gamma2"])


_RS = Param("Rs", "arcsec", 1e-7, 100, None, "scale radius")
_ALPHA_RS = Param("alpha_Rs", "arcsec", 0, 10, None, "deflection at projected Rs")
_R_TRUNC = Param("r_trunc", "arcsec", 1e-6, 1000, None, "truncation radius")


@LENSES.register("nfw")
class NFW(LensComponent):
    """Navarro-Frenk-White halo, lenstronomy ``NFW`` parametrisation."""

    kind = "nfw"
    params = (_RS, _ALPHA_RS, _CX, _CY)
    catalogue_columns = ("center_x", "center_y", "Rs", "alpha_Rs")

    @staticmethod
    def deflection(x, y, p):
        return F.nfw_deflection(x, y, p["Rs"], p["alpha_Rs"], p["center_x"], p["center_y"])


@LENSES.register("tnfw")
class TNFW(LensComponent):
    """Truncated NFW (Baltz, Marshall & Oguri 2009), lenstronomy ``TNFW`` parametrisation."""

    kind = "tnfw"
    params = (_RS, _ALPHA_RS, _R_TRUNC, _CX, _CY)
    catalogue_columns = ("center_x", "center_y", "Rs", "alpha_Rs", "r_trunc")

    @staticmethod
    def deflection(x, y, p):
        return F.tnfw_deflection(x, y, p["Rs"], p["alpha_Rs"], p["r_trunc"], p["center_x"], p["center_y"])


@LENSES.register("line_segment")
class LineSegment(MassOrEinsteinRadius, LensComponent):
    """Uniform line of mass with a closed-form deflection (one vortex at the cost of one profile)."""

    kind = "line_segment"
    params = (
        _THETA,
        _MASS,
        Param("half_length", "arcsec", 1e-6, 100, None, "half-length of the segment"),
        Param("angle", "rad", -2 * math.pi, 2 * math.pi, 0.0, "position angle from the x axis"),
        _CX,
        _CY,
    )
    catalogue_columns = ("theta_E", "half_length", "angle", "center_x", "center_y")

    @staticmethod
    def deflection(x, y, p):
        return F.line_segment_deflection(x, y, p["theta_E"], p["half_length"], p["angle"], p["center_x"], p["center_y"])


@LENSES.register("tnfwc")
class TNFWC(LensComponent):
    """Cored, truncated pseudo-NFW halo, lenstronomy ``TNFWC`` (the SIDM subhalos of pyHalo)."""

    kind = "tnfwc"
    params = (_RS, _ALPHA_RS, Param("r_core", "arcsec", 1e-8, 1000, None, "core radius"), _R_TRUNC, _CX, _CY)
    catalogue_columns = ("center_x", "center_y", "Rs", "alpha_Rs", "r_core", "r_trunc")

    @staticmethod
    def deflection(x, y, p):
        return F.tnfwc_deflection(x, y, p["Rs"], p["alpha_Rs"], p["r_core"], p["r_trunc"], p["center_x"], p["center_y"])
