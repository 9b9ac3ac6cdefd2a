"""Light components (surface brightness in flux units per arcsec^2), lensed or not.

Every component is normalised by ``amp`` (its own surface-brightness scale) or by ``magnitude``
(total apparent magnitude through the band's zero point, lenstronomy ``SimAPI`` convention).
Option ``colors`` maps band names to magnitude offsets (e.g. ``{g: 1.2, r: 0.5, i: 0.0}`` for a
red galaxy), so one component has a colour across a multi-band instrument.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor

from deeplense.core.config import ConfigError
from deeplense.core.registry import Registry
from deeplense.sim import functional as F
from deeplense.sim.components import Column, Component
from deeplense.sim.priors import Param

__all__ = ["SOURCES", "SourceComponent"]

SOURCES: Registry[type[SourceComponent]] = Registry("light profile")


class BandLike(Protocol):
    name: str
    zero_point: float | None


_AMP = Param("amp", "flux/arcsec^2", 0, 1e12, None, "surface-brightness scale (give this or magnitude)")
_MAG = Param("magnitude", "mag", -10, 40, None, "total apparent magnitude (give this or amp)")
_E1 = Param("e1", "", -0.5, 0.5, 0.0, "ellipticity component along x")
_E2 = Param("e2", "", -0.5, 0.5, 0.0, "ellipticity component along the diagonal")
_CX = Param("center_x", "arcsec", -20, 20, 0.0, "centre, x")
_CY = Param("center_y", "arcsec", -20, 20, 0.0, "centre, y")


def _elliptical_radius(x, y, p):
    """Radius and polar angle in the frame where an (e1, e2) ellipse is a circle (lenstronomy)."""
    dx, dy = x - p["center_x"], y - p["center_y"]
    e1, e2 = p.get("e1", 0.0), p.get("e2", 0.0)
    norm = torch.sqrt(torch.as_tensor(1 - e1**2 - e2**2).abs().clamp(min=1e-6))
    xe = ((1 - e1) * dx - e2 * dy) / norm
    ye = (-e2 * dx + (1 + e1) * dy) / norm
    return torch.sqrt(xe**2 + ye**2), torch.atan2(ye, xe)


class SourceComponent(Component):
    """Light profile: ``brightness(x, y, p, band)`` of shape ``(B, N)``.

    Subclasses implement ``profile(x, y, p)`` for unit ``amp`` and ``unit_flux(p)``, the total
    flux of that unit profile (used to turn a magnitude into ``amp``).
    """

    options = {"colors": {}}
    alternatives = ("amp", "magnitude")

    def validate(self):
        super().validate()
        if self.settings["colors"] and "magnitude" not in self.priors:
            raise ConfigError(f"{self.where}.options.colors", "colours are magnitude offsets: give magnitude")

    def profile(self, x: Tensor, y: Tensor, p: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def unit_flux(self, p: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def amplitude(self, p: dict[str, Tensor], band: BandLike) -> Tensor:
        """``(B, 1)`` factor turning the unit profile into the band's surface brightness."""
        if "magnitude" not in self.priors:
            return p["amp"]
        if band.zero_point is None:
            raise ConfigError(f"{self.where}.params.magnitude", "the instrument has no magnitude zero point")
        magnitude = p["magnitude"] + float(self.settings["colors"].get(band.name, 0.0))
        return 10 ** (-0.4 * (magnitude - band.zero_point)) / self.unit_flux(p)

    def brightness(self, x: Tensor, y: Tensor, p: dict[str, Tensor], band: BandLike) -> Tensor:
        return self.amplitude(p, band) * self.profile(x, y, p)


@SOURCES.register("sersic")
class Sersic(SourceComponent):
    """Elliptical Sersic (lenstronomy ``SERSIC_ELLIPSE``); ``amp`` is the brightness at R_sersic."""

    kind = "sersic"
    params = (
        Param("amp", "flux/arcsec^2", 0, 1e12, None, "surface brightness at R_sersic (give this or magnitude)"),
        _MAG,
        Param("R_sersic", "arcsec", 1e-4, 100, None, "half-light radius (product-averaged)"),
        Param("n_sersic", "", 0.2, 10, None, "Sersic index"),
        _E1,
        _E2,
        _CX,
        _CY,
    )

    def profile(self, x, y, p):
        one = torch.ones_like(p["R_sersic"])
        return F.sersic_elliptical(
            x, y, one, p["R_sersic"], p["n_sersic"], p["e1"], p["e2"], p["center_x"], p["center_y"]
        )

    def unit_flux(self, p):
        return F.sersic_total_flux(1.0, p["R_sersic"], p["n_sersic"])


@SOURCES.register("ring")
class Ring(SourceComponent):
    """Gaussian ring I = amp exp(-(R - radius)^2 / (2 width^2)): ring galaxies and collisional
    rings, the classic false positives of lens finders."""

    kind = "ring"
    params = (
        _AMP,
        _MAG,
        Param("radius", "arcsec", 0.01, 20, None, "ring radius"),
        Param("width", "arcsec", 0.001, 5, None, "Gaussian width of the ring"),
        _E1,
        _E2,
        _CX,
        _CY,
    )

    def profile(self, x, y, p):
        r, _ = _elliptical_radius(x, y, p)
        return torch.exp(-0.5 * ((r - p["radius"]) / p["width"]) ** 2)

    def unit_flux(self, p):
        r0, w = p["radius"], p["width"]
        inner = w * torch.exp(-0.5 * (r0 / w) ** 2) + r0 * math.sqrt(math.pi / 2) * (
            1 + torch.erf(r0 / (math.sqrt(2) * w))
        )
        return 2 * math.pi * w * inner


@SOURCES.register("spiral")
class Spiral(SourceComponent):
    """Exponential disk with logarithmic spiral arms:
    I = amp exp(-R / h) [1 + A cos(m (phi - ln(R / h) / tan(pitch)) - phase)], clipped at zero.
    The arms average out, so the total flux is that of the disk, 2 pi h^2 amp."""

    kind = "spiral"
    params = (
        _AMP,
        _MAG,
        Param("scale_length", "arcsec", 0.01, 20, None, "disk scale length h"),
        Param("arm_amplitude", "", 0, 1, 0.6, "relative amplitude A of the arms"),
        Param("pitch", "rad", 0.05, 1.5, 0.3, "pitch angle of the arms"),
        Param("phase", "rad", -10, 10, 0.0, "rotation of the arm pattern"),
        _E1,
        _E2,
        _CX,
        _CY,
    )
    options = {"colors": {}, "n_arms": 2}

    def profile(self, x, y, p):
        r, phi = _elliptical_radius(x, y, p)
        h = p["scale_length"]
        winding = torch.log(r.clamp(min=1e-4) / h) / torch.tan(p["pitch"])
        arms = 1 + p["arm_amplitude"] * torch.cos(int(self.settings["n_arms"]) * (phi - winding) - p["phase"])
        return torch.exp(-r / h) * arms.clamp(min=0)

    def unit_flux(self, p):
        return 2 * math.pi * p["scale_length"] ** 2


@SOURCES.register("arc")
class Arc(SourceComponent):
    """A curved streak: a Gaussian ring of ``radius`` and ``width`` around (center_x, center_y)
    limited to a Gaussian window of ``extent`` rad around position angle ``angle``. Tidal tails of
    mergers and edge-on arcs that mimic lensed arcs."""

    kind = "arc"
    params = (
        _AMP,
        _MAG,
        Param("radius", "arcsec", 0.01, 20, None, "radius of curvature"),
        Param("width", "arcsec", 0.001, 5, None, "Gaussian width across the arc"),
        Param("extent", "rad", 0.01, 3, None, "Gaussian angular half-width along the arc"),
        Param("angle", "rad", -10, 10, 0.0, "position angle of the arc's middle"),
        _CX,
        _CY,
    )

    def profile(self, x, y, p):
        dx, dy = x - p["center_x"], y - p["center_y"]
        r = torch.sqrt(dx**2 + dy**2)
        delta = torch.remainder(torch.atan2(dy, dx) - p["angle"] + math.pi, 2 * math.pi) - math.pi
        return torch.exp(-0.5 * ((r - p["radius"]) / p["width"]) ** 2 - 0.5 * (delta / p["extent"]) ** 2)

    def unit_flux(self, p):
        return 2 * math.pi * p["radius"] * p["width"] * p["extent"]


@SOURCES.register("clumps")
class Clumps(SourceComponent):
    """Star-forming clumps: ``n_clumps`` (option) round Gaussians of width ``size`` at positions
    drawn per image uniformly in a disk of radius ``spread`` around the centre, with fluxes drawn
    from a flat Dirichlet; ``magnitude``/``amp`` is their total. Positions and fractions are stored
    as ``clump<k>_x``, ``clump<k>_y``, ``clump<k>_frac``."""

    kind = "clumps"
    params = (
        _AMP,
        _MAG,
        Param("size", "arcsec", 0.001, 5, None, "Gaussian sigma of each clump"),
        Param("spread", "arcsec", 0, 20, None, "radius of the disk holding the clumps"),
        _CX,
        _CY,
    )
    options = {"colors": {}, "n_clumps": 4}

    def _names(self) -> list[str]:
        return [f"clump{k}_{q}" for k in range(int(self.settings["n_clumps"])) for q in ("x", "y", "frac")]

    def sample(self, rng):
        values = super().sample(rng)
        n = int(self.settings["n_clumps"])
        radius = values["spread"] * rng.uniform(size=n) ** 0.5
        angle = rng.uniform(0, 2 * math.pi, size=n)
        frac = rng.dirichlet([1.0] * n)
        for k in range(n):
            values[f"clump{k}_x"] = float(radius[k] * math.cos(angle[k]))
            values[f"clump{k}_y"] = float(radius[k] * math.sin(angle[k]))
            values[f"clump{k}_frac"] = float(frac[k])
        return values

    def columns(self):
        extra = [
            Column(f"{self.name}.{n}", "" if n.endswith("frac") else "arcsec", "clump offset or flux fraction")
            for n in self._names()
        ]
        return super().columns() + extra

    def profile(self, x, y, p):
        total = torch.zeros_like(x - p["center_x"])
        for k in range(int(self.settings["n_clumps"])):
            dx = x - p["center_x"] - p[f"clump{k}_x"]
            dy = y - p["center_y"] - p[f"clump{k}_y"]
            total = total + p[f"clump{k}_frac"] * torch.exp(-0.5 * (dx**2 + dy**2) / p["size"] ** 2)
        return total

    def unit_flux(self, p):
        return 2 * math.pi * p["size"] ** 2


@SOURCES.register("real_galaxy")
class RealGalaxy(SourceComponent):
    """A galaxy from the Hubble eXtreme Deep Field (:mod:`deeplense.sim.real_galaxies`): one of
    its stamps, drawn per image (uniformly among stamps ``galaxies: [first, last)``, option; all
    by default), scaled so the stamp spans ``size`` arcsec, rotated by ``angle`` and bilinearly
    interpolated. ``amp`` is the stamp's peak surface brightness. The stamp drawn is stored as
    ``galaxy`` (its index in the catalogue)."""

    kind = "real_galaxy"
    params = (
        Param("amp", "flux/arcsec^2", 0, 1e12, None, "peak surface brightness (give this or magnitude)"),
        _MAG,
        Param("size", "arcsec", 0.01, 20, None, "side of the square stamp in the source plane"),
        Param("angle", "rad", -10, 10, 0.0, "rotation of the stamp"),
        _CX,
        _CY,
    )
    options = {"colors": {}, "galaxies": None, "stamp_pixels": 32}

    def validate(self):
        super().validate()
        from deeplense.sim.real_galaxies import xdf_stamps

        n = len(xdf_stamps(int(self.settings["stamp_pixels"])))
        chosen = self.settings["galaxies"] or [0, n]
        if (
            not isinstance(chosen, list | tuple)
            or len(chosen) != 2
            or not all(isinstance(v, int) for v in chosen)
            or not 0 <= chosen[0] < chosen[1] <= n
        ):
            raise ConfigError(
                f"{self.where}.options.galaxies", f"expected [first, last) within [0, {n}], got {chosen!r}"
            )
        self.span = (int(chosen[0]), int(chosen[1]))

    def sample(self, rng):
        values = super().sample(rng)
        values["galaxy"] = int(rng.integers(*self.span))
        return values

    def columns(self):
        return super().columns() + [Column(f"{self.name}.galaxy", "", "index of the XDF stamp (real_galaxies)")]

    def _stamps(self, device: torch.device) -> Tensor:
        from deeplense.sim.real_galaxies import xdf_stamps

        return torch.as_tensor(xdf_stamps(int(self.settings["stamp_pixels"])), device=device)

    def profile(self, x, y, p):
        stamps = self._stamps(x.device)
        dx, dy = torch.broadcast_tensors(x - p["center_x"], y - p["center_y"])
        cos, sin = torch.cos(p["angle"]), torch.sin(p["angle"])
        half = p["size"] / 2
        u = (dx * cos + dy * sin) / half  # stamp coordinates in [-1, 1]
        v = (-dx * sin + dy * cos) / half
        grid = torch.stack([u, -v], -1)[:, :, None, :].to(stamps.dtype)  # image rows run downwards
        chosen = stamps[p["galaxy"].long().flatten()][:, None]
        sampled = torch.nn.functional.grid_sample(
            chosen, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        return sampled[:, 0, :, 0].to(x.dtype)

    def unit_flux(self, p):
        stamps = self._stamps(p["size"].device)
        pixel = p["size"] / stamps.shape[-1]
        return stamps.sum((1, 2))[p["galaxy"].long().flatten()].view_as(pixel) * pixel**2
