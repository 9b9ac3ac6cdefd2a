"""Reading FITS files: the one module that opens them, checking declared sizes before any pixel is
read, so a header that declares more pixels than the file holds (or than fit in memory) is a clear
error instead of a huge allocation."""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MAX_FITS_BYTES", "FitsContents", "FitsImage", "read_fits", "read_fits_images"]

#: Largest decoded data an HDU may declare (bytes); DeepLense images and cubes are far smaller.
MAX_FITS_BYTES = 2 * 2**30


@dataclass
class FitsContents:
    """The first image HDU with data (``None`` if there is none) and the first binary table's
    columns."""

    image: np.ndarray | None
    table: dict[str, np.ndarray] = field(default_factory=dict)


def _declared_bytes(header) -> int:  # type: ignore[no-untyped-def]
    naxis = int(header.get("NAXIS", 0))
    if naxis == 0:
        return 0
    pixels = math.prod(int(header.get(f"NAXIS{i}", 0)) for i in range(1, naxis + 1))
    return pixels * abs(int(header.get("BITPIX", 8))) // 8 + int(header.get("PCOUNT", 0))


@dataclass
class FitsImage:
    """One image HDU: its number, its ``EXTNAME`` (``""`` for none), its pixels and its header
    (an ``astropy.io.fits.Header``, read as a mapping)."""

    number: int
    name: str
    data: np.ndarray
    header: Any = field(default_factory=dict)


def read_fits_images(
    path: str | Path, hdu: str | int | None = None, max_bytes: int = MAX_FITS_BYTES
) -> list[FitsImage]:
    """Every image HDU with data (or only ``hdu``, a number or an ``EXTNAME``), with the checks of
    :func:`read_fits`; ``ValueError`` (message without the path) when unreadable or when ``hdu``
    is not there."""
    from astropy.io import fits

    found: list[FitsImage] = []

    def take(number: int, item) -> None:  # type: ignore[no-untyped-def]
        name = str(item.header.get("EXTNAME", "")).strip()
        wanted = hdu is None or (str(hdu).isdigit() and int(hdu) == number) or name.upper() == str(hdu).upper()
        if wanted and item.is_image and item.data is not None and item.data.size:
            found.append(FitsImage(number, name, np.array(item.data), item.header))

    _scan(path, max_bytes, take, fits)
    if hdu is not None and not found:
        raise ValueError(f"no image HDU {hdu!r} with data (HDUs are numbered from 0 or named by EXTNAME)")
    return found


def read_fits(path: str | Path, max_bytes: int = MAX_FITS_BYTES) -> FitsContents:
    """Read ``path``; ``ValueError`` (message without the path) for unreadable files and for HDUs
    that declare more data than the file holds or than ``max_bytes``."""
    from astropy.io import fits

    image: np.ndarray | None = None
    table: dict[str, np.ndarray] = {}

    def take(number: int, hdu) -> None:  # type: ignore[no-untyped-def]
        nonlocal image, table
        if image is None and hdu.is_image and hdu.data is not None and hdu.data.size:
            image = np.array(hdu.data)
        elif not table and isinstance(hdu, fits.BinTableHDU) and hdu.data is not None:
            table = {c.name: np.array(hdu.data[c.name]) for c in hdu.columns}

    _scan(path, max_bytes, take, fits)
    return FitsContents(image, table)


def _scan(path: str | Path, max_bytes: int, take, fits) -> None:  # type: ignore[no-untyped-def]
    """Open ``path`` and hand each HDU whose declared size is plausible to ``take(number, hdu)``."""
    path = str(path)
    file_size = os.path.getsize(path)
    compressed = path.lower().endswith((".gz", ".fz", ".bz2"))
    try:
        with warnings.catch_warnings(record=True) as caught, fits.open(path, memmap=False, lazy_load_hdus=True) as hdus:
            warnings.simplefilter("always")
            for number, hdu in enumerate(hdus):
                declared = _declared_bytes(hdu.header)
                tiled = isinstance(hdu, fits.CompImageHDU)
                if declared > max_bytes:
                    raise ValueError(
                        f"HDU {number} declares {declared} bytes of data, more than the {max_bytes} allowed"
                    )
                if not compressed and not tiled and declared > file_size:
                    raise ValueError(f"HDU {number} declares {declared} bytes of data; the file holds {file_size}")
                take(number, hdu)
            truncated = [w for w in caught if "truncated" in str(w.message)]
            if truncated:  # astropy would pad the missing pixels with zeros
                raise ValueError(f"truncated: {truncated[0].message}")
    except (OSError, TypeError, KeyError, IndexError, EOFError, fits.verify.VerifyError) as exc:
        raise ValueError(f"cannot read FITS ({exc})") from None
    except ValueError as exc:
        known = "declares" in str(exc) or str(exc).startswith("truncated")
        raise ValueError(str(exc) if known else f"cannot read FITS ({exc})") from None
