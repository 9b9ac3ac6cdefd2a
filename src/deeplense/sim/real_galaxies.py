"""Real galaxy morphologies cut from the Hubble eXtreme Deep Field, as source light profiles.

The image is scikit-image's copy of the XDF release image (``skimage.data.hubble_deep_field``,
872×1000 pixels of about 0.14″, an 8-bit colour composite): its pixel values carry the release's
display stretch, not calibrated flux, so a stamp gives a galaxy's *shape* (arms, clumps,
asymmetries, mergers) and the simulation sets its flux (``amp`` or ``magnitude``).

The catalogue (:func:`xdf_stamps`) is made the same way every time:

1. the luminance ``0.299 R + 0.587 G + 0.114 B``, its background and noise from sigma-clipped
   statistics (astropy, 3σ);
2. detection: pixels of the image smoothed by a Gaussian of 1 pixel above background + 3σ,
   grouped into 8-connected segments (scipy);
3. a galaxy is kept when its segment has at least ``min_area`` pixels, fits inside the stamp
   with a margin of 2 pixels, and does not touch the image border;
4. its stamp: ``size``×``size`` pixels centred on the segment's flux-weighted centroid, holding the
   background-subtracted pixels of its own segment grown by 2 pixels (other galaxies and sky
   zeroed), clipped at zero and divided by its maximum;
5. stamps are ordered by total flux, brightest first.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["xdf_stamps"]


@lru_cache(maxsize=4)
def xdf_stamps(size: int = 32, min_area: int = 30) -> np.ndarray:
    """``(n, size, size)`` float32 galaxy stamps of peak 1 (see the module docstring)."""
    from astropy.stats import sigma_clipped_stats
    from scipy import ndimage
    from skimage.data import hubble_deep_field

    rgb = hubble_deep_field().astype(np.float32)
    gray = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    _, background, sigma = sigma_clipped_stats(gray, sigma=3.0)
    light = gray - np.float32(background)
    mask = ndimage.gaussian_filter(light, 1.0) > 3 * sigma
    segments, n = ndimage.label(mask, structure=np.ones((3, 3)))
    half = size // 2
    stamps = []
    for label, box in enumerate(ndimage.find_objects(segments), start=1):
        if box is None:
            continue
        rows, cols = box
        height, width = rows.stop - rows.start, cols.stop - cols.start
        touches = rows.start == 0 or cols.start == 0 or rows.stop == gray.shape[0] or cols.stop == gray.shape[1]
        own = segments[box] == label
        if touches or own.sum() < min_area or max(height, width) > size - 4:
            continue
        weights = np.clip(light[box], 0, None) * own
        cy, cx = ndimage.center_of_mass(weights)
        cy, cx = int(round(rows.start + cy)), int(round(cols.start + cx))
        top, left = cy - half, cx - half
        if top < 0 or left < 0 or top + size > gray.shape[0] or left + size > gray.shape[1]:
            continue
        window = (slice(top, top + size), slice(left, left + size))
        keep = ndimage.binary_dilation(segments[window] == label, iterations=2)
        stamp = np.clip(light[window], 0, None) * keep
        if stamp.max() > 0:
            stamps.append(stamp / stamp.max())
    stamps.sort(key=lambda s: -float(s.sum()))
    return np.stack(stamps).astype(np.float32)
