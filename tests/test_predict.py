"""`deeplense predict`: FITS/npy/PNG/data sets in, a traceable catalogue out, checked image
contracts, resume, bad inputs, exports (through the real CLI where a user would use it)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from astropy.io import fits
from astropy.wcs import WCS

import deeplense
from conftest import run_cli as run
from deeplense.core.errors import DataFormatError
from deeplense.infer import load_predictor
from deeplense.infer.catalogue import read_catalogue
from deeplense.infer.conform import resample
from deeplense.infer.cutouts import header_facts
from deeplense.infer.survey import predict_catalogue
from deeplense.models.hub import sha256_of

SCALE = 0.2  # arcsec per pixel of the tiny data set (conftest.tiny_model_i_config)


def wcs_header(scale: float, ra: float, dec: float, size: int, units: str | None = "counts") -> fits.Header:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(size + 1) / 2, (size + 1) / 2]
    w.wcs.cdelt = [-scale / 3600, scale / 3600]
    header = w.to_header()
    if units:
        header["BUNIT"] = units
    return header


def write_cutouts(folder, images, scale=SCALE, units="counts"):
    """One FITS file per image ``(C, H, W)`` with a TAN WCS; returns their paths and centres."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, image in enumerate(images):
        path = folder / f"cut_{i:03d}.fits"
        ra, dec = 150.0 + 0.01 * i, 2.0 - 0.005 * i
        header = wcs_header(scale, ra, dec, image.shape[-1], units)
        fits.PrimaryHDU(image[0] if image.shape[0] == 1 else image, header=header).writeto(path)
        centre = WCS(header).pixel_to_world_values((image.shape[-1] - 1) / 2, (image.shape[-2] - 1) / 2)
        rows.append((str(path), float(centre[0]), float(centre[1])))
    return rows


@pytest.fixture(scope="module")
def cls(tiny_runs):
    model = load_predictor(tiny_runs["cls"])
    source = deeplense.open_dataset(model.contract.provenance.data["path"], split="test")
    return model, source.images(np.arange(len(source)))


def test_resampling_conserves_flux_and_is_exact_block_summing(rng):
    image = rng.random((1, 30, 30)).astype(np.float32)
    binned = resample(image, 0.1, 0.2)
    assert np.allclose(binned, image.reshape(1, 15, 2, 15, 2).sum((2, 4)), atol=1e-5)
    assert resample(image, 0.1, 0.05).sum() == pytest.approx(image.sum(), rel=1e-6)
    assert np.allclose(resample(resample(image, 0.1, 0.05), 0.05, 0.1), image, atol=1e-5)
    # a compact source at a non-integer ratio keeps its flux and its centre (in arcsec)
    y, x = np.mgrid[:150, :150]
    source = np.exp(-(((x - 74.5) ** 2 + (y - 74.5) ** 2) / (2 * 6.0**2)))[None].astype(np.float32)
    out = resample(source, 0.05, 0.117)
    assert out.shape == (1, 64, 64) and out.sum() == pytest.approx(source.sum(), rel=1e-4)
    yy, xx = np.mgrid[:64, :64]
    assert (out[0] * xx).sum() / out.sum() == pytest.approx(31.5, abs=1e-3)
    flat = np.full((1, 20, 20), 3.0, np.float32)  # surface brightness keeps its mean instead
    assert np.allclose(resample(flat, 0.1, 0.13, surface_brightness=True)[:, 1:-1, 1:-1], 3.0, atol=1e-5)


def test_header_facts_read_cd_cdelt_and_pixscale():
    header = dict(wcs_header(0.05, 53.16, -27.78, 96))
    header.update(NAXIS1=96, NAXIS2=96)
    facts, ra, dec = header_facts(header, "a.fits")
    assert facts.pixel_scale_arcsec == pytest.approx(0.05) and facts.units == "counts"
    assert (ra, dec) == pytest.approx((53.16, -27.78))
    theta = np.radians(30.0)  # a rotated CD matrix
    cd = 0.1 / 3600 * np.array([[-np.cos(theta), np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    rotated = {"NAXIS1": 10, "NAXIS2": 10, "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 10.0, "CRVAL2": 5.0}
    rotated.update(CRPIX1=5.5, CRPIX2=5.5, CD1_1=cd[0, 0], CD1_2=cd[0, 1], CD2_1=cd[1, 0], CD2_2=cd[1, 1])
    assert header_facts(rotated, "r.fits")[0].pixel_scale_arcsec == pytest.approx(0.1)
    assert header_facts({"PIXSCALE": 0.13}, "p.fits")[0].pixel_scale_arcsec == pytest.approx(0.13)
    assert header_facts({}, "n.fits")[0].pixel_scale_arcsec is None
    with pytest.raises(DataFormatError, match="p.fits: PIXSCALE = 'big' is not a number"):
        header_facts({"PIXSCALE": "big"}, "p.fits")


def test_predict_cli_writes_a_traceable_catalogue_in_every_format(cls, tiny_runs, tmp_path):
    model, images = cls
    written = write_cutouts(tmp_path / "cutouts", images)
    result = run("predict", tiny_runs["cls"], tmp_path / "cutouts", "--out", tmp_path / "cat.csv")
    assert f"wrote {tmp_path / 'cat.csv'}: {len(images)} rows" in result.stdout
    table, meta = read_catalogue(tmp_path / "cat.csv")
    assert list(table.columns[:7]) == ["source", "hdu", "index", "ra", "dec", "seed", "flag"]
    assert table["source"].tolist() == [w[0] for w in written] and (table["hdu"] == "0").all()
    assert np.allclose(table["ra"], [w[1] for w in written], atol=1e-9)
    assert np.allclose(table["dec"], [w[2] for w in written], atol=1e-9)
    expected = model.predict(images)["probs"]
    names = model.contract.output.class_names
    assert np.allclose(table[[f"p_{n}" for n in names]].to_numpy(), expected, atol=1e-6)
    assert table["predicted"].tolist() == [names[i] for i in expected.argmax(1)]
    assert meta["model_sha256"] == sha256_of(tiny_runs["cls"] / "checkpoints" / "best.ckpt")
    assert meta["model"] == "cls" and meta["model_version"] == deeplense.__version__
    for suffix in ("fits", "parquet"):
        run("predict", tiny_runs["cls"], str(tmp_path / "cutouts" / "*.fits"), "--out", tmp_path / f"cat.{suffix}")
        other, other_meta = read_catalogue(tmp_path / f"cat.{suffix}")
        assert other_meta == meta
        pd.testing.assert_frame_equal(other[table.columns].astype(table.dtypes), table, check_exact=False, atol=1e-6)
    again = run("predict", tiny_runs["cls"], tmp_path / "cutouts", "--out", tmp_path / "cat.csv", check=False)
    assert again.returncode == 2 and "exists; pass --overwrite" in again.stderr


def test_other_pixel_scales_are_resampled_and_said_once(cls, tiny_runs, tmp_path):
    model, images = cls
    finer = np.stack([resample(image, SCALE, SCALE / 2) for image in images])  # 32x32 of 0.1"
    write_cutouts(tmp_path / "fine", finer, scale=SCALE / 2)
    result = run("predict", tiny_runs["cls"], tmp_path / "fine", "--out", tmp_path / "fine.csv")
    assert result.stderr.count("resampled from 0.1 to the model's 0.2 arcsec/pixel (flux conserved)") == 1
    table, _ = read_catalogue(tmp_path / "fine.csv")
    names = model.contract.output.class_names
    assert np.allclose(table[[f"p_{n}" for n in names]].to_numpy(), model.predict(images)["probs"], atol=1e-5)
    assert np.allclose(model.predict(finer, pixel_scale=SCALE / 2)["probs"], model.predict(images)["probs"], atol=1e-5)
    with pytest.raises(
        ValueError, match="32x32 pixel images; the model reads 16x16 pixels of 0.2 arcsec: pass pixel_scale="
    ):
        model.predict(finer)


def test_an_interrupted_predict_resumes_without_losing_or_duplicating_rows(cls, tmp_path):
    model, images = cls
    write_cutouts(tmp_path / "in", images)
    full = predict_catalogue(model, [str(tmp_path / "in")], tmp_path / "full.csv", batch_size=2)
    assert full.written == len(images)

    def stop_after_three_files(done, total):
        if done == 3:
            raise KeyboardInterrupt

    out = tmp_path / "cat.csv"
    with pytest.raises(KeyboardInterrupt):
        predict_catalogue(model, [str(tmp_path / "in")], out, batch_size=2, progress=stop_after_three_files)
    journal = tmp_path / "cat.csv.partial.csv"
    assert not out.exists() and journal.exists()
    with open(journal, "a") as f:
        f.write(f"{tmp_path}/in/cut_009.fits,0,0,150.")  # a row torn by the interruption
    resumed = predict_catalogue(model, [str(tmp_path / "in")], out, batch_size=2)
    assert resumed.skipped == 2 and resumed.written == len(images) - 2
    table, _ = read_catalogue(out)
    reference, _ = read_catalogue(tmp_path / "full.csv")
    assert not table.duplicated(["source", "hdu", "index"]).any()
    pd.testing.assert_frame_equal(table, reference)
    assert not journal.exists()


def _checkpoint_of_another_task(tiny_runs, tmp_path):
    state = torch.load(tiny_runs["cls"] / "checkpoints" / "best.ckpt", weights_only=True)
    state["hyper_parameters"]["contract"]["task"] = "segmentation"
    torch.save(state, tmp_path / "other.ckpt")
    return tmp_path / "other.ckpt"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("table_only", "no image HDU with data"),
        (
            "no_wcs",
            "pixel scale unknown (no CD/CDELT/PIXSCALE in the header); the model reads 0.2 arcsec/pixel: pass --pixel-scale",
        ),
        ("nan", "NaN/Inf pixel(s); pass --nan fill"),
        ("truncated", "truncated"),
        ("other_task", "task 'segmentation' is not one this deeplense knows"),
        ("text", "not an input predict reads"),
    ],
)
def test_bad_inputs_get_one_clear_line_and_no_catalogue(cls, tiny_runs, tmp_path, case, expected):
    model, images = cls
    [(good, _, _)] = write_cutouts(tmp_path / "in", images[:1])
    bad, checkpoint = tmp_path / "in" / "bad.fits", tiny_runs["cls"]
    if case == "table_only":
        fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column("a", "E", array=[1.0])])]).writeto(
            bad
        )
    elif case == "no_wcs":
        fits.PrimaryHDU(images[0, 0]).writeto(bad)
    elif case == "nan":
        image = images[0].copy()
        image[0, 3, 4] = np.nan
        fits.PrimaryHDU(image[0], header=wcs_header(SCALE, 1.0, 1.0, 16)).writeto(bad)
    elif case == "truncated":
        bad.write_bytes(open(good, "rb").read()[:4000])
    elif case == "other_task":
        checkpoint = _checkpoint_of_another_task(tiny_runs, tmp_path)
    else:
        bad = tmp_path / "in" / "notes.txt"
        bad.write_text("hello")
    result = run("predict", checkpoint, good, bad, "--out", tmp_path / "cat.csv", check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and lines[-1].startswith("error:") and expected in lines[-1], result.stderr
    assert "Traceback" not in result.stderr
    if case != "other_task":
        assert str(bad) in lines[-1]
    assert not (tmp_path / "cat.csv").exists()


def test_nan_pixels_can_be_filled_or_masked(cls, tiny_runs, tmp_path):
    model, images = cls
    holed = images[:3].copy()
    holed[1, 0, 5, 5] = np.nan
    write_cutouts(tmp_path / "in", holed)
    run("predict", tiny_runs["cls"], tmp_path / "in", "--out", tmp_path / "mask.csv", "--nan", "mask")
    masked, _ = read_catalogue(tmp_path / "mask.csv")
    assert masked["flag"].tolist() == ["", "nan_pixels", ""] and masked["predicted"].tolist()[1] == ""
    assert masked.filter(like="p_").iloc[1].isna().all() and masked.filter(like="p_").iloc[[0, 2]].notna().all().all()
    run("predict", tiny_runs["cls"], tmp_path / "in", "--out", tmp_path / "fill.csv", "--nan", "fill")
    filled, _ = read_catalogue(tmp_path / "fill.csv")
    fixed = holed[1].copy()
    fixed[0, 5, 5] = np.nanmedian(holed[1, 0])
    expected = model.predict(fixed)["probs"][0]
    assert np.allclose(filled.filter(like="p_").iloc[1].to_numpy(float), expected, atol=1e-6)


def test_bands_as_extensions_as_files_and_as_a_cube_give_one_answer(tmp_path, rng):
    model = deeplense.from_pretrained("lens_finder_lsst")
    bands = model.contract.input.bands
    assert bands == ["g", "r", "i"]
    images = rng.normal(0.0, 0.05, (2, 3, 64, 64)).astype(np.float32) + 0.2
    header = wcs_header(0.2, 30.0, -5.0, 64, "e-/s")
    for k, image in enumerate(images):
        hdus = [fits.PrimaryHDU()] + [fits.ImageHDU(image[b], header=header, name=bands[b]) for b in (2, 0, 1)]
        fits.HDUList(hdus).writeto(tmp_path / f"ext_{k}.fits")  # extensions out of order: named, so sorted
        fits.PrimaryHDU(image, header=header).writeto(tmp_path / f"cube_{k}.fits")
        (tmp_path / "files").mkdir(exist_ok=True)
        for b, band in enumerate(bands):
            fits.PrimaryHDU(image[b], header=header).writeto(tmp_path / "files" / f"obj{k}_{band}.fits")
    expected = model.predict(images)["probs"]
    for pattern in ("ext_*.fits", "cube_*.fits", "files/*.fits"):
        table = deeplense.predict(model, str(tmp_path / pattern))
        assert len(table) == 2 and np.allclose(table[["p_non_lens", "p_lens"]].to_numpy(), expected, atol=1e-6)
    (tmp_path / "files" / "obj1_i.fits").unlink()
    with pytest.raises(DataFormatError, match=r"obj1: no file for band\(s\) \['i'\]"):
        deeplense.predict(model, str(tmp_path / "files"))
    hst_like = [fits.PrimaryHDU()] + [
        fits.ImageHDU(images[0, b], header=header, name=n) for b, n in enumerate(("SCI", "ERR", "DQ"))
    ]
    fits.HDUList(hst_like).writeto(tmp_path / "sci_err_dq.fits")  # three extensions, but not three bands
    with pytest.raises(DataFormatError, match=r"sci_err_dq.fits: 3 image HDUs \['SCI', 'ERR', 'DQ'\]"):
        deeplense.predict(model, str(tmp_path / "sci_err_dq.fits"))
    fits.PrimaryHDU(images[0, 0], header=header).writeto(tmp_path / "one_band.fits")
    with pytest.raises(DataFormatError, match=r"one_band.fits\[0\]: 1 band\(s\); the model reads 3 \['g', 'r', 'i'\]"):
        deeplense.predict(model, str(tmp_path / "one_band.fits"))
    fits.PrimaryHDU(images[0], header=wcs_header(0.2, 30.0, -5.0, 64, "ADU")).writeto(tmp_path / "adu.fits")
    with pytest.raises(DataFormatError, match="adu.fits.*pixels in 'ADU', the model reads 'e-/s' \\(field: BUNIT\\)"):
        deeplense.predict(model, str(tmp_path / "adu.fits"))


def test_npy_png_and_data_set_inputs_and_the_array_api(cls, tiny_runs, tiny_dataset, tmp_path):
    model, images = cls
    np.save(tmp_path / "stack.npy", images)
    table = deeplense.predict(tiny_runs["cls"], tmp_path / "stack.npy", pixel_scale=SCALE)
    assert (
        table["index"].tolist() == list(range(len(images))) and (table["source"] == str(tmp_path / "stack.npy")).all()
    )
    assert np.allclose(table.filter(like="p_").to_numpy(float), model.predict(images)["probs"], atol=1e-6)
    from PIL import Image

    Image.fromarray((np.clip(images[0, 0] / images[0, 0].max(), 0, 1) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    assert len(deeplense.predict(model, tmp_path / "a.png", pixel_scale=SCALE)) == 1
    dataset = deeplense.predict(model, tiny_dataset)
    source = deeplense.open_dataset(tiny_dataset)
    assert len(dataset) == len(source) and dataset["seed"].tolist() == source.metadata["seed"].tolist()
    assert dataset["index"].tolist() == list(range(len(source)))
    single = model.predict(images[0, 0])["probs"]  # (H, W) for a single-band model
    assert np.allclose(single, model.predict(images[:1])["probs"])
    with pytest.raises(
        ValueError, match=r"expected one image \(H, W\).*\(C, H, W\), or a batch \(N, C, H, W\), with C = 1"
    ):
        model.predict(images[:5, 0])


def test_export_to_onnx_and_torchscript_with_parity(cls, tiny_runs, tmp_path):
    model, images = cls
    for fmt in ("onnx", "torchscript"):
        result = run("export", tiny_runs["cls"], "--format", fmt, "--out", tmp_path / fmt)
        difference = float(result.stdout.strip().split("max |difference| = ")[1])
        assert difference < 1e-5, result.stdout
        meta = json.loads((tmp_path / fmt / "export.json").read_text())
        assert (
            meta["parity_max_abs_diff"] == pytest.approx(difference, rel=1e-2, abs=1e-9) and meta["parity_images"] == 9
        )
    write_cutouts(tmp_path / "in", images)
    run("predict", tiny_runs["cls"], tmp_path / "in", "--out", tmp_path / "torch.csv")
    run("predict", tmp_path / "onnx", tmp_path / "in", "--out", tmp_path / "onnx.csv")
    torch_table, _ = read_catalogue(tmp_path / "torch.csv")
    onnx_table, onnx_meta = read_catalogue(tmp_path / "onnx.csv")
    assert onnx_meta["backend"] == "onnx" and onnx_meta["model_sha256"] == sha256_of(tmp_path / "onnx" / "model.onnx")
    assert np.allclose(
        onnx_table.filter(like="p_").to_numpy(float), torch_table.filter(like="p_").to_numpy(float), atol=1e-5
    )
    refused = run("predict", tmp_path / "torchscript", tmp_path / "in", "--out", tmp_path / "ts.csv", check=False)
    assert refused.returncode == 2 and "TorchScript files hold code" in refused.stderr


def test_images_unlike_the_training_images_are_flagged_and_evaluate_refuses_them(cls, tiny_runs, tmp_path):
    model, images = cls
    assert model.contract.input.domain["n"] == 18  # the statistics of every training image
    assert model.in_domain(images).mean() > 0.5
    sky = images.max() * 3 * np.linspace(0, 1, 16, dtype=np.float32)[None, None, :, None]  # a bright sky gradient
    write_cutouts(tmp_path / "odd", images + sky)
    result = run("predict", tiny_runs["cls"], tmp_path / "odd", "--out", tmp_path / "odd.csv")
    assert f"{len(images)} flagged outside_training_domain" in result.stdout
    assert (read_catalogue(tmp_path / "odd.csv")[0]["flag"] == "outside_training_domain").all()
    # the same lenses under that sky, as a class-folder data set: evaluate refuses to score them
    source = deeplense.open_dataset(model.contract.provenance.data["path"], split="test")
    for k, image in enumerate(images + sky):
        folder = tmp_path / "odd_set" / source.class_names[source.labels[k]]
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"img_{k}.npy", image[0])
    args = ("evaluate", tiny_runs["cls"], "--data", tmp_path / "odd_set", "--pixel-scale", str(SCALE))
    refused = run(*args, "--out", tmp_path / "ev", check=False)
    expected = f"{len(images)} of {len(images)} images lie outside the domain of the model's training images"
    assert refused.returncode == 2 and expected in refused.stderr, refused.stderr
    assert "--allow-out-of-domain" in refused.stderr and not (tmp_path / "ev").exists()
    run(*args, "--out", tmp_path / "ev", "--allow-out-of-domain")
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["data"]["outside_training_domain"] == 1.0


def test_a_file_with_several_image_hdus_is_read_as_told_never_in_part(cls, tmp_path):
    model, images = cls
    header = wcs_header(SCALE, 10.0, 20.0, 16)
    hdus = [fits.PrimaryHDU()] + [fits.ImageHDU(images[k, 0], header=header, name=f"CUT{k}") for k in range(3)]
    fits.HDUList(hdus).writeto(tmp_path / "multi.fits")
    with pytest.raises(DataFormatError, match=r"multi.fits: 3 image HDUs \['CUT0', 'CUT1', 'CUT2'\]; pass --hdu"):
        deeplense.predict(model, tmp_path / "multi.fits")
    every = deeplense.predict(model, tmp_path / "multi.fits", hdu="all")
    assert every["hdu"].tolist() == ["CUT0", "CUT1", "CUT2"]
    assert np.allclose(every.filter(like="p_").to_numpy(float), model.predict(images[:3])["probs"], atol=1e-6)
    one = deeplense.predict(model, tmp_path / "multi.fits", hdu="CUT1")
    assert one["hdu"].tolist() == ["CUT1"] and np.allclose(
        one.filter(like="p_").to_numpy(float), every.filter(like="p_").to_numpy(float)[1:2]
    )
