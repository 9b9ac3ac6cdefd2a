"""Reading FITS files: the one module that opens them, checking declared sizes before any pixel is
read, so a header that declares more pixels than the file holds (or than fit in memory) is a clear
error instead of a huge allocation."""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["MAX_FITS_BYTES", "FitsContents", "read_fits"]

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


def read_fits(path: str | Path, max_bytes: int = MAX_FITS_BYTES) -> FitsContents:
    """Read ``path``; ``ValueError`` (message without the path) for unreadable files and for HDUs
    that declare more data than the file holds or than ``max_bytes``."""
    from astropy.io import fits

    path = str(path)
    file_size = os.path.getsize(path)
    compressed = path.lower().endswith((".gz", ".fz", ".bz2"))
    image: np.ndarray | None = None
    table: dict[str, np.ndarray] = {}
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
                if image is None and hdu.is_image and hdu.data is not None and hdu.data.size:
                    image = np.array(hdu.data)
                elif not table and isinstance(hdu, fits.BinTableHDU) and hdu.data is not None:
                    table = {c.name: np.array(hdu.data[c.name]) for c in hdu.columns}
            truncated = [w for w in caught if "truncated" in str(w.message)]
            if truncated:  # astropy would pad the missing pixels with zeros
                raise ValueError(f"truncated: {truncated[0].message}")
    except (OSError, TypeError, KeyError, IndexError, EOFError) as exc:
        raise ValueError(f"cannot read FITS ({exc})") from None
    except ValueError as exc:
        known = "declares" in str(exc) or str(exc).startswith("truncated")
        raise ValueError(str(exc) if known else f"cannot read FITS ({exc})") from None
    return FitsContents(image, table)
