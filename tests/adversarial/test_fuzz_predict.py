"""Seeded fuzzing of `predict`'s inputs: FITS cutouts with WCS headers and exported ONNX models,
truncated, bit-flipped, spliced. Each mutant is predicted (a row per readable image) or fails
with the library's error naming the file; no other exception, no hang."""

from __future__ import annotations

import io

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

import deeplense
from deeplense.infer import load_predictor

from .test_fuzz_readers import MUTANTS_PER_FORMAT, _mutate


def _cutout_with_wcs() -> bytes:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [8.5, 8.5]
    w.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    header = w.to_header()
    header["BUNIT"] = "counts"
    buffer = io.BytesIO()
    fits.PrimaryHDU(np.random.default_rng(3).normal(50, 5, (16, 16)).astype(np.float32), header=header).writeto(buffer)
    return buffer.getvalue()


def test_mutated_fits_cutouts_predict_or_fail_clearly(tiny_runs, tmp_path, attack):
    model = load_predictor(tiny_runs["cls"])
    original = _cutout_with_wcs()
    rng = np.random.default_rng(19)
    for number in range(MUTANTS_PER_FORMAT):
        mutant = tmp_path / f"m{number}" / "cutout.fits"
        mutant.parent.mkdir()
        mutant.write_bytes(_mutate(original, rng))
        out = tmp_path / f"m{number}" / "cat.csv"
        attack.survives(lambda m=mutant, o=out: deeplense.predict(model, m, out=o), str(mutant))


def test_mutated_onnx_exports_load_or_fail_clearly(tiny_runs, tmp_path, attack):
    from deeplense.infer.export import export_model

    model = load_predictor(tiny_runs["cls"])
    source = deeplense.open_dataset(model.contract.provenance.data["path"], split="test")
    folder = tmp_path / "export"
    export_model(model, "onnx", folder, source.images(np.arange(4)))
    original = (folder / "model.onnx").read_bytes()
    rng = np.random.default_rng(23)
    for _ in range(MUTANTS_PER_FORMAT // 2):
        (folder / "model.onnx").write_bytes(_mutate(original, rng))
        attack.survives(lambda: load_predictor(folder).predict(source.images(np.arange(2))), str(folder / "model.onnx"))
