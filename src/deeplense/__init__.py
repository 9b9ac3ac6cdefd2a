"""deeplense: simulate strong-lensing images with dark-matter substructure and learn from them."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("deeplense")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "open_dataset"]


def open_dataset(path, **kwargs):
    """Open a data set in any supported layout; see :func:`deeplense.data.readers.open_dataset`."""
    from deeplense.data.readers import open_dataset as _open

    return _open(path, **kwargs)
