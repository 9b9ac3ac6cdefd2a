"""Networks: exact D4 invariance, timm backbones with any band count, pretrained fallbacks."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch

from deeplense.data.transforms import dihedral
from deeplense.models import Network, PretrainedWeightsWarning, build_network, create_backbone
from deeplense.models.equivariant import D4_INVERSE, D4_TABLE, GroupConv, LiftingConv


def test_d4_cayley_table_is_a_group():
    assert sorted(D4_TABLE[0]) == list(range(8)) and list(D4_TABLE[0]) == list(range(8))
    for a in range(8):
        assert sorted(D4_TABLE[a]) == list(range(8))  # Latin square
        assert D4_TABLE[a, D4_INVERSE[a]] == 0
        for b in range(8):
            for c in range(8):
                assert D4_TABLE[D4_TABLE[a, b], c] == D4_TABLE[a, D4_TABLE[b, c]]


def test_group_convolutions_are_equivariant_and_the_network_invariant():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 16, 16)
    lift, conv = LiftingConv(1, 3, 5), GroupConv(3, 2, 3)
    with torch.no_grad():
        f = conv(lift(x))
        for u in range(8):
            g = conv(lift(dihedral(x, u)))
            # transforming the input by u transforms each map by u and permutes the group axis
            expected = torch.stack([dihedral(f[:, :, D4_TABLE[D4_INVERSE[u], h]], u) for h in range(8)], dim=2)
            assert torch.allclose(g, expected, atol=1e-5)
    net = build_network(
        {"name": "d4_cnn", "kwargs": {"widths": [4, 8, 8]}}, "linear", 3, in_chans=2, img_size=32
    ).eval()
    images = torch.randn(3, 2, 32, 32)
    with torch.no_grad():
        reference = net(images)
        for u in range(1, 8):
            assert torch.allclose(net(dihedral(images, u)), reference, atol=1e-5)


def test_d2_network_is_invariant_to_half_turns_and_mirrors_but_not_quarter_turns():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 16, 16)
    d2 = (0, 2, 4, 6)
    lift, conv = LiftingConv(1, 3, 5, group="d2"), GroupConv(3, 2, 3, group="d2")
    with torch.no_grad():
        f = conv(lift(x))
        assert f.shape == (2, 2, 4, 16, 16)
        for u in d2:
            g = conv(lift(dihedral(x, u)))
            # the group axis holds positions in d2: position j of the output is position
            # d2.index(u^-1 h_j) of the untransformed maps
            order = [d2.index(D4_TABLE[D4_INVERSE[u], h]) for h in d2]
            expected = torch.stack([dihedral(f[:, :, j], u) for j in order], dim=2)
            assert torch.allclose(g, expected, atol=1e-5)
    net = build_network(
        {"name": "d4_cnn", "kwargs": {"widths": [4, 8, 8], "group": "d2", "depth": 2}},
        "gaussian",
        1,
        in_chans=1,
        img_size=32,
    ).eval()
    images = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        reference = net(images)
        for u in (2, 4, 6):
            assert torch.allclose(net(dihedral(images, u)), reference, atol=1e-5)
        for u in (1, 3, 5, 7):  # a quarter turn is not a symmetry of this network
            assert not torch.allclose(net(dihedral(images, u)), reference, atol=1e-3)
    with pytest.raises(Exception, match="group"):
        LiftingConv(1, 2, 3, group="c4")


def test_small_cnn_is_not_invariant_so_the_test_above_can_fail():
    torch.manual_seed(0)
    net = build_network({"name": "small_cnn"}, "linear", 3, in_chans=1, img_size=32).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(net(dihedral(x, 1)), net(x), atol=1e-5)


def test_small_cnn_depth_stacks_convolutions_per_block():
    from deeplense.models.small_cnn import SmallCNN

    shallow, deep = SmallCNN(widths=(8, 16)), SmallCNN(widths=(8, 16), depth=3)
    convs = [sum(isinstance(m, torch.nn.Conv2d) for m in net.modules()) for net in (shallow, deep)]
    assert convs == [2, 6] and deep(torch.randn(2, 1, 16, 16)).shape == (2, 16)
    with pytest.raises(ValueError, match="depth"):
        SmallCNN(depth=0)


@pytest.mark.parametrize(
    ("name", "kwargs", "bands", "size"),
    [
        ("resnet18", {}, 3, 64),
        ("efficientnet_b0", {}, 1, 64),
        ("vit_tiny_patch16_224", {"patch_size": 8}, 1, 64),
        ("convit_tiny", {"patch_size": 8}, 1, 64),
    ],
)
def test_timm_backbones_with_any_bands_and_image_size(name, kwargs, bands, size):
    net = build_network({"name": name, "kwargs": kwargs}, "gaussian", 2, in_chans=bands, img_size=size)
    out = net(torch.randn(2, bands, size, size))
    assert out.shape == (2, 4)  # two means, two log-variances
    mean, var = net.head.split(out)
    assert (var > 0).all() and mean.shape == (2, 2)


def test_pretrained_without_weights_warns_and_initialises_randomly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.warns(
        PretrainedWeightsWarning, match="resnet18: pretrained weights are not available .*HF_HUB_OFFLINE"
    ):
        model = create_backbone("resnet18", in_chans=1, pretrained=True)
    assert model.num_features == 512
    assert model.weights_source == "random (pretrained weights asked for, none available)"
    with pytest.warns(PretrainedWeightsWarning, match="small_cnn: no published weights"):
        assert create_backbone("small_cnn", pretrained=True).weights_source.startswith("random (")
    assert create_backbone("small_cnn").weights_source == "random"


def test_a_run_records_random_initialisation_when_pretrained_weights_are_missing(tiny_dataset, tmp_path):
    """`model.pretrained: true` with no weights available is recorded as what happened."""
    import json

    from deeplense.train.config import resolve_config
    from deeplense.train.run import train

    config = {
        "task": "classification",
        "data": {"path": str(tiny_dataset), "transforms": ["minmax"]},
        "model": {"name": "small_cnn", "kwargs": {"widths": [4, 8]}, "pretrained": True},
        "train": {"epochs": 1, "batch_size": 6, "threads": 1},
        "logging": {"progress_bar": False},
        "run": {"dir": str(tmp_path), "name": "asked"},
    }
    with pytest.warns(PretrainedWeightsWarning):
        train(resolve_config(config))
    model = json.loads((tmp_path / "asked" / "contract.json").read_text())["model"]
    assert model["pretrained"] is False and model["init"] == "random (pretrained weights asked for, none available)"


def test_local_weight_files_load_with_band_adaptation(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = create_backbone("resnet18", in_chans=3)
    save_file({f"model.{k}": v.contiguous() for k, v in source.state_dict().items()}, tmp_path / "r18.safetensors")
    torch.save({"state_dict": source.state_dict()}, tmp_path / "r18.pth")
    for path in (tmp_path / "r18.safetensors", tmp_path / "r18.pth"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            target = create_backbone("resnet18", in_chans=1, pretrained=str(path))
        assert torch.equal(target.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
        # 3-band first convolution summed into 1 band (timm's adapt_input_conv)
        assert torch.allclose(target.conv1.weight, source.conv1.weight.sum(1, keepdim=True), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="missing.pth: no such weight file"):
        create_backbone("resnet18", pretrained=str(tmp_path / "missing.pth"))


def test_unknown_model_names_are_a_clear_error():
    with pytest.raises(KeyError, match="unknown model 'resnet_18'"):
        create_backbone("resnet_18")
    assert isinstance(build_network({"name": "small_cnn"}, "linear", 2, 1, 32), Network)


def test_models_list_cli():
    cli = [sys.executable, "-m", "deeplense.cli.main", "models", "list"]
    everything = subprocess.run(cli, capture_output=True, text=True)
    assert everything.returncode == 0 and "d4_cnn" in everything.stdout and "small_cnn" in everything.stdout
    convit = subprocess.run([*cli, "convit*"], capture_output=True, text=True).stdout
    assert "convit_tiny" in convit and "resnet18" not in convit and "small_cnn" not in convit


@pytest.mark.parametrize(
    ("name", "kwargs", "spatial"),
    [
        ("small_cnn", {"widths": [4, 8, 16]}, (16, 8, 8)),  # two 2x2 pools
        ("d4_cnn", {"widths": [4, 8]}, (8, 8, 16, 16)),  # one map per group element
        ("resnet18", {}, (512, 1, 1)),
    ],
)
def test_every_backbone_exposes_its_spatial_map_and_pools_it_into_its_features(name, kwargs, spatial):
    """A decoder starts from ``forward_features``; ``forward_head`` of it is what a head sees."""
    torch.manual_seed(0)
    backbone = create_backbone(name, in_chans=1, img_size=32, **kwargs).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        features = backbone.forward_features(x)
        assert tuple(features.shape[1:]) == spatial
        assert torch.equal(backbone.forward_head(features, pre_logits=True), backbone(x))
        assert backbone(x).shape == (2, backbone.num_features)
