"""Dark-matter substructure populations: per-image draws of many small deflectors.

A population samples its declared parameters, then realises a :class:`Subhalos` catalogue:
point masses ``(x, y, theta_E)`` and uniform line segments. Every draw uses the image's own
generator, so a catalogue is a pure function of the image seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from deeplense.core.config import ConfigError
from deeplense.core.registry import Registry
from deeplense.sim.components import Column, Component
from deeplense.sim.lenses import LENSES
from deeplense.sim.priors import Param

__all__ = ["POPULATIONS", "PROFILE_COLUMNS", "Population", "Subhalos", "power_law_masses"]

POPULATIONS: Registry[type[Population]] = Registry("substructure population")


#: The deflectors (from the one lens registry, :data:`deeplense.sim.lenses.LENSES`) a subhalo
#: catalogue may hold, in the order their deflections are summed.
SUBHALO_PROFILES = ("point_mass", "line_segment", "nfw", "tnfw", "tnfwc")

#: Row layout of each subhalo profile in a catalogue (angles in arcsec, ``angle`` in rad).
PROFILE_COLUMNS: dict[str, tuple[str, ...]] = {
    name: LENSES.get(name).catalogue_columns or () for name in SUBHALO_PROFILES
}


@dataclass
class Subhalos:
    """Catalogue of one image: per profile, an ``(n, len(PROFILE_COLUMNS[profile]))`` table."""

    tables: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        for profile, table in self.tables.items():
            if profile not in PROFILE_COLUMNS or np.shape(table)[1:] != (len(PROFILE_COLUMNS[profile]),):
                raise ValueError(f"bad subhalo table {profile!r} of shape {np.shape(table)}")

    def of(self, profile: str) -> np.ndarray:
        """The rows of ``profile`` (an empty table when the image has none)."""
        return self.tables.get(profile, np.zeros((0, len(PROFILE_COLUMNS[profile]))))


def power_law_masses(rng: np.random.Generator, n: int, slope: float, m_min: float, m_max: float) -> np.ndarray:
    """``n`` masses from dN/dm proportional to m**slope on [m_min, m_max] (inverse CDF)."""
    u = rng.uniform(size=n)
    if abs(slope + 1) < 1e-12:
        return m_min * (m_max / m_min) ** u
    k = slope + 1
    return (m_min**k + u * (m_max**k - m_min**k)) ** (1 / k)


class Population(Component):
    """Base class; ``realise`` turns sampled values into extra scalars and a catalogue."""

    #: Derived scalars stored per image besides the declared parameters.
    derived: ClassVar[tuple[Column, ...]] = ()

    def realise(self, rng: np.random.Generator, values: dict[str, float]) -> tuple[dict[str, float], Subhalos]:
        raise NotImplementedError

    def columns(self):
        return super().columns() + [Column(f"{self.name}.{c.name}", c.unit, c.doc) for c in self.derived]


@POPULATIONS.register("none")
class NoSubstructure(Population):
    """The smooth lens only (DeepLense ``no_sub``)."""

    kind = "none"

    def realise(self, rng, values):
        return {}, Subhalos()


@POPULATIONS.register("deeplense_cdm")
class DeepLenseCDM(Population):
    """Point-mass subhalos as in the public DeepLense sets (``cdm`` class, docs/physics.md, Presets).

    Exactly ``n_sub`` subhalos (the generator's Poisson draw is ignored there too); masses by
    inverse CDF from dN/dm proportional to m**slope (the released data follow slope -0.9 although the
    generator's docstring says -1.9); projected radius uniform in [r_min, r_max] (uniform in r,
    not in area); angle uniform. Einstein radii from the context's distance convention.
    """

    kind = "deeplense_cdm"
    params = (
        Param("n_sub", "", 0, 10000, 25, "number of subhalos"),
        Param("m_min", "M_sun", 1, 1e13, 1e6, "lowest subhalo mass"),
        Param("m_max", "M_sun", 1, 1e13, 1e10, "highest subhalo mass"),
        Param("slope", "", -5, 5, -0.9, "exponent of dN/dm"),
        Param("r_min", "arcsec", 0, 100, 0.25, "smallest projected radius"),
        Param("r_max", "arcsec", 0, 100, 2.0, "largest projected radius"),
    )
    derived = (Column("m_sub_total", "M_sun", "total subhalo mass"),)

    def validate(self):
        super().validate()
        if self.priors["m_min"].support()[1] >= self.priors["m_max"].support()[0]:
            raise ConfigError(f"{self.where}.params.m_min", "m_min must be below m_max")
        if self.priors["r_min"].support()[1] > self.priors["r_max"].support()[0]:
            raise ConfigError(f"{self.where}.params.r_min", "r_min must not exceed r_max")

    def realise(self, rng, values):
        n = int(round(values["n_sub"]))
        masses = power_law_masses(rng, n, values["slope"], values["m_min"], values["m_max"])
        radius = rng.uniform(values["r_min"], values["r_max"], size=n)
        angle = rng.uniform(0, 2 * math.pi, size=n)
        theta = self.context.theta_E(masses)
        points = np.stack([radius * np.cos(angle), radius * np.sin(angle), theta], axis=1)
        return {"m_sub_total": float(masses.sum())}, Subhalos({"point_mass": points})


@POPULATIONS.register("deeplense_vortex")
class DeepLenseVortex(Population):
    """Axion ("vortex") substructure as in the public DeepLense sets (``axion`` class).

    Total mass ``mass`` on a straight line through (center_x, center_y) at a random angle, with
    half-length ``L = length_scale * 10**(-22 - log10_m_a)`` arcsec. By default the mass sits in
    ``n_elements`` equal point masses at ``linspace(-L, L, n_elements)`` as in the released data;
    option ``closed_form: true`` uses the uniform-line deflection instead (one profile per vortex).
    Option ``n_vortices`` > 1 adds further vortices of the same mass and length, at random angles,
    centred uniformly in area within ``spread`` arcsec of (center_x, center_y).
    """

    kind = "deeplense_vortex"
    params = (
        Param("log10_m_a", "log10(eV)", -30, -15, None, "axion mass"),
        Param("mass", "M_sun", 0, 1e14, 3e10, "total vortex mass"),
        Param("n_elements", "", 1, 100000, 100, "point masses along the line"),
        Param("length_scale", "arcsec", 0, 100, 0.03, "half-length at m_a = 1e-22 eV"),
        Param("angle", "rad", -2 * math.pi, 2 * math.pi, None, "position angle of the line"),
        Param("center_x", "arcsec", -10, 10, 0.0, "line centre, x"),
        Param("center_y", "arcsec", -10, 10, 0.0, "line centre, y"),
        Param("spread", "arcsec", 0, 10, 0.0, "radius within which extra vortices are centred"),
    )
    options = {"closed_form": False, "n_vortices": 1}
    derived = (Column("half_length", "arcsec", "half-length of the vortex line"),)

    def validate(self):
        if "angle" not in self.priors:
            from deeplense.sim.priors import Uniform

            self.priors["angle"] = Uniform(0.0, 2 * math.pi)
        super().validate()

    def realise(self, rng, values):
        half = values["length_scale"] * 10 ** (-22 - values["log10_m_a"])
        n_vortices = int(self.settings["n_vortices"])
        if n_vortices < 1:
            raise ConfigError(f"{self.where}.options.n_vortices", "need at least one vortex")
        centers, angles = [(values["center_x"], values["center_y"])], [values["angle"]]
        for _ in range(n_vortices - 1):
            r, phi = values["spread"] * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
            centers.append((values["center_x"] + r * math.cos(phi), values["center_y"] + r * math.sin(phi)))
            angles.append(rng.uniform(0, 2 * math.pi))
        if self.settings["closed_form"]:
            theta = float(self.context.theta_E(values["mass"]))
            rows = [[theta, half, a, cx, cy] for (cx, cy), a in zip(centers, angles)]
            return {"half_length": half}, Subhalos({"line_segment": np.array(rows)})
        n = int(round(values["n_elements"]))
        t = np.linspace(-half, half, n)
        theta = np.full(n, self.context.theta_E(values["mass"] / n))
        points = [
            np.stack([cx + t * math.cos(a), cy + t * math.sin(a), theta], axis=1)
            for (cx, cy), a in zip(centers, angles)
        ]
        return {"half_length": half}, Subhalos({"point_mass": np.concatenate(points)})
