"""The training images' domain: the range of a few statistics of each image as the network sees
it (after the evaluation transforms), stored in the model contract, so that inputs unlike
anything the model was trained on (another instrument, another noise, a wrong pixel scale) are
flagged or refused instead of scored as if they were.

Statistics per image, over all its pixels: the median (the sky level), the robust spread
1.4826 × MAD (the noise) and the 99th percentile (the brightest structure). The domain holds
their 0.5 % and 99.5 % quantiles over (up to 1024) training images.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["STATISTICS", "image_statistics", "fit_domain", "inside_domain", "describe_outside"]

STATISTICS = ("median", "spread", "p99")
#: an input statistic may exceed the training range by this fraction of the range's width, plus
#: 3 / sqrt(n) for a range estimated from n training images (extreme quantiles of few images are rough)
MARGIN = 0.25


def _margin(domain: dict[str, Any]) -> float:
    return MARGIN + 3.0 / np.sqrt(max(int(domain.get("n", 1024)), 1))


def image_statistics(x: Tensor) -> np.ndarray:
    """``(N, C, H, W)`` transformed images -> ``(N, 3)``: median, 1.4826 MAD, 99th percentile."""
    flat = x.detach().float().flatten(1)
    median = flat.median(dim=1, keepdim=True).values
    spread = 1.4826 * (flat - median).abs().median(dim=1).values
    p99 = torch.quantile(flat, 0.99, dim=1)
    return torch.stack([median[:, 0], spread, p99], 1).cpu().numpy().astype(np.float64)


def fit_domain(statistics: np.ndarray) -> dict[str, Any]:
    """The domain of training images from their statistics."""
    return {
        "statistics": list(STATISTICS),
        "low": np.quantile(statistics, 0.005, axis=0).tolist(),
        "high": np.quantile(statistics, 0.995, axis=0).tolist(),
        "n": int(len(statistics)),
    }


def inside_domain(statistics: np.ndarray, domain: dict[str, Any]) -> np.ndarray:
    """Per image: whether every statistic lies within the domain, widened by :data:`MARGIN` and the
    rough edges of a range estimated from few images."""
    low, high = np.asarray(domain["low"]), np.asarray(domain["high"])
    width = np.maximum(high - low, 1e-12) * _margin(domain)
    return ((statistics >= low - width) & (statistics <= high + width)).all(axis=1)


def describe_outside(statistics: np.ndarray, domain: dict[str, Any]) -> str:
    """The statistic most often outside, as 'median 0.0189 against 0.0021-0.0049 in training'."""
    low, high = np.asarray(domain["low"]), np.asarray(domain["high"])
    width = np.maximum(high - low, 1e-12) * _margin(domain)
    out = (statistics < low - width) | (statistics > high + width)
    worst = int(out.sum(0).argmax())
    value = float(np.median(statistics[:, worst]))
    return f"{STATISTICS[worst]} {value:.4g} against {low[worst]:.4g} to {high[worst]:.4g} in training"
