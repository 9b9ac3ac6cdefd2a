"""deeplense: simulate strong-lensing images with dark-matter substructure and learn from them."""

from __future__ import annotations

from deeplense.core.version import __version__

__all__ = ["__version__", "open_dataset", "load_predictor"]


def open_dataset(path, **kwargs):
    """Open a data set in any supported layout; see :func:`deeplense.data.readers.open_dataset`."""
    from deeplense.data.readers import open_dataset as _open

    return _open(path, **kwargs)


def load_predictor(path, device: str = "cpu"):
    """A trained model from its checkpoint; see :func:`deeplense.infer.load_predictor`."""
    from deeplense.infer import load_predictor as _load

    return _load(path, device)
