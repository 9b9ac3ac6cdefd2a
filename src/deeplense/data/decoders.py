"""Decoders of single image files (``.npy``, PNG/JPEG, FITS) into ``(C, H, W)`` float32 arrays,
by file suffix (:data:`DECODERS`). No decoder runs code from a file: ``.npy`` object arrays go
through the restricted unpickler of :mod:`deeplense.data.safe_npy`."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from deeplense.data.decode import MAX_BANDS, Decoded, decode_array, decoded_shape
from deeplense.data.fits_files import read_fits
from deeplense.data.safe_npy import load_npy, read_header

__all__ = ["NPY", "PNG", "FITS", "IMAGE_SUFFIXES", "DECODERS", "suffix_of", "is_image_file", "peek", "fits_data"]

NPY = (".npy",)
PNG = (".png", ".jpg", ".jpeg")
FITS = (".fits", ".fit", ".fts", ".fits.gz")
IMAGE_SUFFIXES = NPY + PNG + FITS


def suffix_of(path: str) -> str:
    name = path.lower()
    return ".fits.gz" if name.endswith(".fits.gz") else os.path.splitext(name)[1]


def is_image_file(name: str) -> bool:
    return suffix_of(name) in IMAGE_SUFFIXES and not name.startswith(".")


def load_png(path: str) -> Decoded:
    """PNG/JPEG as (C, H, W) float32 in [0, 1] (8- or 16-bit); alpha dropped."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            array = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"cannot read the image ({exc})") from None
    scale = 65535.0 if array.dtype == np.uint16 or array.max(initial=0) > 255 else 255.0
    if array.ndim == 3 and array.shape[-1] == 4:
        array = array[..., :3]
    image = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
    return Decoded(np.ascontiguousarray(image, dtype=np.float32) / np.float32(scale))


def fits_data(path: str) -> np.ndarray:
    """The first image HDU's data (sizes checked before reading, see :mod:`deeplense.data.fits_files`)."""
    contents = read_fits(path)
    if contents.image is None:
        raise ValueError("no image HDU with data")
    return contents.image


def load_fits(path: str) -> Decoded:
    """One image per FITS file: the first image HDU, 2-D or (C, H, W)."""
    data = fits_data(path)
    if data.ndim == 3 and data.shape[0] > MAX_BANDS:
        raise ValueError(f"holds a cube of {data.shape[0]} images; open the file itself as a cube")
    return decode_array(data.astype(np.float32))


def load_npy_image(path: str) -> Decoded:
    return decode_array(load_npy(path))


#: The decoder of each file suffix.
DECODERS: dict[str, Callable[[str], Decoded]] = {
    **dict.fromkeys(NPY, load_npy_image),
    **dict.fromkeys(PNG, load_png),
    **dict.fromkeys(FITS, load_fits),
}


def peek(path: str) -> tuple[tuple[int, int, int] | None, bool]:
    """Decoded shape from the header alone (npy), and whether the file must be read for its
    metadata (object arrays and labelled arrays). ``ValueError`` for truncated or unreadable headers."""
    if suffix_of(path) not in NPY:
        return None, False
    header = read_header(path)
    if header.dtype.hasobject:
        return None, True
    expected = header.expected_size
    if expected is not None and header.file_size < expected:
        raise ValueError(f"truncated ({header.file_size} bytes, the header's {header.shape} needs {expected})")
    kind, shape = decoded_shape(header.shape)
    return shape, kind in ("flat+label", "image+label_row")
