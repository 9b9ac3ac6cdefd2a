"""Real source morphologies: the XDF galaxy catalogue and the ``real_galaxy`` light profile."""

import numpy as np
import pytest
import torch

from deeplense.core.config import ConfigError
from deeplense.sim.presets import load_preset
from deeplense.sim.real_galaxies import xdf_stamps
from deeplense.sim.simulator import Simulator


def _galaxy(options=None):
    cfg = load_preset("model_iv_real_sources")
    cfg["instrument"]["size"] = 32
    if options is not None:
        cfg["source"][0]["options"] = options
    sim = Simulator(cfg)
    return sim, sim.sources[0]


def test_the_catalogue_holds_isolated_galaxies_brightest_first():
    stamps = xdf_stamps()
    assert stamps.shape[1:] == (32, 32) and len(stamps) > 300
    assert np.allclose(stamps.max((1, 2)), 1.0) and stamps.min() >= 0
    flux = stamps.sum((1, 2))
    assert np.all(np.diff(flux) <= 0)
    border = np.concatenate([stamps[:, 0], stamps[:, -1], stamps[:, :, 0], stamps[:, :, -1]], 1)
    assert (border.max(1) == 0).mean() > 0.95  # each galaxy fits its stamp; neighbours are zeroed
    assert np.array_equal(xdf_stamps(), stamps)  # the same catalogue every time


def test_the_profile_samples_the_stamp_and_turns_with_the_angle():
    _, galaxy = _galaxy()
    stamp = xdf_stamps()[7]
    centres = (np.arange(32) + 0.5) / 32 * 2.0 - 1.0  # pixel centres of a 2-arcsec stamp
    yy, xx = np.meshgrid(centres[::-1], centres, indexing="ij")  # the first row is the top
    x, y = torch.tensor(xx.reshape(1, -1)), torch.tensor(yy.reshape(1, -1))

    def params(angle):
        return {
            k: torch.tensor([[v]], dtype=torch.float64)
            for k, v in {"size": 2.0, "angle": angle, "center_x": 0.0, "center_y": 0.0, "galaxy": 7}.items()
        }

    flat = galaxy.profile(x, y, params(0.0)).reshape(32, 32).numpy()
    assert np.allclose(flat, stamp, atol=1e-6)
    turned = galaxy.profile(x, y, params(np.pi / 2)).reshape(32, 32).numpy()
    assert np.allclose(turned, np.rot90(stamp, 1), atol=1e-5)


def test_images_draw_galaxies_from_the_chosen_range_and_record_them():
    sim, _ = _galaxy({"galaxies": [10, 20]})
    images, samples = sim.simulate(list(range(8)), [0, 1, 2, 0, 1, 2, 0, 1])
    assert images.shape == (8, 3, 32, 32) and np.isfinite(images).all()
    drawn = [sim.metadata_row(s)["source_galaxy.galaxy"] for s in samples]
    assert all(10 <= g < 20 for g in drawn) and len(set(drawn)) > 1
    with pytest.raises(ConfigError, match="galaxies"):
        _galaxy({"galaxies": [5, 5000]})
