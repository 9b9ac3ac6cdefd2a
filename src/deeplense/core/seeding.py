"""Reproducible seeds: one base seed per run, one derived seed per image.

Image ``i`` of a run with base seed ``s`` gets ``numpy.random.SeedSequence([s, i])``; its first
64-bit word is stored with the image and alone determines everything random about it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["image_seed", "image_rng", "noise_key"]

_NOISE_SALT = 0x6E6F697365  # "noise"


def image_seed(base_seed: int, index: int) -> int:
    """The 64-bit seed of image ``index`` in a run with ``base_seed`` (both >= 0)."""
    if base_seed < 0 or index < 0:
        raise ValueError(f"seeds and indices are non-negative, got seed={base_seed}, index={index}")
    return int(np.random.SeedSequence([base_seed, index]).generate_state(1, dtype=np.uint64)[0])


def image_rng(seed: int) -> np.random.Generator:
    """Generator for an image's sampled parameters."""
    return np.random.default_rng(seed)


def noise_key(seed: int) -> int:
    """Signed 64-bit key of an image's pixel-noise streams (see :mod:`deeplense.sim.rng`)."""
    word = int(np.random.SeedSequence([seed, _NOISE_SALT]).generate_state(1, dtype=np.uint64)[0])
    return word - (1 << 64) if word >= 1 << 63 else word
