"""deeplense: simulate strong-lensing images with dark-matter substructure and learn from them."""

from __future__ import annotations

from deeplense.core.version import __version__

__all__ = ["__version__", "open_dataset", "load_predictor", "from_pretrained", "predict"]


def open_dataset(path, **kwargs):
    """Open a data set in any supported layout; see :func:`deeplense.data.readers.open_dataset`."""
    from deeplense.data.readers import open_dataset as _open

    return _open(path, **kwargs)


def load_predictor(path, device: str = "cpu"):
    """A trained model from its checkpoint; see :func:`deeplense.infer.load_predictor`."""
    from deeplense.infer import load_predictor as _load

    return _load(path, device)


def from_pretrained(name: str, device: str = "cpu"):
    """A pretrained model shipped with deeplense (``deeplense models pretrained`` lists them)."""
    from deeplense.infer.predictor import load_predictor as _load
    from deeplense.models.hub import list_pretrained

    if name not in list_pretrained():
        from deeplense.core.errors import DataFormatError

        raise DataFormatError(f"no pretrained model {name!r}; shipped: {list_pretrained()}")
    return _load(name, device)


def predict(model, inputs, out=None, **options):
    """Catalogue of predictions for FITS/.npy/PNG files, folders, globs or data sets, as a
    ``pandas.DataFrame`` (also written to ``out``: .csv, .fits or .parquet); ``model`` is a loaded
    model or anything ``deeplense predict`` takes. Options as :func:`deeplense.infer.survey.predict_catalogue`."""
    import tempfile
    from pathlib import Path

    from deeplense.infer.catalogue import read_catalogue
    from deeplense.infer.predictor import Predictor
    from deeplense.infer.predictor import load_predictor as _load
    from deeplense.infer.survey import predict_catalogue

    model = model if isinstance(model, Predictor) else _load(model)
    inputs = [str(i) for i in ([inputs] if isinstance(inputs, str | Path) else inputs)]
    if out is not None:
        predict_catalogue(model, inputs, out, **options)
        return read_catalogue(out)[0]
    with tempfile.TemporaryDirectory(prefix="deeplense-predict-") as tmp:
        path = Path(tmp) / "catalogue.csv"
        predict_catalogue(model, inputs, path, **options)
        return read_catalogue(path)[0]
