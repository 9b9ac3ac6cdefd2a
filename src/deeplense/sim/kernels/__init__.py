"""Compiled CPU kernels (numba) for the simulator's hot loops.

torch's eager CPU ops make one pass over memory per arithmetic step, so a sum of K point-mass
deflections over N pixels costs about 11 K full passes. The kernels here work one pixel at a time,
which is what makes the CPU engine several times faster than lenstronomy (docs/benchmarks.md).
Each kernel has a torch twin, the reference and the path on other devices:

- the render kernels (point masses, profiles, PSF) do the twin's arithmetic in the same order and
  precision and call torch for ``sqrt`` and every transcendental function, so their results are
  bit for bit the twin's, and data sets written without them regenerate exactly;
- the noise kernels implement noise scheme 2 (:mod:`deeplense.sim.rng`) with the C library's
  ``log``/``exp``/``sqrt``; the twin agrees to float rounding.

Kernels are compiled on first use and cached on disk (``NUMBA_CACHE_DIR`` moves the cache).
``DEEPLENSE_KERNELS=0`` turns them off (the torch twins run instead).
"""

from deeplense.sim.kernels.common import enabled, fusable
from deeplense.sim.kernels.deflection import (
    add_point_masses,
    line_segment_deflection,
    nfw_deflection,
    sie_deflection,
    tnfw_deflection,
    tnfwc_deflection,
)
from deeplense.sim.kernels.light import sersic_elliptical
from deeplense.sim.kernels.noise import LOG_FACTORIAL, deeplense_counts, normal_pairs, poisson
from deeplense.sim.kernels.psf import gaussian_blur

__all__ = [
    "enabled",
    "fusable",
    "add_point_masses",
    "gaussian_blur",
    "sie_deflection",
    "line_segment_deflection",
    "nfw_deflection",
    "tnfw_deflection",
    "tnfwc_deflection",
    "sersic_elliptical",
    "normal_pairs",
    "poisson",
    "deeplense_counts",
    "LOG_FACTORIAL",
]
