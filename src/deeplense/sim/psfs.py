"""Point-spread functions by name (``instrument.bands[i].psf.kind``): none, Gaussian, pixel kernel.

Config node: ``{kind: gaussian, fwhm: 0.087, truncation: 4}`` (FWHM in arcsec, truncation in
sigma) or ``{kind: pixel, kernel: PATH.npy | [[...]]}`` (odd-sized, normalised to unit sum).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from deeplense.core.config import ConfigError, check_keys
from deeplense.core.registry import Registry
from deeplense.sim import functional as F

__all__ = ["PSFS", "PSF", "build_psf"]

PSFS: Registry[type[PSF]] = Registry("PSF")

_KEYS = {"kind", "fwhm", "truncation", "kernel"}


class PSF:
    """A band's PSF: ``convolve(images, pixel_scale)`` and its resolved config node."""

    kind: str

    def __init__(self, node: dict[str, Any], where: str):
        pass

    def convolve(self, images: Tensor, pixel_scale: float) -> Tensor:
        """Images ``(..., H, W)`` sampled at ``pixel_scale`` arcsec/pixel, convolved."""
        return images

    def to_yaml(self) -> dict[str, Any]:
        return {"kind": self.kind}


@PSFS.register("none")
class NoPSF(PSF):
    """No blurring."""

    kind = "none"


@PSFS.register("gaussian")
class GaussianPSF(PSF):
    """Circular Gaussian of ``fwhm`` arcsec, truncated at ``truncation`` sigma (lenstronomy's
    convention)."""

    kind = "gaussian"

    def __init__(self, node: dict[str, Any], where: str):
        self.fwhm = float(node.get("fwhm", 0.0))
        self.truncation = float(node.get("truncation", 5.0))
        if not self.fwhm > 0:
            raise ConfigError(f"{where}.fwhm", f"a Gaussian PSF needs fwhm > 0 arcsec, got {self.fwhm}")

    def convolve(self, images: Tensor, pixel_scale: float) -> Tensor:
        sigma_px = self.fwhm / (2 * math.sqrt(2 * math.log(2))) / pixel_scale
        return F.gaussian_blur(images, sigma_px, self.truncation)

    def to_yaml(self) -> dict[str, Any]:
        return {"kind": self.kind, "fwhm": self.fwhm, "truncation": self.truncation}


@PSFS.register("pixel")
class PixelPSF(PSF):
    """A sampled kernel (a ``.npy`` file or a nested list), odd-sized, normalised to unit sum."""

    kind = "pixel"

    def __init__(self, node: dict[str, Any], where: str):
        source = node.get("kernel")
        try:
            kernel = np.load(Path(source)) if isinstance(source, str) else np.asarray(source, dtype=float)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{where}.kernel", f"cannot read PSF kernel {source!r}: {exc}") from None
        if kernel.ndim != 2 or kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0 or not np.isfinite(kernel).all():
            raise ConfigError(f"{where}.kernel", f"expected a finite 2-D kernel of odd size, got shape {kernel.shape}")
        self.kernel = kernel / kernel.sum()

    def convolve(self, images: Tensor, pixel_scale: float) -> Tensor:
        return F.kernel_convolve(images, torch.as_tensor(self.kernel, device=images.device))

    def to_yaml(self) -> dict[str, Any]:
        return {"kind": self.kind, "kernel": self.kernel.tolist()}


def build_psf(node: dict[str, Any] | None, where: str, defaults: dict[str, Any]) -> PSF:
    """The PSF of a band's config node (over the observing preset's ``defaults``)."""
    node = {**defaults, **(node or {})}
    check_keys(node, _KEYS, where)
    kind = node.get("kind", "gaussian")
    if kind not in PSFS:
        raise ConfigError(f"{where}.kind", f"expected one of {PSFS.names()}, got {kind!r}")
    return PSFS.create(kind, node, where)
