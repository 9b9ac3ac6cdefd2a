"""Turn one stored array (any of the per-file variants in circulation) into a CxHxW image.

Variants: a 2-D image; ``(C, H, W)`` or ``(H, W, C)`` with a few bands; a flat ``(H*W,)`` or
``(C*H*W,)`` array; a row or column vector ``(1, H*W)``; a flat array or an image with one extra
element or row holding the label (``(H*W + 1,)``, ``(H + 1, W)``); the pickled object array
``[image, value]`` of the DeepLense axion files (the value becomes a regression target).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Decoded", "decode_array", "decoded_shape", "MAX_BANDS"]

MAX_BANDS = 16


@dataclass
class Decoded:
    image: np.ndarray  # (C, H, W) float32
    value: float | None = None  # value stored next to the image (object arrays)
    stored_label: float | None = None  # label stored inside the array (appended element or row)


def _square(n: int) -> int | None:
    s = math.isqrt(n)
    return s if s > 1 and s * s == n else None


def decoded_shape(shape: tuple[int, ...]) -> tuple[str, tuple[int, int, int]]:
    """How an array of ``shape`` decodes: ``(kind, (C, H, W))``; ``ValueError`` if it cannot."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2 and 1 in shape and shape != (1, 1):
        shape = (max(shape),)  # row or column vector
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) == 1:
        n = shape[0]
        if (s := _square(n)) is not None:
            return "flat", (1, s, s)
        if (s := _square(n - 1)) is not None:
            return "flat+label", (1, s, s)
        for c in (3, 5, 4, 2):
            if n % c == 0 and (s := _square(n // c)) is not None:
                return "flat", (c, s, s)
        raise ValueError(f"a flat array of {n} values is not a square image")
    if len(shape) == 2:
        h, w = shape
        if h == w + 1:
            return "image+label_row", (1, w, w)
        return "image", (1, h, w)
    if len(shape) == 3:
        a, b, c = shape
        if a <= MAX_BANDS and a < b and a < c:
            return "chw", (a, b, c)
        if c <= 4 and c < a and c < b:
            return "hwc", (c, a, b)
        raise ValueError(f"cannot tell the band axis of an array of shape {shape}")
    raise ValueError(f"cannot read an image from an array of shape {shape}")


def decode_array(array: np.ndarray) -> Decoded:
    """Decode one stored array; ``ValueError`` with the reason when it is not an image."""
    value = None
    if array.dtype.hasobject:
        if array.shape == ():
            array = array.item()
            if not isinstance(array, np.ndarray):
                raise ValueError(f"object array holds {type(array).__name__}, not an image")
            return decode_array(array)
        flat = array.reshape(-1)
        if len(flat) != 2 or not isinstance(flat[0], np.ndarray):
            raise ValueError(f"object array of shape {array.shape} is not [image, value]")
        try:
            value = float(np.asarray(flat[1]).reshape(-1)[0])
        except (TypeError, ValueError, IndexError):
            raise ValueError(f"the value stored with the image is not a number: {flat[1]!r}") from None
        array = flat[0]
        if array.dtype.hasobject:
            raise ValueError("nested object arrays are not images")
    if array.size == 0:
        raise ValueError("empty array")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(f"dtype {array.dtype} is not numeric")
    if np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"dtype {array.dtype} is complex; store the real image (or its modulus) instead")
    kind, (c, h, w) = decoded_shape(array.shape)
    stored_label = None
    if kind == "flat":
        image = array.reshape(c, h, w)
    elif kind == "flat+label":
        flat = array.reshape(-1)
        image, stored_label = flat[:-1].reshape(1, h, w), float(flat[-1])
    elif kind == "image+label_row":
        image, stored_label = array[:w].reshape(1, h, w), float(array[w, 0])
    elif kind == "image":
        image = array.reshape(1, h, w)
    elif kind == "chw":
        image = array.reshape(c, h, w)
    else:  # hwc
        image = np.moveaxis(array.reshape(h, w, c), -1, 0)
    return Decoded(np.ascontiguousarray(image, dtype=np.float32), value, stored_label)
