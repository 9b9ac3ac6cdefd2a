"""A real HST image: scikit-image's Hubble eXtreme Deep Field (no known lenses), tiled into
FITS cutouts with a WCS, through `deeplense predict` and the shipped HST-like lens finder."""

from __future__ import annotations

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from conftest import run_cli as run
from deeplense.infer.catalogue import read_catalogue

#: The XDF spans about 2.3 arcmin over the 1000 pixels of this copy of the release image.
XDF_SCALE = 0.14
XDF_CENTRE = (53.1604, -27.7864)  # deg (03h32m38.5s, -27d47m11s)
TILE = 34  # pixels: 4.8 arcsec, the lens finder's field


def test_the_hst_lens_finder_scores_most_real_xdf_cutouts_low(tmp_path, capsys):
    from skimage.data import hubble_deep_field

    gray = (hubble_deep_field().astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))[::-1]
    ny, nx = gray.shape
    expected = {}
    for y0 in range(0, ny - TILE + 1, TILE * 2):
        for x0 in range(0, nx - TILE + 1, TILE * 2):
            w = WCS(naxis=2)
            w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
            w.wcs.crval = XDF_CENTRE
            w.wcs.crpix = [nx / 2 + 0.5 - x0, ny / 2 + 0.5 - y0]
            w.wcs.cdelt = [-XDF_SCALE / 3600, XDF_SCALE / 3600]
            path = tmp_path / "xdf" / f"xdf_{y0:03d}_{x0:03d}.fits"
            path.parent.mkdir(exist_ok=True)
            header = w.to_header()
            header["BUNIT"] = "DN"  # a display stretch of the release image: no flux calibration
            fits.PrimaryHDU(gray[y0 : y0 + TILE, x0 : x0 + TILE], header=header).writeto(path)
            expected[str(path)] = w.pixel_to_world_values((TILE - 1) / 2, (TILE - 1) / 2)
    result = run("predict", "lens_finder_hst", tmp_path / "xdf", "--out", tmp_path / "xdf.fits")
    assert "resampled from 0.14 to the model's 0.05 arcsec/pixel" in result.stderr
    assert (
        "95x95 pixel images padded with the border median to the model's 96x96" in result.stderr
    )  # 34 x 0.14" = 95.2 x 0.05"
    table, meta = read_catalogue(tmp_path / "xdf.fits")
    assert meta["model"] == "lens_finder_hst" and len(table) == len(expected)
    assert set(table["source"]) == set(expected)
    centres = np.array([expected[s] for s in table["source"]])
    assert np.allclose(table[["ra", "dec"]].to_numpy(), centres, atol=1e-8)
    assert table["p_lens"].between(0, 1).all()
    above = float((table["p_lens"] > 0.5).mean())
    with capsys.disabled():
        print(f"\nXDF: {len(table)} real cutouts, fraction with P(lens) > 0.5: {above:.3f}")
    assert above < 0.2  # no lenses are known in the field; a few candidates are what vetting is for
