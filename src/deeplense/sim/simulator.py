"""The batched simulator: sample per-image parameters, then render a batch in one call.

Config layout (YAML)::

    name: model_i
    z_lens: 0.5
    z_source: 1.0
    cosmology: {H0: 70, Om0: 0.3, Ob0: 0.05, distances: luminosity}
    instrument: {size: 150, pixel_scale: 0.05, bands: [{psf: ..., noise: ...}]}
    lens:   [{kind: sie, params: {...}}, {kind: shear, params: {...}}]
    source: [{kind: sersic, params: {...}}]
    classes: {no_sub: {kind: none}, cdm: {kind: deeplense_cdm}, ...}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from deeplense.config import ConfigError, check_keys
from deeplense.seeding import image_rng, noise_key
from deeplense.sim import functional as F
from deeplense.sim import halo_populations  # noqa: F401  (registers cdm, wdm, sidm)
from deeplense.sim import random as R
from deeplense.sim.components import Column, Component, batch_params
from deeplense.sim.cosmology import LensingContext
from deeplense.sim.instruments import Instrument
from deeplense.sim.lenses import LENSES, LensComponent
from deeplense.sim.sources import SOURCES, SourceComponent
from deeplense.sim.substructure import POPULATIONS, Population, Subhalos

__all__ = ["Simulator", "ImageSample", "SIMULATION_KEYS"]

#: Batched deflection of one subhalo per image from its catalogue row (PROFILE_COLUMNS order).
_SUBHALO_DEFLECTIONS = {
    "point_mass": lambda x, y, r: F.point_mass_deflection(x, y, r[2], r[0], r[1]),
    "line_segment": lambda x, y, r: F.line_segment_deflection(x, y, *r),
    "nfw": lambda x, y, r: F.nfw_deflection(x, y, r[2], r[3], r[0], r[1]),
    "tnfw": lambda x, y, r: F.tnfw_deflection(x, y, r[2], r[3], r[4], r[0], r[1]),
    "tnfwc": lambda x, y, r: F.tnfwc_deflection(x, y, r[2], r[3], r[4], r[5], r[0], r[1]),
}
#: Padding rows: zero mass, finite geometry, so padded images are bit-identical to unpadded ones.
_MASSLESS = {
    "point_mass": [0.0, 0.0, 0.0],
    "line_segment": [0.0, 1.0, 0.0, 0.0, 0.0],
    "nfw": [0.0, 0.0, 1.0, 0.0],
    "tnfw": [0.0, 0.0, 1.0, 0.0, 10.0],
    "tnfwc": [0.0, 0.0, 1.0, 0.0, 0.1, 10.0],
}

SIMULATION_KEYS = {"name", "description", "z_lens", "z_source", "cosmology", "instrument", "lens", "source", "classes"}
_COSMOLOGY_KEYS = {"H0", "Om0", "Ob0", "distances"}


@dataclass
class ImageSample:
    """Everything random about one image, drawn from its seed."""

    seed: int
    label: int
    params: list[dict[str, float]]  # one dict per component, in Simulator.components order
    population: dict[str, float]
    subhalos: Subhalos = field(default_factory=Subhalos)


def _build_one(node: Any, where: str, registry, context):
    if not isinstance(node, dict) or "kind" not in node:
        raise ConfigError(where, "each component needs a 'kind'")
    if node["kind"] not in registry:
        raise ConfigError(f"{where}.kind", f"unknown {registry.family} {node['kind']!r}; available: {registry.names()}")
    return registry.get(node["kind"])(node, where, context)


def _build_list(nodes: Any, where: str, registry, context) -> list:
    if not isinstance(nodes, list) or not nodes:
        raise ConfigError(where, "expected a non-empty list of components")
    return [_build_one(node, f"{where}.{i}", registry, context) for i, node in enumerate(nodes)]


class Simulator:
    """Renders batches of lensing images ``(B, bands, size, size)`` on any torch device."""

    def __init__(
        self, config: dict[str, Any], *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
    ):
        check_keys(config, SIMULATION_KEYS, "")
        for key in ("instrument", "lens", "source", "classes"):
            if key not in config:
                raise ConfigError(key, "required section is missing")
        cosmo = config.get("cosmology") or {}
        check_keys(cosmo, _COSMOLOGY_KEYS, "cosmology")
        self.context = LensingContext(
            z_lens=float(config.get("z_lens", 0.5)), z_source=float(config.get("z_source", 1.0)), **cosmo
        )
        self.name = str(config.get("name", "custom"))
        self.description = str(config.get("description", ""))
        self.instrument = Instrument(config["instrument"], "instrument", self.context)
        self.lenses: list[LensComponent] = _build_list(config["lens"], "lens", LENSES, self.context)
        self.sources: list[SourceComponent] = _build_list(config["source"], "source", SOURCES, self.context)
        classes = config["classes"]
        if not isinstance(classes, dict) or not classes:
            raise ConfigError("classes", "expected a mapping of class name to substructure population")
        self.populations: dict[str, Population] = {}
        for cls_name, node in classes.items():
            node = {"name": "substructure", **(node or {"kind": "none"})}
            self.populations[str(cls_name)] = _build_one(node, f"classes.{cls_name}", POPULATIONS, self.context)
        self.class_names = list(self.populations)
        self.dtype, self.device = dtype, torch.device(device)
        names = [c.name for c in self.components]
        if len(set(names)) != len(names):
            raise ConfigError("lens", f"component names must be unique (set 'name:'), got {names}")
        self._columns = self._collect_columns()
        self._grid: tuple[Tensor, Tensor] | None = None

    @property
    def components(self) -> list[Component]:
        """Lenses, sources and per-band noise models: every component sampled for every image."""
        return [*self.lenses, *self.sources, *(b.noise for b in self.instrument.bands)]

    def _collect_columns(self) -> list[Column]:
        columns: dict[str, Column] = {}
        for comp in [*self.components, *self.populations.values()]:
            for col in comp.columns():
                if col.name in columns and columns[col.name].unit != col.unit:
                    raise ConfigError(
                        "classes", f"column {col.name} has units {columns[col.name].unit!r} and {col.unit!r}"
                    )
                columns.setdefault(col.name, col)
        return list(columns.values())

    @property
    def columns(self) -> list[Column]:
        """Metadata columns: every sampled or derived scalar, with units."""
        return list(self._columns)

    def to_yaml(self) -> dict[str, Any]:
        """The fully resolved config (every default and preset number written out)."""
        ctx = self.context
        return {
            "name": self.name,
            "description": self.description,
            "z_lens": ctx.z_lens,
            "z_source": ctx.z_source,
            "cosmology": {"H0": ctx.H0, "Om0": ctx.Om0, "Ob0": ctx.Ob0, "distances": ctx.distances},
            "instrument": self.instrument.to_yaml(),
            "lens": [c.to_yaml() for c in self.lenses],
            "source": [c.to_yaml() for c in self.sources],
            "classes": {k: p.to_yaml() for k, p in self.populations.items()},
        }

    # -- sampling -------------------------------------------------------------------------------
    def sample(self, seed: int, label: int) -> ImageSample:
        """Draw every parameter of one image from its seed."""
        if not 0 <= label < len(self.class_names):
            raise ValueError(f"label {label} out of range for classes {self.class_names}")
        rng = image_rng(seed)
        params = [comp.sample(rng) for comp in self.components]
        population = self.populations[self.class_names[label]]
        values = population.sample(rng)
        derived, subhalos = population.realise(rng, values)
        return ImageSample(seed, label, params, {**values, **derived}, subhalos)

    def metadata_row(self, sample: ImageSample) -> dict[str, float]:
        """One value per column (NaN where the image's class has no such parameter)."""
        row = {c.name: float("nan") for c in self._columns}
        for comp, values in zip(self.components, sample.params):
            row.update({f"{comp.name}.{k}": v for k, v in values.items() if f"{comp.name}.{k}" in row})
        pop = self.populations[self.class_names[sample.label]]
        row.update({f"{pop.name}.{k}": v for k, v in sample.population.items()})
        return row

    # -- rendering ------------------------------------------------------------------------------
    def _pixel_grid(self) -> tuple[Tensor, Tensor]:
        if self._grid is None:
            inst = self.instrument
            self._grid = F.pixel_grid(
                inst.size, inst.pixel_scale, inst.supersampling, dtype=self.dtype, device=self.device
            )
        return self._grid

    def _padded(self, samples: list[ImageSample], profile: str) -> Tensor:
        """``(B, K, columns)`` rows of ``profile``, short catalogues padded with massless rows."""
        tables = [s.subhalos.of(profile) for s in samples]
        k = max(len(t) for t in tables)
        padded = np.tile(_MASSLESS[profile], (len(samples), k, 1))
        for i, t in enumerate(tables):
            padded[i, : len(t)] = t
        return torch.as_tensor(padded, dtype=self.dtype, device=self.device)

    def _component_params(self, samples: list[ImageSample], idx: int) -> dict[str, Tensor]:
        """``(B, 1)`` tensors of component ``idx``'s sampled parameters."""
        rows = [s.params[idx] for s in samples]
        return batch_params(rows, list(rows[0]), self.dtype, self.device)

    def deflection(self, samples: list[ImageSample]) -> tuple[Tensor, Tensor]:
        """Total deflection ``(B, N)`` at the (sub-)pixel grid. Subhalos are summed one at a time
        in a fixed order, so padding shorter catalogues with massless rows changes no bit."""
        x, y = self._pixel_grid()
        ax = torch.zeros(len(samples), x.numel(), dtype=self.dtype, device=self.device)
        ay = torch.zeros_like(ax)
        for i, lens in enumerate(self.lenses):
            p = self._component_params(samples, i)
            dx, dy = lens.deflection(x, y, p)
            ax, ay = ax + dx, ay + dy
        for profile, deflect in _SUBHALO_DEFLECTIONS.items():
            rows = self._padded(samples, profile)
            for k in range(rows.shape[1]):
                dx, dy = deflect(x, y, [rows[:, k, j : j + 1] for j in range(rows.shape[2])])
                ax, ay = ax + dx, ay + dy
        return ax, ay

    def render(self, samples: list[ImageSample], *, noise: bool = True) -> Tensor:
        """Images ``(B, bands, size, size)`` in the instrument's units (see the noise model)."""
        inst = self.instrument
        x, y = self._pixel_grid()
        ax, ay = self.deflection(samples)
        bx, by = x - ax, y - ay
        n_lens = len(self.lenses)
        src_params = [self._component_params(samples, n_lens + j) for j in range(len(self.sources))]
        keys = torch.tensor([noise_key(s.seed) for s in samples], dtype=torch.int64, device=self.device)
        n_super = inst.size * inst.supersampling
        out = []
        for b, band in enumerate(inst.bands):
            flux = torch.zeros_like(bx)
            for src, p in zip(self.sources, src_params):
                flux = flux + src.brightness(bx, by, p, band.zero_point)
            image = F.bin_pixels(flux.reshape(-1, n_super, n_super), inst.supersampling) * inst.pixel_scale**2
            image = band.convolve(image, inst.pixel_scale)
            if noise:
                idx = n_lens + len(self.sources) + b
                p = self._component_params(samples, idx)
                flat = band.noise.apply(
                    image.reshape(len(samples), -1), p, R.stream_key(keys, 100 + b), inst.pixel_scale
                )
                image = flat.reshape(image.shape)
            out.append(image)
        return torch.stack(out, dim=1)

    def simulate(
        self, seeds: list[int], labels: list[int], *, noise: bool = True
    ) -> tuple[np.ndarray, list[ImageSample]]:
        """Sample and render; returns float32 numpy images and the samples."""
        samples = [self.sample(s, lab) for s, lab in zip(seeds, labels)]
        with torch.no_grad():
            images = self.render(samples, noise=noise)
        return images.to("cpu", torch.float32).numpy(), samples
