"""Instruments: pixel grid, PSF per band and noise per band.

Observing presets (``preset: euclid_vis`` and so on) take their numbers from lenstronomy's
``SimulationAPI.ObservationConfig`` so that they stay identical to the field's reference code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from deeplense.core.config import ConfigError, check_keys, whole_number
from deeplense.core.registry import Registry
from deeplense.sim import kernels
from deeplense.sim import rng as R
from deeplense.sim.components import Component
from deeplense.sim.cosmology import LensingContext
from deeplense.sim.priors import Param
from deeplense.sim.psfs import PSF, build_psf

__all__ = ["NOISE_MODELS", "OBSERVING_PRESETS", "Band", "Instrument", "observing_preset"]

NOISE_MODELS: Registry[type[NoiseModel]] = Registry("noise model")
OBSERVING_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "euclid_vis": ("Euclid", {"band": "VIS", "psf_type": "GAUSSIAN", "coadd_years": 6}),
    "hst_wfc3_f160w": ("HST", {"band": "WFC3_F160W", "psf_type": "GAUSSIAN"}),
    "lsst_g": ("LSST", {"band": "g", "psf_type": "GAUSSIAN", "coadd_years": 10}),
    "lsst_r": ("LSST", {"band": "r", "psf_type": "GAUSSIAN", "coadd_years": 10}),
    "lsst_i": ("LSST", {"band": "i", "psf_type": "GAUSSIAN", "coadd_years": 10}),
}


def observing_preset(name: str) -> dict[str, Any]:
    """lenstronomy's single-band observation numbers for a named preset."""
    if name not in OBSERVING_PRESETS:
        raise ConfigError("preset", f"unknown observing preset {name!r}; available: {sorted(OBSERVING_PRESETS)}")
    module, kwargs = OBSERVING_PRESETS[name]
    import importlib

    cls = getattr(importlib.import_module(f"lenstronomy.SimulationAPI.ObservationConfig.{module}"), module)
    return cls(**kwargs).kwargs_single_band()


class NoiseModel(Component):
    """Adds noise to noiseless images ``(B, N)`` given per-image parameters and noise keys.

    Option ``generator`` picks the counter-based noise scheme (:mod:`deeplense.sim.rng`): 2, the
    default, or 1, which data sets written before scheme 2 existed record implicitly (their
    ``config.yaml`` has no ``generator``; :func:`deeplense.sim.writer.resolved_sim` reads them as 1).
    """

    options = {"generator": 2}

    def validate(self):
        super().validate()
        if "generator" in self.options and self.settings["generator"] not in R.SCHEMES:
            raise ConfigError(f"{self.where}.options.generator", f"expected one of {R.SCHEMES}")

    @property
    def scheme(self) -> int:
        """The noise scheme of :mod:`deeplense.sim.rng` this model draws with."""
        return int(self.settings["generator"])

    @property
    def pixel_unit(self) -> str:
        """Unit of the pixel values this model returns."""
        return "flux/pixel"

    def apply(self, model: Tensor, p: dict[str, Tensor], keys: Tensor, pixel_scale: float) -> Tensor:
        raise NotImplementedError

    def expected(self, model: Tensor, p: dict[str, Tensor]) -> Tensor:
        """The noise-free image ``model`` (flux per pixel) in the units :meth:`apply` returns."""
        return model


@NOISE_MODELS.register("none")
class NoNoise(NoiseModel):
    """Noiseless images in flux units per pixel."""

    kind = "none"
    options = {}

    def apply(self, model, p, keys, pixel_scale):
        return model


@NOISE_MODELS.register("deeplense_counts")
class DeepLenseCounts(NoiseModel):
    """The noise of the public DeepLense Model I files, which hold integer photon counts.

    ``Poisson(clip(t (model + n_phot + n_bkg), 0))`` with ``n_phot ~ N(0, sqrt(|model| / t))`` and
    ``n_bkg ~ N(0, background_rms)``: photon noise enters twice (pixel variance about
    ``2 C + (background_rms t)^2`` for expected counts C), as in the released data. Option
    ``double_poisson: false`` drops the Gaussian photon term (a single, physical Poisson draw).
    Scheme 2 draws the two independent Gaussians as one of the summed variance (the same law).
    """

    kind = "deeplense_counts"
    pixel_unit = "counts"
    params = (
        Param("exposure_time", "s", 1e-3, 1e7, None, "exposure time t"),
        Param("background_rms", "flux/pixel", 0, 1e6, 0.01, "Gaussian background sigma"),
    )
    options = {**NoiseModel.options, "double_poisson": True}

    def apply(self, model, p, keys, pixel_scale):
        t, n = p["exposure_time"], model.shape[1]
        if self.scheme == 2:
            normal_key, poisson_key = R.stream_key(keys, 0), R.stream_key(keys, 2)
            if kernels.fusable((model,), (t, p["background_rms"])):
                double = self.settings["double_poisson"]
                return kernels.deeplense_counts(model, t, p["background_rms"], double, (normal_key, poisson_key))
            variance = p["background_rms"] ** 2
            if self.settings["double_poisson"]:
                variance = variance + model.abs() / t
            z = R.normal(normal_key, n, dtype=model.dtype, scheme=2)
            lam = (t * (model + z * torch.sqrt(variance))).clamp(min=0)
            return R.poisson(poisson_key, lam, scheme=2).to(model.dtype)
        signal = model + R.normal(R.stream_key(keys, 1), n, dtype=model.dtype) * p["background_rms"]
        if self.settings["double_poisson"]:
            signal = signal + R.normal(R.stream_key(keys, 0), n, dtype=model.dtype) * torch.sqrt(model.abs() / t)
        return R.poisson(R.stream_key(keys, 2), (t * signal).clamp(min=0)).to(model.dtype)

    def expected(self, model, p):
        return p["exposure_time"] * model


@NOISE_MODELS.register("ccd")
class CCDNoise(NoiseModel):
    """CCD noise in lenstronomy ``SimAPI`` conventions; images in electrons per second.

    Background sigma ``sqrt(n_exp RN^2 + t_tot sky Delta^2) / t_tot`` with sky in counts/s/arcsec^2
    from ``sky_brightness`` and the zero point; photon noise of the source with ``t_tot = n_exp t``.
    ``approximation: gaussian`` draws both as Gaussians (as lenstronomy does); ``poisson`` draws
    source plus sky counts from a Poisson law, subtracts the sky and adds Gaussian read noise.
    ``released_files: true`` reproduces the public Model II/III files: the noise is never added and
    the image is twice the noiseless model.
    """

    kind = "ccd"
    params = (
        Param("exposure_time", "s", 1e-3, 1e7, None, "exposure time per exposure"),
        Param("num_exposures", "", 1, 1e5, 1, "number of co-added exposures"),
        Param("sky_brightness", "mag/arcsec^2", 0, 40, None, "sky surface brightness"),
        Param("magnitude_zero_point", "mag", 0, 40, None, "magnitude giving 1 electron per second"),
        Param("read_noise", "e-", 0, 1e4, None, "read noise per exposure"),
        Param("ccd_gain", "e-/ADU", 0.01, 100, 1.0, "gain (used for ADU output only)"),
    )
    options = {**NoiseModel.options, "approximation": "gaussian", "released_files": False, "unit": "e-"}

    @property
    def pixel_unit(self) -> str:
        return "e-/s" if self.settings["unit"] == "e-" else "ADU/s"

    def validate(self):
        super().validate()
        if self.settings["approximation"] not in ("gaussian", "poisson"):
            raise ConfigError(f"{self.where}.options.approximation", "expected 'gaussian' or 'poisson'")
        if self.settings["unit"] not in ("e-", "ADU"):
            raise ConfigError(f"{self.where}.options.unit", "expected 'e-' or 'ADU'")

    def apply(self, model, p, keys, pixel_scale):
        if self.settings["released_files"]:
            image = 2 * model
        else:
            n = model.shape[1]
            t_tot = p["exposure_time"] * p["num_exposures"]
            sky = 10 ** (-0.4 * (p["sky_brightness"] - p["magnitude_zero_point"])) * pixel_scale**2
            read_var = p["num_exposures"] * p["read_noise"] ** 2
            if self.settings["approximation"] == "gaussian":
                sigma_bkg = torch.sqrt(read_var + t_tot * sky) / t_tot
                sigma_src = torch.sqrt(model.clamp(min=0) * t_tot) / t_tot
                z_bkg = R.normal(R.stream_key(keys, 0), n, dtype=model.dtype, scheme=self.scheme)
                z_src = R.normal(R.stream_key(keys, 1), n, dtype=model.dtype, scheme=self.scheme)
                image = model + z_bkg * sigma_bkg + z_src * sigma_src
            else:
                lam = (model.clamp(min=0) + sky) * t_tot
                counts = R.poisson(R.stream_key(keys, 2), lam, scheme=self.scheme).to(model.dtype)
                read = R.normal(R.stream_key(keys, 0), n, dtype=model.dtype, scheme=self.scheme) * torch.sqrt(read_var)
                image = (counts - sky * t_tot + read) / t_tot
        if self.settings["unit"] == "ADU":
            image = image / p["ccd_gain"]
        return image

    def expected(self, model, p):
        image = 2 * model if self.settings["released_files"] else model
        return image / p["ccd_gain"] if self.settings["unit"] == "ADU" else image


@dataclass
class Band:
    """One filter: name, PSF, noise model and magnitude zero point (or None)."""

    name: str
    psf: PSF
    noise: NoiseModel
    zero_point: float | None

    def convolve(self, images: Tensor, pixel_scale: float) -> Tensor:
        return self.psf.convolve(images, pixel_scale)


class Instrument:
    """Square pixel grid shared by every band, plus per-band PSF and noise."""

    def __init__(self, node: dict[str, Any], where: str, context: LensingContext):
        check_keys(node, {"size", "pixel_scale", "supersampling", "bands"}, where)
        bands_node = node.get("bands")
        if not isinstance(bands_node, list) or not bands_node:
            raise ConfigError(f"{where}.bands", "expected a non-empty list of bands")
        self.size = whole_number(node.get("size", 0), f"{where}.size")
        if not 4 <= self.size <= 4096:
            raise ConfigError(f"{where}.size", f"image size must be in [4, 4096] pixels, got {self.size}")
        self.supersampling = whole_number(node.get("supersampling", 1), f"{where}.supersampling")
        if not 1 <= self.supersampling <= 16:
            raise ConfigError(f"{where}.supersampling", f"expected 1..16, got {self.supersampling}")
        self.bands: list[Band] = []
        preset_scale = None
        for i, band_node in enumerate(bands_node):
            bw = f"{where}.bands.{i}"
            check_keys(band_node, {"name", "preset", "psf", "noise", "magnitude_zero_point"}, bw)
            preset = observing_preset(band_node["preset"]) if "preset" in band_node else {}
            preset_scale = preset.get("pixel_scale", preset_scale)
            psf_defaults = {"kind": "gaussian", "fwhm": preset["seeing"]} if preset else {}
            psf = build_psf(band_node.get("psf"), f"{bw}.psf", psf_defaults)
            noise_node = dict(band_node.get("noise") or {"kind": "none"})
            noise_kind = noise_node.get("kind")
            if noise_kind not in NOISE_MODELS:
                raise ConfigError(
                    f"{bw}.noise.kind", f"unknown noise model {noise_kind!r}; available: {NOISE_MODELS.names()}"
                )
            noise_cls = NOISE_MODELS.get(noise_kind)
            if preset and noise_kind == "ccd":
                declared = {p.name for p in noise_cls.params}
                noise_node["params"] = {
                    **{k: v for k, v in preset.items() if k in declared},
                    **(noise_node.get("params") or {}),
                }
            name = str(
                band_node.get("name", preset and OBSERVING_PRESETS[band_node["preset"]][1]["band"] or f"band{i}")
            )
            noise_node.setdefault("name", "noise" if len(bands_node) == 1 else f"noise_{name}")
            noise = noise_cls(noise_node, f"{bw}.noise", context)
            zp = band_node.get("magnitude_zero_point", preset.get("magnitude_zero_point"))
            self.bands.append(Band(name, psf, noise, None if zp is None else float(zp)))
        self.pixel_scale = float(node.get("pixel_scale", preset_scale or 0.0))
        if not 0 < self.pixel_scale < 10:
            raise ConfigError(
                f"{where}.pixel_scale", f"expected a pixel scale in (0, 10) arcsec, got {self.pixel_scale}"
            )

    @property
    def band_names(self) -> list[str]:
        return [b.name for b in self.bands]

    def to_yaml(self) -> dict[str, Any]:
        bands = []
        for band in self.bands:
            entry: dict[str, Any] = {"name": band.name, "psf": band.psf.to_yaml(), "noise": band.noise.to_yaml()}
            if band.zero_point is not None:
                entry["magnitude_zero_point"] = band.zero_point
            bands.append(entry)
        return {"size": self.size, "pixel_scale": self.pixel_scale, "supersampling": self.supersampling, "bands": bands}
