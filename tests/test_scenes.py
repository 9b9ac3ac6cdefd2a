"""Survey scenes: light profiles, colours, non-lenses and hard negatives, weighted class ratios."""

import json
import math

import numpy as np
import pytest
import torch

from conftest import run_cli
from deeplense.core.config import ConfigError
from deeplense.data.readers import open_dataset
from deeplense.sim.presets import load_preset
from deeplense.sim.simulator import Simulator
from deeplense.sim.writer import DatasetPlan


def _component(kind, params, options=None):
    cfg = load_preset("lens_finding")
    cfg["lens_light"] = [{"kind": kind, "name": "probe", "params": params, **({"options": options} if options else {})}]
    sim = Simulator(cfg)
    return sim, sim.lens_light[0]


@pytest.mark.parametrize(
    "kind, params",
    [
        ("ring", {"amp": 1.0, "radius": 1.2, "width": 0.15}),
        ("ring", {"amp": 1.0, "radius": 0.2, "width": 0.3}),
        ("spiral", {"amp": 1.0, "scale_length": 0.8, "arm_amplitude": 0.5, "pitch": 0.3}),
        ("arc", {"amp": 1.0, "radius": 1.5, "width": 0.1, "extent": 0.5, "angle": 1.0}),
        ("clumps", {"amp": 1.0, "size": 0.1, "spread": 0.5}),
        ("sersic", {"amp": 1.0, "R_sersic": 0.5, "n_sersic": 2.0}),
        ("real_galaxy", {"amp": 1.0, "size": 3.0, "angle": 0.7}),
    ],
)
def test_unit_flux_equals_the_integrated_profile(kind, params, rng):
    """The magnitude normalisation is right: the profile integrates to unit_flux."""
    sim, comp = _component(kind, params)
    values = comp.sample(rng)
    p = {k: torch.tensor([[v]], dtype=torch.float64) for k, v in values.items()}
    step = 0.01
    axis = torch.arange(-8, 8, step, dtype=torch.float64)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    integral = float(comp.profile(xx.reshape(-1), yy.reshape(-1), p).sum()) * step**2
    expected = float(comp.unit_flux(p))
    tolerance = 0.05 if kind == "spiral" else 0.01  # the arms average out only approximately
    assert integral == pytest.approx(expected, rel=tolerance)


def test_colors_are_magnitude_offsets_per_band(rng):
    colors = {"g": 1.0, "r": 0.0, "i": -0.5}
    sim, comp = _component("sersic", {"magnitude": 20.0, "R_sersic": 0.5, "n_sersic": 1.0}, {"colors": colors})
    p = {k: torch.tensor([[v]], dtype=torch.float64) for k, v in comp.sample(rng).items()}
    for band in sim.instrument.bands:
        counts = float(comp.amplitude(p, band) * comp.unit_flux(p))
        assert counts == pytest.approx(10 ** (-0.4 * (20.0 + colors[band.name] - band.zero_point)), rel=1e-9)


def test_colors_without_magnitude_are_an_error():
    with pytest.raises(ConfigError, match="colors"):
        _component("ring", {"amp": 1.0, "radius": 1.0, "width": 0.1}, {"colors": {"g": 0.3}})


def test_non_lenses_carry_no_lensed_light():
    """A non-lens equals a lens of the same seed whose source is switched off."""
    cfg = load_preset("lens_finding")
    cfg["instrument"]["size"] = 32
    for cls in cfg["classes"].values():
        cls.pop("weight")
    cfg["classes"]["non_lens"]["variants"] = cfg["classes"]["lens"]["variants"]
    sim = Simulator(cfg)
    images, _ = sim.simulate([5, 5], [1, 0], noise=False)  # lens, non-lens
    dark = load_preset("lens_finding")
    dark["instrument"]["size"] = 32
    dark["source"][0]["params"]["magnitude"] = {"uniform": [39.9, 40.0]}  # same draws, 1e-7 of the flux
    dark["source"][1]["params"]["magnitude"] = {"uniform": [39.9, 40.0]}
    dark_image, _ = Simulator(dark).simulate([5], [1], noise=False)
    np.testing.assert_allclose(images[1], dark_image[0], rtol=0, atol=1e-5 * images[1].max())
    assert np.abs(images[0] - images[1]).max() > 0.05 * images[1].max()


def test_hard_negative_variants_follow_their_weights():
    sim = Simulator(load_preset("lens_finding"))
    spec = sim.class_specs["non_lens"]
    drawn = np.bincount([sim.sample(s, 0).variant for s in range(3000)], minlength=len(spec.variants))
    weights = np.array([v.weight for v in spec.variants])
    expected = 3000 * weights / weights.sum()
    assert np.all(np.abs(drawn - expected) < 4 * np.sqrt(expected))
    assert [v.name for v in spec.variants] == ["elliptical", "spiral", "ring", "merger", "neighbour_pair"]
    row = sim.metadata_row(sim.sample(1, 0))
    assert "scene.variant" in row and "tidal_arc.extent" in row


def test_weighted_plan_keeps_class_ratio_in_every_split():
    plan = DatasetPlan(200, 2, 0, {"train": 0.8, "val": 0.1, "test": 0.1}, class_weights=[1, 10])
    indices = np.arange(plan.n_total)
    labels, splits = plan.labels(indices), plan.splits_of(indices)
    assert plan.n_total == 2200
    for code in range(3):
        lab = labels[splits == code]
        assert (lab == 1).sum() == 10 * (lab == 0).sum() > 0
    assert np.bincount(labels[:110]).tolist() == [10, 100]  # any whole prefix of groups keeps the ratio
    for bad in ([0, 0], [1, -1], [1], [1.5, 1]):
        with pytest.raises(ConfigError, match="class_weights"):
            DatasetPlan(10, 2, 0, {"train": 1.0}, class_weights=bad)


def test_zero_class_weight_leaves_the_class_out_but_keeps_the_vocabulary(tmp_path):
    out = tmp_path / "axion_only"
    run_cli(
        "simulate", "--preset", "model_i", "--n-per-class", "4", "--class-weights", "no_sub=0,cdm=0,axion=1",
        "--set", "instrument.size=24", "--split", "train=0.5,test=0.5", "--out", str(out),
    )  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["class_names"] == ["no_sub", "cdm", "axion"]
    assert manifest["counts"]["axion"] == {"train": 2, "test": 2}
    assert manifest["counts"]["cdm"] == {"train": 0, "test": 0}
    ds = open_dataset(out)
    assert len(ds) == 4 and set(ds.metadata["class_name"]) == {"axion"}


def test_simulate_cli_writes_a_weighted_lens_finding_set(tmp_path):
    out = tmp_path / "lf"
    run_cli(
        "simulate",
        "--preset",
        "lens_finding",
        "--n-per-class",
        "3",
        "--class-weights",
        "non_lens=4,lens=1",
        "--split",
        "train=0.34,val=0.33,test=0.33",
        "--set",
        "instrument.size=24",
        "--out",
        str(out),
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["lens"] == {"train": 1, "val": 1, "test": 1}
    assert manifest["counts"]["non_lens"] == {"train": 4, "val": 4, "test": 4}
    bad = run_cli(
        "simulate", "--preset", "lens_finding", "--class-weights", "non_lens=1", "--out", tmp_path / "x", check=False
    )
    assert bad.returncode != 0 and "'lens'" in bad.stdout + bad.stderr


def test_model_iv_renders_three_band_structured_sources():
    cfg = load_preset("model_iv")
    cfg["instrument"]["size"] = 32
    sim = Simulator(cfg)
    images, samples = sim.simulate([1, 2, 3], [0, 1, 2])
    assert images.shape == (3, 3, 32, 32) and np.isfinite(images).all()
    assert sim.class_names == ["no_sub", "cdm", "axion"]
    assert samples[1].population["n_sub"] > 0
    assert {"source_clumps.clump0_x", "source_disk.pitch", "lens_bulge.magnitude"} <= {c.name for c in sim.columns}
    assert not math.isnan(sim.metadata_row(samples[0])["source_clumps.clump3_frac"])
