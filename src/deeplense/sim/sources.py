"""Source light components (surface brightness in flux units per arcsec^2)."""

from __future__ import annotations

from torch import Tensor

from deeplense.config import ConfigError
from deeplense.registry import Registry
from deeplense.sim import functional as F
from deeplense.sim.components import Component
from deeplense.sim.priors import Param

__all__ = ["SOURCES", "SourceComponent"]

SOURCES: Registry[type[SourceComponent]] = Registry("source profile")


class SourceComponent(Component):
    """Light profile: ``brightness(x, y, p, zero_point)`` of shape ``(B, N)``.

    ``zero_point`` is the band's magnitude zero point (mag giving 1 count/s), or ``None``
    for instruments without one, in which case magnitudes cannot be used.
    """

    def brightness(self, x: Tensor, y: Tensor, p: dict[str, Tensor], zero_point: float | None) -> Tensor:
        raise NotImplementedError


@SOURCES.register("sersic")
class Sersic(SourceComponent):
    """Elliptical Sersic (lenstronomy ``SERSIC_ELLIPSE``), normalised by ``amp`` or ``magnitude``.

    ``amp`` is the surface brightness at ``R_sersic``; ``magnitude`` is the total apparent
    magnitude through the instrument's zero point (lenstronomy ``SimAPI`` convention).
    """

    kind = "sersic"
    params = (
        Param("amp", "flux/arcsec^2", 0, 1e12, None, "surface brightness at R_sersic (give this or magnitude)"),
        Param("magnitude", "mag", -10, 40, None, "total apparent magnitude (give this or amp)"),
        Param("R_sersic", "arcsec", 1e-4, 100, None, "half-light radius (product-averaged)"),
        Param("n_sersic", "", 0.2, 10, None, "Sersic index"),
        Param("e1", "", -0.5, 0.5, 0.0, "ellipticity component along x"),
        Param("e2", "", -0.5, 0.5, 0.0, "ellipticity component along the diagonal"),
        Param("center_x", "arcsec", -10, 10, 0.0, "centre, x (source plane)"),
        Param("center_y", "arcsec", -10, 10, 0.0, "centre, y (source plane)"),
    )

    def validate(self):
        if ("amp" in self.priors) == ("magnitude" in self.priors):
            raise ConfigError(f"{self.where}.params", "give exactly one of amp or magnitude")
        for name in ("R_sersic", "n_sersic"):
            if name not in self.priors:
                raise ConfigError(f"{self.where}.params.{name}", "required parameter is missing")

    def brightness(self, x, y, p, zero_point):
        if "magnitude" in self.priors:
            if zero_point is None:
                raise ConfigError(f"{self.where}.params.magnitude", "the instrument has no magnitude zero point")
            counts = 10 ** (-0.4 * (p["magnitude"] - zero_point))
            amp = counts / F.sersic_total_flux(1.0, p["R_sersic"], p["n_sersic"])
        else:
            amp = p["amp"]
        return F.sersic_elliptical(
            x, y, amp, p["R_sersic"], p["n_sersic"], p["e1"], p["e2"], p["center_x"], p["center_y"]
        )
