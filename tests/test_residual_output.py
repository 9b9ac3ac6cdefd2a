"""``output: smooth_model_residual`` and the noise models' noise-free images in output units."""

import numpy as np
import pytest
import torch

from deeplense.core.config import ConfigError
from deeplense.sim import rng as R
from deeplense.sim.presets import load_preset
from deeplense.sim.simulator import Simulator


def _config(output, size=24):
    config = load_preset("cdm_wdm_sidm")
    config["instrument"]["size"] = size
    config["classes"]["none"] = {"kind": "none"}
    config["output"] = output
    return config


def test_residual_is_the_image_minus_the_scene_without_subhalos():
    images, residuals = Simulator(_config("image")), Simulator(_config("smooth_model_residual"))
    seeds, labels = [3, 4, 5, 6], [0, 1, 2, 3]
    observed, samples = images.simulate(seeds, labels)
    residual, _ = residuals.simulate(seeds, labels)
    smooth = images.render([images.sample(s, 3) for s in seeds], noise=False).numpy()  # class "none"
    exposure = np.array([s.params[3]["exposure_time"] for s in samples])[:, None, None, None]
    np.testing.assert_allclose(residual, observed - exposure * smooth, rtol=1e-5, atol=1e-3)
    noiseless, _ = residuals.simulate(seeds, labels, noise=False)
    assert np.all(noiseless[3] == 0)  # no subhalos: nothing left
    assert all(np.abs(noiseless[i]).max() > 1e-3 for i in range(3))


def test_unknown_output_is_an_error_naming_the_key():
    with pytest.raises(ConfigError, match="output"):
        Simulator(_config("residuals"))


@pytest.mark.parametrize(
    "preset, options",
    [
        ("model_i", {}),
        ("model_ii", {"approximation": "gaussian"}),
        ("model_ii", {"approximation": "poisson", "unit": "ADU"}),
        ("model_ii", {"released_files": True}),
    ],
)
def test_expected_is_the_mean_of_the_noisy_image(preset, options):
    config = load_preset(preset)
    config["instrument"]["bands"][0]["noise"].setdefault("options", {}).update(options)
    sim = Simulator(config)
    noise = sim.instrument.bands[0].noise
    sample = sim.sample(1, 0)
    p = {k: torch.tensor([[v]], dtype=torch.float64) for k, v in sample.params[-1].items()}
    model = torch.full((1, 200_000), 0.5, dtype=torch.float64)
    noisy = noise.apply(model, p, R.stream_key(torch.tensor([12345]), 7), sim.instrument.pixel_scale)
    expected = noise.expected(model, p)
    standard_error = noisy.std() / np.sqrt(model.numel())
    assert abs(noisy.mean() - expected.mean()) < 5 * standard_error + 1e-12
    assert torch.all(expected == expected[0, 0])
