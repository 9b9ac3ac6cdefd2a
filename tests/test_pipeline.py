"""Transforms and the batch-fetching torch datasets over stored and simulated data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from conftest import tiny_model_i_config
from deeplense import open_dataset
from deeplense.core.config import ConfigError
from deeplense.core.seeding import image_seed
from deeplense.data.datasets import SimulatedImages, SimulatedStream, StoredImages, make_loader
from deeplense.data.transforms import RandomDihedral, build_pipeline, dihedral, mixup
from deeplense.sim import Simulator


def test_dihedral_elements_are_the_eight_distinct_exact_symmetries():
    x = torch.arange(25.0).reshape(1, 1, 5, 5)
    outs = [dihedral(x, e) for e in range(8)]
    assert len({tuple(o.flatten().tolist()) for o in outs}) == 8
    for o in outs:
        assert sorted(o.flatten().tolist()) == sorted(x.flatten().tolist())  # a permutation of pixels
    assert torch.equal(dihedral(dihedral(x, 1), 3), x)  # quarter turn and three more
    assert torch.equal(dihedral(dihedral(x, 4), 4), x)  # mirror twice
    assert torch.equal(outs[1], torch.rot90(x, 1, dims=(-2, -1)))


def test_random_dihedral_draws_all_elements_uniformly():
    torch.manual_seed(0)
    x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(4000, 1, 1, 1)
    out = build_pipeline(["dihedral"]).train()(x)
    variants = {tuple(dihedral(x[:1], e).flatten().tolist()): e for e in range(8)}
    counts = np.bincount([variants[tuple(o.flatten().tolist())] for o in out], minlength=8)
    assert stats.chisquare(counts).pvalue > 1e-3
    assert torch.equal(build_pipeline(["dihedral"])(x[:3]), x[:3])  # eval mode: no augmentation


def test_d2_dihedral_keeps_an_axis_aligned_lens_and_draws_its_four_elements():
    torch.manual_seed(1)
    x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(2000, 1, 1, 1)
    out = build_pipeline([{"name": "dihedral", "group": "d2"}]).train()(x)
    variants = {tuple(dihedral(x[:1], e).flatten().tolist()): e for e in range(8)}
    drawn = np.bincount([variants[tuple(o.flatten().tolist())] for o in out], minlength=8)
    assert drawn[[1, 3, 5, 7]].sum() == 0  # no quarter turns (they would flip e1 and gamma1)
    assert stats.chisquare(drawn[[0, 2, 4, 6]]).pvalue > 1e-3
    with pytest.raises(ConfigError, match="group"):
        build_pipeline([{"name": "dihedral", "group": "c4"}])


def test_stretches_crops_and_binning():
    x = torch.rand(4, 2, 12, 12) * 50 - 5
    y = build_pipeline(["minmax"])(x)
    assert torch.allclose(y.amin(dim=(1, 2, 3)), torch.zeros(4)) and torch.allclose(
        y.amax(dim=(1, 2, 3)), torch.ones(4)
    )
    assert torch.allclose(build_pipeline([{"name": "asinh", "scale": 2.0}])(x), torch.asinh(x / 2))
    assert build_pipeline([{"name": "center_crop", "size": 8}])(x).shape == (4, 2, 8, 8)
    binned = build_pipeline([{"name": "bin", "factor": 3}])(x)
    assert binned.shape == (4, 2, 4, 4) and torch.allclose(binned.sum(dim=(2, 3)) * 9, x.sum(dim=(2, 3)), rtol=1e-5)
    assert build_pipeline([{"name": "resize", "size": 20}])(x).shape == (4, 2, 20, 20)
    assert torch.isfinite(build_pipeline(["log"])(x)).all()


def test_standardize_statistics_are_fitted_after_the_preceding_transforms():
    data = [torch.rand(8, 2, 6, 6) * torch.tensor([3.0, 100.0]).view(1, 2, 1, 1) for _ in range(3)]
    pipe = build_pipeline([{"name": "asinh", "scale": 1.0}, "standardize"])
    assert pipe.needs_statistics()
    fitted = pipe.fit_statistics(lambda: iter(data))
    assert len(fitted["mean"]) == 2
    out = torch.cat([pipe(d) for d in data])
    assert torch.allclose(out.mean(dim=(0, 2, 3)), torch.zeros(2), atol=1e-5)
    assert torch.allclose(out.std(dim=(0, 2, 3), unbiased=False), torch.ones(2), atol=1e-4)


def test_bad_transform_configs_name_the_key():
    with pytest.raises(ConfigError, match=r"transforms.1.name.*unknown transform 'flip'"):
        build_pipeline(["minmax", "flip"])
    with pytest.raises(ConfigError, match=r"transforms.0.*asinh"):
        build_pipeline([{"name": "asinh", "scael": 2}])
    with pytest.raises(ConfigError, match=r"transforms.0.scale"):
        build_pipeline([{"name": "asinh", "scale": -1}])


def test_mixup_gives_convex_combinations():
    torch.manual_seed(1)
    x, onehot = torch.rand(6, 1, 4, 4), torch.eye(3)[[0, 1, 2, 0, 1, 2]]
    mixed, soft = mixup(x, onehot, alpha=0.4)
    assert torch.allclose(soft.sum(1), torch.ones(6)) and mixed.shape == x.shape


def test_stored_images_loader_visits_each_image_once_with_any_worker_count(tiny_dataset):
    source = open_dataset(tiny_dataset, split="train")
    ds = StoredImages(source, build_pipeline(["minmax"]), targets=["main_lens.theta_E"])
    epochs = {}
    for workers in (0, 2):
        batches = list(make_loader(ds, 5, shuffle=True, workers=workers, seed=7))
        epochs[workers] = batches
        seen = torch.cat([b["index"] for b in batches])
        assert sorted(seen.tolist()) == list(range(len(source)))
    for a, b in zip(*epochs.values()):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["image"], b["image"])
    batch = epochs[0][0]
    i = int(batch["index"][0])
    raw = torch.from_numpy(source.image(i))
    assert torch.allclose(batch["image"][0], (raw - raw.min()) / (raw.max() - raw.min()))
    assert batch["label"][0] == source.labels[i]
    assert batch["target"].shape == (5, 1)
    cached = StoredImages(source, build_pipeline(["minmax"]), cache="memory")
    assert torch.equal(cached.__getitems__([3, 0, 3])["image"], ds.__getitems__([3, 0, 3])["image"])


def test_stored_images_reject_missing_or_nan_targets(tiny_dataset):
    source = open_dataset(tiny_dataset)
    with pytest.raises(ValueError, match="no target column 'mass'"):
        StoredImages(source, targets=["mass"])
    with pytest.raises(ValueError, match="NaN/Inf targets"):
        StoredImages(source, targets=["substructure.log10_m_a"])  # only axion images have one
    from deeplense.data.views import IndexView

    axion = IndexView(source, np.flatnonzero(source.labels == 2))
    assert StoredImages(axion, targets=["substructure.log10_m_a"]).target_values.shape == (12, 1)


def test_simulated_images_are_pure_functions_of_seed_and_index():
    config = tiny_model_i_config()
    ds = SimulatedImages(config, seed=11, length=12, targets=["main_lens.theta_E"])
    a = ds.__getitems__([4, 5, 6])
    b = ds.__getitems__([6, 2, 4])
    assert torch.equal(a["image"][0], b["image"][2]) and torch.equal(a["image"][2], b["image"][0])
    sim = Simulator(config)
    direct, _ = sim.simulate([image_seed(11, 5)], [5 % 3])
    assert np.array_equal(a["image"][1].numpy(), direct[0])
    assert a["label"].tolist() == [1, 2, 0]
    axion = SimulatedImages(config, seed=11, length=4, targets=["substructure.log10_m_a"], classes=["axion"])
    batch = axion.__getitems__([0, 1, 2, 3])
    assert axion.output_class_names == ["axion"] and (batch["label"] == 0).all()
    assert ((batch["target"] >= -24) & (batch["target"] <= -22)).all()


def test_simulated_stream_splits_batches_across_workers():
    stream = SimulatedStream(tiny_model_i_config(), seed=2, batch_size=4)
    loader = make_loader(stream, 4, workers=2)
    seen = []
    for k, batch in enumerate(loader):
        seen += batch["index"].tolist()
        if k == 5:
            break
    assert sorted(seen) == list(range(24))


def test_compressed_shards_read_the_same_images(tiny_dataset, tmp_path):
    from conftest import tiny_model_i_config
    from deeplense.sim.writer import DatasetPlan, write_dataset

    plan = DatasetPlan(
        n_per_class=12, n_classes=3, seed=5, splits={"train": 0.5, "val": 0.25, "test": 0.25}, shard_size=10
    )
    write_dataset(tmp_path / "gz", tiny_model_i_config(), plan, compression="gzip")
    plain, packed = open_dataset(tiny_dataset), open_dataset(tmp_path / "gz")
    order = [35, 0, 17, 17, 9]
    np.testing.assert_array_equal(plain.images(order), packed.images(order))
    np.testing.assert_array_equal(plain.images(order)[2], plain.image(17))


def test_minmax_numpy_fast_path_matches_torch():
    x = torch.rand(5, 3, 9, 9) * 7 - 2
    for per_band in (False, True):
        fast = build_pipeline([{"name": "minmax", "per_band": per_band}])(x)
        dims = (-2, -1) if per_band else (-3, -2, -1)
        lo, hi = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
        assert torch.allclose(fast, (x - lo) / (hi - lo), atol=1e-6)
        assert torch.allclose(
            build_pipeline([{"name": "minmax", "per_band": per_band}])(x.double()),
            ((x - lo) / (hi - lo)).double(),
            atol=1e-6,
        )
    assert x.min() < 0  # the input is not modified


@pytest.mark.parametrize("shape", [(30, 1, 12, 12), (30, 3, 8, 8), (30, 1, 8, 10)])
def test_fused_gather_equals_the_plain_pipeline_bit_for_bit(shape, monkeypatch):
    """Pipeline.gather folds dihedral into the gather and runs min-max in place; the result must be
    exactly what the transforms give one after the other, and the source must stay untouched."""
    source = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    kept = source.copy()
    specs = [
        ["minmax", "dihedral"],
        ["minmax", {"name": "dihedral", "group": "d2"}, "noise_jitter"],
        [
            {"name": "asinh", "scale": 0.5},
            {"name": "minmax", "per_band": True},
            "dihedral",
            {"name": "bin", "factor": 2},
        ],
        [{"name": "center_crop", "size": 6}, "minmax", "dihedral"],  # crop is not orientation-free
    ]
    rows = np.array([4, 29, 4, 0, 17, 11, 8, 2, 23])
    fused_reads = []  # dihedral reading straight from ``source`` is the fused path
    plain_gather = RandomDihedral.gather

    def spy(src, take, choice):
        fused_reads.append(src is source)
        return plain_gather(src, take, choice)

    monkeypatch.setattr(RandomDihedral, "gather", staticmethod(spy))
    for spec in specs:
        for training in (True, False):
            pipeline = build_pipeline(spec).train(training)
            for take in (rows, None):
                fused = pipeline.gather(source, take, torch.Generator().manual_seed(11))
                plain_input = torch.from_numpy(source[rows] if take is not None else source.copy())
                plain = pipeline(plain_input, torch.Generator().manual_seed(11))
                assert torch.equal(fused, plain), (spec, training)
    assert sum(fused_reads) == 6  # the first three specs, in training, with and without rows
    np.testing.assert_array_equal(source, kept)
    # the test can fail: another generator state gives other dihedral elements
    pipeline = build_pipeline(["minmax", "dihedral"]).train()
    a = pipeline.gather(source, rows, torch.Generator().manual_seed(11))
    assert not torch.equal(a, pipeline.gather(source, rows, torch.Generator().manual_seed(12)))


def test_mixup_in_data_transforms_is_refused_not_dropped():
    """It used to be accepted and silently ignored; mixup is set by train.mixup_alpha."""
    with pytest.raises(ConfigError, match=r"data.transforms.1.name: mixup mixes labels .* train.mixup_alpha"):
        build_pipeline(["minmax", {"name": "mixup", "alpha": 0.4}], "data.transforms")
