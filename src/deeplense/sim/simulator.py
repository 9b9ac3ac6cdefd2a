"""The batched simulator: sample per-image parameters, then render a batch in one call.

Config layout (YAML)::

    name: model_i
    z_lens: 0.5
    z_source: 1.0
    cosmology: {H0: 70, Om0: 0.3, Ob0: 0.05, distances: luminosity}
    instrument: {size: 150, pixel_scale: 0.05, bands: [{psf: ..., noise: ...}]}
    lens:   [{kind: sie, params: {...}}, {kind: shear, params: {...}}]
    source: [{kind: sersic, params: {...}}]          # lensed light
    lens_light: [{kind: sersic, params: {...}}]      # optional, unlensed light in every image
    classes: {no_sub: {kind: none}, cdm: {kind: deeplense_cdm}, ...}

A class node is a substructure population (``kind``, ``params``, ``options``) plus, optionally,
``weight`` (relative abundance in a data set, default 1), ``lensed_source: false`` (no lensed
light: a non-lens) and ``variants``, a list of ``{name, weight, light: [...]}`` of which one is
drawn per image and whose unlensed light is added (e.g. the hard negatives of lens finding).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from deeplense.core.config import ConfigError, check_keys
from deeplense.core.seeding import image_rng, noise_key
from deeplense.sim import functional as F
from deeplense.sim import (
    halo_populations,  # noqa: F401  (registers cdm, wdm, sidm)
    kernels,
)
from deeplense.sim import rng as R
from deeplense.sim.components import Column, Component, batch_params
from deeplense.sim.cosmology import LensingContext
from deeplense.sim.instruments import Instrument
from deeplense.sim.lenses import LENSES, LensComponent
from deeplense.sim.sources import SOURCES, SourceComponent
from deeplense.sim.substructure import POPULATIONS, PROFILE_COLUMNS, Population, Subhalos

__all__ = ["Simulator", "ImageSample", "SIMULATION_KEYS"]

#: On the CPU, subhalo deflections are accumulated for a few images at a time, so that each
#: per-subhalo temporary (images x pixels) stays in cache: about this many bytes per temporary.
_SUBHALO_CHUNK_BYTES = 512 * 1024

SIMULATION_KEYS = {
    "name",
    "description",
    "z_lens",
    "z_source",
    "cosmology",
    "instrument",
    "lens",
    "source",
    "lens_light",
    "classes",
    "output",
}
#: What an image holds: the observed image, or the observed image minus the noise-free image of the
#: same scene without subhalos (the residual of a perfect smooth-model fit; an idealisation).
OUTPUTS = ("image", "smooth_model_residual")
_CLASS_KEYS = {"weight", "lensed_source", "variants"}
_COSMOLOGY_KEYS = {"H0", "Om0", "Ob0", "distances"}


@dataclass
class ImageSample:
    """Everything random about one image, drawn from its seed."""

    seed: int
    label: int
    params: list[dict[str, float]]  # one dict per component, in Simulator.components order
    population: dict[str, float]
    subhalos: Subhalos = field(default_factory=Subhalos)
    variant: int = -1  # index into the class's variants, -1 when it has none
    variant_params: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Variant:
    """One alternative scene of a class: extra unlensed light components, drawn with ``weight``."""

    name: str
    weight: float
    light: list[SourceComponent]


@dataclass
class ClassSpec:
    """What distinguishes one class: its substructure, abundance, lensed light and variants."""

    population: Population
    weight: int = 1
    lensed_source: bool = True
    variants: list[Variant] = field(default_factory=list)


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
        self.output = config.get("output", "image")
        if self.output not in OUTPUTS:
            raise ConfigError("output", f"expected one of {OUTPUTS}, got {self.output!r}")
        self.instrument = Instrument(config["instrument"], "instrument", self.context)
        self.lenses: list[LensComponent] = _build_list(config["lens"], "lens", LENSES, self.context)
        self.sources: list[SourceComponent] = _build_list(config["source"], "source", SOURCES, self.context)
        self.lens_light: list[SourceComponent] = (
            _build_list(config["lens_light"], "lens_light", SOURCES, self.context) if config.get("lens_light") else []
        )
        classes = config["classes"]
        if not isinstance(classes, dict) or not classes:
            raise ConfigError("classes", "expected a mapping of class name to substructure population")
        self.class_specs: dict[str, ClassSpec] = {
            str(name): self._build_class(node or {}, f"classes.{name}") for name, node in classes.items()
        }
        self.populations: dict[str, Population] = {k: v.population for k, v in self.class_specs.items()}
        self.class_names = list(self.populations)
        self.dtype, self.device = dtype, torch.device(device)
        names = [c.name for c in self.components]
        variant_lists = [[c.name for c in v.light] for spec in self.class_specs.values() for v in spec.variants]
        clash = {n for vl in variant_lists for n in vl} & set(names)
        if clash or any(len(set(vl)) != len(vl) for vl in variant_lists):
            raise ConfigError("classes", f"variant light names must be unique and differ from {names}")
        if len(set(names)) != len(names):
            raise ConfigError("lens", f"component names must be unique (set 'name:'), got {names}")
        self._columns = self._collect_columns()
        self._grid: tuple[Tensor, Tensor] | None = None

    def _build_class(self, node: dict[str, Any], where: str) -> ClassSpec:
        if not isinstance(node, dict):
            raise ConfigError(where, "expected a mapping")
        pop_node = {"name": "substructure", "kind": "none", **{k: v for k, v in node.items() if k not in _CLASS_KEYS}}
        population = _build_one(pop_node, where, POPULATIONS, self.context)
        weight = node.get("weight", 1)
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 1:
            raise ConfigError(f"{where}.weight", f"expected a positive integer, got {weight!r}")
        lensed = node.get("lensed_source", True)
        if not isinstance(lensed, bool):
            raise ConfigError(f"{where}.lensed_source", f"expected true or false, got {lensed!r}")
        variants = []
        for i, vnode in enumerate(node.get("variants") or []):
            vw = f"{where}.variants.{i}"
            if not isinstance(vnode, dict):
                raise ConfigError(vw, "expected a mapping with name, weight and light")
            check_keys(vnode, {"name", "weight", "light"}, vw)
            vweight = vnode.get("weight", 1.0)
            if not isinstance(vweight, (int, float)) or vweight <= 0:
                raise ConfigError(f"{vw}.weight", f"expected a positive number, got {vweight!r}")
            light = _build_list(vnode["light"], f"{vw}.light", SOURCES, self.context) if vnode.get("light") else []
            variants.append(Variant(str(vnode.get("name", f"variant{i}")), float(vweight), light))
        return ClassSpec(population, weight, lensed, variants)

    @property
    def components(self) -> list[Component]:
        """Lenses, sources, lens light and per-band noise: every component sampled for every image."""
        return [*self.lenses, *self.sources, *self.lens_light, *(b.noise for b in self.instrument.bands)]

    @property
    def class_weights(self) -> list[int]:
        """Relative abundance of each class in a data set."""
        return [spec.weight for spec in self.class_specs.values()]

    def _variant_components(self) -> list[Component]:
        return [c for spec in self.class_specs.values() for v in spec.variants for c in v.light]

    def _collect_columns(self) -> list[Column]:
        columns: dict[str, Column] = {}
        if any(spec.variants for spec in self.class_specs.values()):
            names = {k: [v.name for v in spec.variants] for k, spec in self.class_specs.items() if spec.variants}
            columns["scene.variant"] = Column("scene.variant", "", f"index of the drawn variant: {names}")
        for comp in [*self.components, *self.populations.values(), *self._variant_components()]:
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
            **({"lens_light": [c.to_yaml() for c in self.lens_light]} if self.lens_light else {}),
            "classes": {k: self._class_yaml(spec) for k, spec in self.class_specs.items()},
            "output": self.output,
        }

    @staticmethod
    def _class_yaml(spec: ClassSpec) -> dict[str, Any]:
        node = spec.population.to_yaml()
        node.pop("name", None)
        if spec.weight != 1:
            node["weight"] = spec.weight
        if not spec.lensed_source:
            node["lensed_source"] = False
        if spec.variants:
            node["variants"] = [
                {"name": v.name, "weight": v.weight, "light": [c.to_yaml() for c in v.light]} for v in spec.variants
            ]
        return node

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
        sample = ImageSample(seed, label, params, {**values, **derived}, subhalos)
        variants = self.class_specs[self.class_names[label]].variants
        if variants:
            weights = np.array([v.weight for v in variants])
            sample.variant = int(rng.choice(len(variants), p=weights / weights.sum()))
            sample.variant_params = [comp.sample(rng) for comp in variants[sample.variant].light]
        return sample

    def metadata_row(self, sample: ImageSample) -> dict[str, float]:
        """One value per column (NaN where the image's class has no such parameter)."""
        row = {c.name: float("nan") for c in self._columns}
        for comp, values in zip(self.components, sample.params):
            row.update({f"{comp.name}.{k}": v for k, v in values.items() if f"{comp.name}.{k}" in row})
        spec = self.class_specs[self.class_names[sample.label]]
        row.update({f"{spec.population.name}.{k}": v for k, v in sample.population.items()})
        if sample.variant >= 0:
            row["scene.variant"] = float(sample.variant)
            for comp, values in zip(spec.variants[sample.variant].light, sample.variant_params):
                row.update({f"{comp.name}.{k}": v for k, v in values.items() if f"{comp.name}.{k}" in row})
        return row

    # -- rendering ------------------------------------------------------------------------------
    def _pixel_grid(self) -> tuple[Tensor, Tensor]:
        if self._grid is None:
            inst = self.instrument
            self._grid = F.pixel_grid(
                inst.size, inst.pixel_scale, inst.supersampling, dtype=self.dtype, device=self.device
            )
        return self._grid

    def _padded(self, samples: list[ImageSample], profile: str) -> tuple[Tensor, Tensor]:
        """``(B, K, columns)`` rows of ``profile`` (short catalogues padded with zeros, never
        evaluated) and the ``(B,)`` number of real rows per image."""
        tables = [s.subhalos.of(profile) for s in samples]
        k = max(len(t) for t in tables)
        padded = np.zeros((len(samples), k, len(PROFILE_COLUMNS[profile])))
        for i, t in enumerate(tables):
            padded[i, : len(t)] = t
        counts = torch.as_tensor([len(t) for t in tables], device=self.device)
        return torch.as_tensor(padded, dtype=self.dtype, device=self.device), counts

    def _component_params(self, samples: list[ImageSample], idx: int) -> dict[str, Tensor]:
        """``(B, 1)`` tensors of component ``idx``'s sampled parameters."""
        rows = [s.params[idx] for s in samples]
        return batch_params(rows, list(rows[0]), self.dtype, self.device)

    def _noise_params(self, samples: list[ImageSample], band: int) -> dict[str, Tensor]:
        """``(B, 1)`` tensors of the noise parameters of band number ``band``."""
        return self._component_params(samples, len(self.lenses) + len(self.sources) + len(self.lens_light) + band)

    def deflection(self, samples: list[ImageSample]) -> tuple[Tensor, Tensor]:
        """Total deflection ``(B, N)`` at the (sub-)pixel grid. Subhalos are added one at a time
        in catalogue order, each only to the images that have it, so an image's deflection does
        not depend on the batch it is rendered in."""
        x, y = self._pixel_grid()
        ax = torch.zeros(len(samples), x.numel(), dtype=self.dtype, device=self.device)
        ay = torch.zeros_like(ax)
        for i, lens in enumerate(self.lenses):
            p = self._component_params(samples, i)
            dx, dy = lens.deflection(x, y, p)
            ax, ay = ax + dx, ay + dy
        chunk = len(samples)
        if self.device.type == "cpu":
            chunk = max(1, _SUBHALO_CHUNK_BYTES // (x.numel() * x.element_size()))
        for lo in range(0, len(samples), chunk):
            part = samples[lo : lo + chunk]
            ax_part, ay_part = ax[lo : lo + len(part)], ay[lo : lo + len(part)]
            for profile, columns in PROFILE_COLUMNS.items():
                deflection = LENSES.get(profile).deflection
                rows, counts = self._padded(part, profile)
                if profile == "point_mass" and kernels.enabled(x):
                    kernels.add_point_masses(x, y, rows, counts, ax_part, ay_part)
                    continue
                for k in range(rows.shape[1]):
                    images = torch.nonzero(counts > k).squeeze(1)
                    p = {name: rows[images, k, j : j + 1] for j, name in enumerate(columns)}
                    dx, dy = deflection(x, y, p)
                    if len(images) == len(part):
                        ax_part += dx
                        ay_part += dy
                    else:
                        ax_part.index_add_(0, images, dx)
                        ay_part.index_add_(0, images, dy)
        return ax, ay

    def render(self, samples: list[ImageSample], *, noise: bool = True) -> Tensor:
        """Images ``(B, bands, size, size)`` in the instrument's units (see the noise model).

        With ``output: smooth_model_residual``, the noise-free image of each scene without its
        subhalos (in the same units) is subtracted."""
        images = self._render(samples, noise)
        if self.output == "smooth_model_residual":
            smooth = self._render([replace(s, subhalos=Subhalos()) for s in samples], noise=False)
            if noise:
                for b, band in enumerate(self.instrument.bands):
                    p = self._noise_params(samples, b)
                    expected = band.noise.expected(smooth[:, b].reshape(len(samples), -1), p)
                    smooth[:, b] = expected.reshape(smooth[:, b].shape)
            images = images - smooth
        return images

    def _render(self, samples: list[ImageSample], noise: bool) -> Tensor:
        """Each light profile is evaluated once and scaled per band by its colour."""
        inst = self.instrument
        x, y = self._pixel_grid()
        n_lens, n_src = len(self.lenses), len(self.sources)
        specs = [self.class_specs[self.class_names[s.label]] for s in samples]
        lensed = [i for i, spec in enumerate(specs) if spec.lensed_source]
        # (component, params, unit profile, batch rows they cover: None for all, else a subset)
        terms: list[tuple[SourceComponent, dict[str, Tensor], Tensor, Tensor | None]] = []
        if lensed:
            ax, ay = self.deflection(samples)
            bx, by = x - ax, y - ay
            rows = None if len(lensed) == len(samples) else torch.tensor(lensed, device=self.device)
            for j, src in enumerate(self.sources):
                p = self._component_params(samples, n_lens + j)
                unit = src.profile(bx, by, p)
                if rows is not None:
                    p, unit = {k: v[rows] for k, v in p.items()}, unit[rows]
                terms.append((src, p, unit, rows))
        for j, comp in enumerate(self.lens_light):
            p = self._component_params(samples, n_lens + n_src + j)
            terms.append((comp, p, comp.profile(x, y, p), None))
        terms.extend(self._variant_terms(samples, specs, x, y))
        keys = torch.tensor([noise_key(s.seed) for s in samples], dtype=torch.int64, device=self.device)
        n_super = inst.size * inst.supersampling
        out = []
        for b, band in enumerate(inst.bands):
            flux = torch.zeros(len(samples), x.numel(), dtype=self.dtype, device=self.device)
            for comp, p, unit, rows in terms:
                if rows is None:
                    flux = flux + comp.amplitude(p, band) * unit
                else:
                    flux[rows] += comp.amplitude(p, band) * unit
            image = F.bin_pixels(flux.reshape(-1, n_super, n_super), inst.supersampling) * inst.pixel_scale**2
            image = band.convolve(image, inst.pixel_scale)
            if noise:
                p = self._noise_params(samples, b)
                flat = band.noise.apply(
                    image.reshape(len(samples), -1), p, R.stream_key(keys, 100 + b), inst.pixel_scale
                )
                image = flat.reshape(image.shape)
            out.append(image)
        return torch.stack(out, dim=1)

    def _variant_terms(self, samples, specs, x, y):
        """Unit profiles of each image's drawn variant light, one group per (class, variant)."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i, s in enumerate(samples):
            if s.variant >= 0 and specs[i].variants[s.variant].light:
                groups.setdefault((s.label, s.variant), []).append(i)
        terms = []
        for (_, v), rows in groups.items():
            for j, comp in enumerate(specs[rows[0]].variants[v].light):
                values = [samples[i].variant_params[j] for i in rows]
                p = batch_params(values, list(values[0]), self.dtype, self.device)
                terms.append((comp, p, comp.profile(x, y, p), torch.tensor(rows, device=self.device)))
        return terms

    def simulate(
        self, seeds: list[int], labels: list[int], *, noise: bool = True
    ) -> tuple[np.ndarray, list[ImageSample]]:
        """Sample and render; returns float32 numpy images and the samples."""
        samples = [self.sample(s, lab) for s, lab in zip(seeds, labels)]
        with torch.no_grad():
            images = self.render(samples, noise=noise)
        return images.to("cpu", torch.float32).numpy(), samples
