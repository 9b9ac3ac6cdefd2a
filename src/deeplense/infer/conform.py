"""The image contract, checked: bring one input image to what a model reads, or refuse it.

A model's :class:`~deeplense.core.contract.InputSpec` records its bands, pixel scale (arcsec per
pixel), raw image size and pixel units. :class:`Conformer` compares each input with it:

- band count: must match, else a clear error;
- pixel scale: where both are known and differ, the image is resampled to the model's scale by
  exact pixel-area overlap (flux per pixel is conserved; a surface brightness, a ``BUNIT`` per
  arcsec² or steradian, keeps its mean instead); where the input's is unknown and the model's
  known, the caller must say it (``pixel_scale=``);
- size: after resampling, the central ``raw_size`` pixels are cut, or the image is padded with its
  border's median (the sky) to that size;
- units: a model whose transforms do not start with a per-image normalisation (``minmax``,
  ``noise_units``) reads absolute pixel values, so its units must match the input's;
- NaN/Inf pixels: refused, or (``nan="fill"``) replaced by the band's median, or
  (``nan="mask"``) the image is not predicted and its catalogue row is flagged.

What was done is said once per kind (:attr:`Conformer.notes`), never per image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from deeplense.core.contract import InputSpec
from deeplense.core.errors import DataFormatError

__all__ = ["NAN_POLICIES", "Conformer", "ImageFacts", "area_weights", "resample", "scale_free"]

NAN_POLICIES = ("refuse", "fill", "mask")
#: transforms that keep a per-image normalisation's invariance to the pixels' scale and offset
_LINEAR = {"center_crop", "bin", "resize", "dihedral"}
_NORMALISING = {"minmax", "noise_units"}
#: pixel scales closer than this (relative) are the same scale
_SCALE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class ImageFacts:
    """What is known about one input image: ``where`` (for messages), its pixel scale in arcsec
    (``None``: unknown) and its pixel units (``None``: unknown)."""

    where: str
    pixel_scale_arcsec: float | None = None
    units: str | None = None


def scale_free(transforms: list[dict[str, Any]]) -> bool:
    """Whether a pipeline normalises each image before any transform that needs absolute pixel
    values, so that the model cannot tell the pixels' units apart."""
    for node in transforms:
        name = node.get("name")
        if name in _NORMALISING:
            return True
        if name not in _LINEAR:
            return False
    return False


def area_weights(n_in: int, n_out: int, ratio: float) -> np.ndarray:
    """``(n_out, n_in)`` overlap lengths, in input pixels, of output pixels ``ratio`` input pixels
    wide with the input pixels, both grids centred on the same point. Rows sum to ``ratio`` where
    the output pixel lies inside the input."""
    edges_in = np.arange(n_in + 1, dtype=np.float64)
    centre = n_in / 2.0
    edges_out = centre + (np.arange(n_out + 1, dtype=np.float64) - n_out / 2.0) * ratio
    lo = np.maximum(edges_out[:-1, None], edges_in[None, :-1])
    hi = np.minimum(edges_out[1:, None], edges_in[None, 1:])
    return np.clip(hi - lo, 0.0, None)


def resample(image: np.ndarray, scale_in: float, scale_out: float, surface_brightness: bool = False) -> np.ndarray:
    """``(C, H, W)`` pixels of ``scale_in`` arcsec -> the same field in pixels of ``scale_out``,
    by exact area overlap. Flux per pixel is conserved (the sum over the field), or with
    ``surface_brightness`` the mean."""
    ratio = scale_out / scale_in
    _, h, w = image.shape
    out_h, out_w = max(1, round(h / ratio)), max(1, round(w / ratio))
    wy, wx = area_weights(h, out_h, ratio), area_weights(w, out_w, ratio)
    if surface_brightness:
        wy = wy / np.maximum(wy.sum(1, keepdims=True), 1e-12)
        wx = wx / np.maximum(wx.sum(1, keepdims=True), 1e-12)
    return np.einsum("yh,chw,xw->cyx", wy, image.astype(np.float64), wx).astype(np.float32)


def _cut_or_pad(image: np.ndarray, size: int) -> np.ndarray:
    c, h, w = image.shape
    if h == size and w == size:
        return image
    border = np.concatenate([image[:, 0], image[:, -1], image[:, :, 0], image[:, :, -1]], axis=1)
    out = np.empty((c, size, size), np.float32)
    out[:] = np.median(border, axis=1)[:, None, None]
    y0, x0 = (h - size) // 2, (w - size) // 2
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + size, h), min(x0 + size, w)
    out[:, ys - y0 : ye - y0, xs - x0 : xe - x0] = image[:, ys:ye, xs:xe]
    return out


def _same_units(a: str, b: str) -> bool:
    def norm(u: str) -> str:
        u = u.strip().lower().replace(" ", "").replace("electrons", "e-").replace("electron", "e-")
        return u.replace("/sec", "/s").replace("s-1", "/s").replace("e-.", "e-")

    return norm(a) == norm(b)


class Conformer:
    """Checks and conforms images to a model's input spec (see the module docstring);
    ``check_units=False`` for inputs that carry no units (arrays handed over in Python)."""

    def __init__(
        self,
        spec: InputSpec,
        pixel_scale: float | None = None,
        pixel_units: str | None = None,
        nan: str = "refuse",
        check_units: bool = True,
    ):
        if nan not in NAN_POLICIES:
            raise ValueError(f"nan must be one of {NAN_POLICIES}, got {nan!r}")
        if pixel_scale is not None and not 0 < pixel_scale < 100:
            raise ValueError(f"pixel_scale must be in (0, 100) arcsec, got {pixel_scale}")
        self.spec, self.nan = spec, nan
        self.pixel_scale, self.pixel_units = pixel_scale, pixel_units
        self.check_units = check_units and not scale_free(spec.transforms)
        self.notes: dict[str, str] = {}

    def _note(self, kind: str, text: str) -> None:
        self.notes.setdefault(kind, text)

    def __call__(self, image: np.ndarray, facts: ImageFacts) -> tuple[np.ndarray, int]:
        """``(C, H, W)`` -> the image the model reads and its number of non-finite pixels; raises
        :class:`DataFormatError` naming ``facts.where`` and the field when the image cannot be
        conformed. With ``nan="mask"`` an image with non-finite pixels comes back unchanged."""
        spec, where = self.spec, facts.where
        if image.ndim != 3:
            raise DataFormatError(f"{where}: expected one image (C, H, W), got shape {tuple(image.shape)}")
        if image.shape[0] != spec.in_chans:
            bands = f" {spec.bands}" if spec.bands else ""
            raise DataFormatError(
                f"{where}: {image.shape[0]} band(s); the model reads {spec.in_chans}{bands} (field: bands)"
            )
        image = np.asarray(image, np.float32)
        bad = ~np.isfinite(image)
        n_bad = int(bad.sum())
        if n_bad:
            if self.nan == "refuse":
                raise DataFormatError(
                    f"{where}: {n_bad} NaN/Inf pixel(s); pass --nan fill (band median) or --nan mask (skip and flag)"
                )
            if self.nan == "mask":
                return image, n_bad
            image = image.copy()
            for band in range(image.shape[0]):
                finite = image[band][~bad[band]]
                image[band][bad[band]] = np.median(finite) if finite.size else 0.0
        self._check_units(facts)
        image = self._rescale(image, facts)
        if spec.raw_size is not None and image.shape[1:] != (spec.raw_size, spec.raw_size):
            h, w = image.shape[1:]
            verb = "cut" if h >= spec.raw_size and w >= spec.raw_size else "padded with the border median"
            self._note("size", f"{h}x{w} pixel images {verb} to the model's {spec.raw_size}x{spec.raw_size}")
            image = _cut_or_pad(image, spec.raw_size)
        return image, n_bad

    def _check_units(self, facts: ImageFacts) -> None:
        model_units = self.spec.pixel_units[0] if self.spec.pixel_units else None
        given = self.pixel_units or facts.units
        if not self.check_units or model_units is None:
            return
        if given is None:
            raise DataFormatError(
                f"{facts.where}: pixel units unknown (no BUNIT); the model reads absolute pixel values in "
                f"{model_units!r}: pass --pixel-units if they are (field: BUNIT)"
            )
        if not _same_units(given, model_units):
            raise DataFormatError(f"{facts.where}: pixels in {given!r}, the model reads {model_units!r} (field: BUNIT)")

    def _rescale(self, image: np.ndarray, facts: ImageFacts) -> np.ndarray:
        model_scale = self.spec.pixel_scale_arcsec
        scale = self.pixel_scale or facts.pixel_scale_arcsec
        if model_scale is None:
            return image
        if scale is None:
            raise DataFormatError(
                f"{facts.where}: pixel scale unknown (no CD/CDELT/PIXSCALE in the header); the model reads "
                f"{model_scale:g} arcsec/pixel: pass --pixel-scale (field: pixel scale)"
            )
        if abs(scale / model_scale - 1) <= _SCALE_TOLERANCE:
            return image
        units = (self.pixel_units or facts.units or "").lower()
        surface = any(tag in units for tag in ("/arcsec", "/sr", "arcsec-2", "sr-1"))
        kept = "mean surface brightness" if surface else "flux"
        self._note("scale", f"resampled from {scale:g} to the model's {model_scale:g} arcsec/pixel ({kept} conserved)")
        return resample(image, scale, model_scale, surface_brightness=surface)
