"""Self-supervised pretraining: the masked autoencoder, SimCLR's views and loss, the k-NN probe,
encoders handed to later tasks (fine-tuning, linear probe, layer-wise decay) and the feature map,
through the real CLI where a user would go."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import run_cli
from deeplense.core.config import ConfigError
from deeplense.models.masked_autoencoder import MaskedAutoencoder
from deeplense.tasks.metrics import knn_probe
from deeplense.tasks.simclr import nt_xent, random_views

VIT = {"patch_size": 4, "depth": 2, "embed_dim": 32, "num_heads": 2}
VIT_YAML = "{patch_size: 4, depth: 2, embed_dim: 32, num_heads: 2}"


def tiny_mae(**kwargs):
    return MaskedAutoencoder(
        in_chans=2, img_size=16, encoder_kwargs=VIT, decoder_width=16, decoder_depth=1, decoder_heads=2, **kwargs
    )


def test_patches_follow_the_order_of_the_vit_tokens():
    mae = tiny_mae()
    x = torch.rand(3, 2, 16, 16)
    assert torch.equal(mae.unpatchify(mae.patchify(x)), x)
    proj = mae.encoder.patch_embed.proj  # make token k's first channel the first pixel of band 0 of patch k
    with torch.no_grad():
        proj.weight.zero_()
        proj.bias.zero_()
        proj.weight[0, 0, 0, 0] = 1.0
    tokens = mae.encoder.patch_embed(x)
    assert torch.equal(tokens[..., 0], mae.patchify(x)[..., 0])


def test_normalised_targets_and_deterministic_reconstructions_from_every_mask():
    torch.manual_seed(0)
    mae = tiny_mae(mask_ratio=0.75).eval()
    x = torch.rand(2, 2, 16, 16) * 5 + 3
    target, mean, std = mae.targets(x)
    assert torch.allclose(target.mean(-1), torch.zeros(2, 16), atol=1e-5)
    assert torch.allclose(target.std(-1, unbiased=False), torch.ones(2, 16), atol=1e-3)
    assert mae.n_groups == 4 and mae.n_visible == 4
    groups = [set(mae.eval_order[g::4].tolist()) for g in range(4)]
    assert set().union(*groups) == set(range(16)) and sum(map(len, groups)) == 16  # a partition
    with torch.no_grad():
        first, loss = mae.reconstruct(x)
        again, _ = mae.reconstruct(x)
    assert torch.equal(first, again) and first.shape == x.shape and loss.shape == (2,)


def test_the_mae_loss_counts_masked_patches_only():
    """A decoder that predicts the visible patches perfectly and the masked ones wrongly, and the
    reverse, give the loss of the masked patches."""
    torch.manual_seed(0)
    mae = tiny_mae()
    x = torch.rand(2, 2, 16, 16)
    target, _, _ = mae.targets(x)
    seen = {}

    def fake_decode(h, visible):
        pred = target.clone() + 1.0  # wrong by 1 everywhere: squared error 1
        seen["visible"] = visible
        return pred.scatter(1, visible[..., None].expand(-1, -1, pred.shape[-1]), 100.0)

    mae.decode_tokens = fake_decode
    loss = mae.training_loss(x)
    assert seen["visible"].shape == (2, 4)
    assert torch.allclose(loss, torch.ones(2))


def test_mae_pretraining_lowers_the_masked_loss():
    torch.manual_seed(0)
    yy, xx = np.mgrid[:16, :16]
    centres = np.random.default_rng(0).uniform(5, 11, (128, 2))
    blobs = np.exp(-((xx - centres[:, :1, None]) ** 2 + (yy - centres[:, 1:, None]) ** 2) / 6.0)
    x = torch.as_tensor(np.stack([blobs, blobs**2], 1), dtype=torch.float32)
    mae = tiny_mae()
    opt = torch.optim.AdamW(mae.parameters(), lr=3e-3)
    with torch.no_grad():
        before = mae.eval().reconstruct(x)[1].mean()
    mae.train()
    for _ in range(120):
        loss = mae.training_loss(x[torch.randint(0, 128, (32,))]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = mae.eval().reconstruct(x)[1].mean()
    assert after < 0.5 * before


def test_mae_refuses_what_it_cannot_mask():
    with pytest.raises(ValueError, match="mask_ratio"):
        tiny_mae(mask_ratio=0.3)
    with pytest.raises(ValueError, match="divisible"):
        MaskedAutoencoder(in_chans=1, img_size=18, encoder_kwargs=VIT)
    with pytest.raises(ValueError, match="ViT"):
        MaskedAutoencoder(in_chans=1, img_size=16, encoder="small_cnn")


def test_nt_xent_matches_its_definition():
    torch.manual_seed(0)
    a, b = torch.randn(3, 5), torch.randn(3, 5)
    z = torch.nn.functional.normalize(torch.cat([a, b]), dim=1)
    sim = z @ z.T / 0.5
    expected = []
    for i in range(6):
        partner = (i + 3) % 6
        others = [j for j in range(6) if j != i]
        expected.append(-sim[i, partner] + torch.logsumexp(sim[i, others], 0))
    expected = torch.stack(expected)
    assert torch.allclose(nt_xent(a, b, 0.5), (expected[:3] + expected[3:]) / 2, atol=1e-5)
    same = torch.eye(4)  # identical views, orthogonal images: the smallest loss
    assert nt_xent(same, same, 0.1).max() < 1e-3


def test_views_keep_the_flux_up_to_their_scale_and_are_reproducible():
    x = torch.rand(16, 3, 16, 16)
    views = random_views(x, noise=0.0, generator=torch.Generator().manual_seed(1))
    ratio = views.sum((1, 2, 3)) / x.sum((1, 2, 3))
    assert torch.all((ratio > 0.8 - 1e-4) & (ratio < 1.25 + 1e-4))
    again = random_views(x, noise=0.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(views, again)
    assert not torch.equal(views, x)
    noisy = random_views(x, noise=0.5, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(noisy, views)


def test_the_knn_probe_is_cross_fitted():
    """Random features score chance (no image is its own neighbour); separable ones score ~1."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 150)
    noise = knn_probe(rng.normal(size=(450, 16)), labels, ["a", "b", "c"])
    assert 0.4 < noise["auc_macro"] < 0.6
    separable = rng.normal(size=(450, 16)) + 6 * np.eye(16)[labels]
    assert knn_probe(separable, labels, ["a", "b", "c"], n_boot=50)["auc_macro"] > 0.99
    assert knn_probe(rng.normal(size=(10, 4)), np.zeros(10, int), ["a", "b"]) is None


# ------------------------------------------------------------------------------------ runs
@pytest.fixture(scope="module")
def pretrained_runs(tiny_dataset, tmp_path_factory):
    """A MAE-pretrained tiny ViT and a SimCLR-pretrained small CNN (through the CLI)."""
    root = tmp_path_factory.mktemp("pretraining")
    common = (
        f"data: {{path: {tiny_dataset}, transforms: [minmax]}}\n"
        f"run: {{dir: {root}}}\nlogging: {{progress_bar: false}}\n"
    )
    (root / "mae.yaml").write_text(
        "task: mae\n" + common + f"model: {{name: vit_tiny_patch16_224, kwargs: {VIT_YAML}}}\n"
        "train: {epochs: 2, batch_size: 6, decoder_width: 16, decoder_depth: 1, decoder_heads: 2}\n"
    )
    (root / "simclr.yaml").write_text(
        "task: simclr\n" + common + "model: {name: small_cnn, kwargs: {widths: [8, 16]}}\n"
        "train: {epochs: 2, batch_size: 6, projection_dim: 8}\n"
    )
    run_cli("train", root / "mae.yaml", "--set", "run.name=mae")
    run_cli("train", root / "simclr.yaml", "--set", "run.name=simclr")
    return root


def _encoder(run):
    from deeplense.infer import load_predictor

    return load_predictor(run).encoder_state()


def test_pretraining_runs_evaluate_with_a_probe_and_a_feature_map(pretrained_runs):
    for name in ("mae", "simclr"):
        run = pretrained_runs / name
        contract = json.loads((run / "contract.json").read_text())
        assert contract["task"] == name
        result = run_cli("evaluate", run, "--split", "train", "--color-by", "main_lens.theta_E")
        metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
        assert metrics["n"] == 18 and np.isfinite(metrics["loss"])
        assert 0 <= metrics["knn_probe"]["auc_macro"] <= 1 and metrics["knn_probe"]["k"] == 8
        assert "k-NN probe" in result.stdout
        table = pd.read_csv(run / "evaluation" / "embedding.csv")
        assert list(table.columns) == ["row", "x", "y", "label", "main_lens.theta_E"] and len(table) == 18
        assert (run / "evaluation" / "embedding.png").stat().st_size > 0


def test_fine_tuning_and_linear_probing_start_from_the_pretrained_encoder(pretrained_runs, tiny_dataset):
    root = pretrained_runs
    base = (
        "task: classification\n"
        f"data: {{path: {tiny_dataset}, transforms: [minmax]}}\n"
        f"model: {{name: vit_tiny_patch16_224, kwargs: {VIT_YAML}, init_from: {root / 'mae'}}}\n"
        f"run: {{dir: {root}}}\nlogging: {{progress_bar: false}}\n"
    )
    (root / "ft.yaml").write_text(base + "train: {epochs: 2, batch_size: 6, layer_decay: 0.75, scheduler: onecycle}\n")
    (root / "probe.yaml").write_text(base + "train: {epochs: 2, batch_size: 6, freeze_encoder: true}\n")
    run_cli("train", root / "ft.yaml", "--set", "run.name=ft")
    run_cli("train", root / "probe.yaml", "--set", "run.name=probe")
    pretrained = _encoder(root / "mae")
    probe, tuned = _encoder(root / "probe"), _encoder(root / "ft")
    assert set(pretrained) == set(probe) == set(tuned)
    assert all(torch.equal(pretrained[k], probe[k]) for k in pretrained)  # frozen: untouched
    assert any(not torch.equal(pretrained[k], tuned[k]) for k in pretrained)  # fine-tuned: moved
    contract = json.loads((root / "probe" / "contract.json").read_text())
    assert contract["model"]["init"].startswith(f"encoder of the mae model {root / 'mae'}")
    # resuming needs the checkpoint, not the run the encoder came from
    (root / "mae").rename(root / "mae_moved")
    try:
        run_cli("train", "--resume", root / "probe")
    finally:
        (root / "mae_moved").rename(root / "mae")
    assert json.loads((root / "probe" / "contract.json").read_text())["model"]["init"] == contract["model"]["init"]
    # a CNN pretrained by SimCLR starts a classifier the same way
    cnn = base.replace(f"vit_tiny_patch16_224, kwargs: {VIT_YAML}", "small_cnn, kwargs: {widths: [8, 16]}")
    (root / "cnn.yaml").write_text(cnn.replace("mae}", "simclr}") + "train: {epochs: 1, batch_size: 6}\n")
    run_cli("train", root / "cnn.yaml", "--set", "run.name=cnn")
    first = _encoder(root / "simclr")
    assert set(first) == set(_encoder(root / "cnn"))


def test_an_encoder_that_does_not_fit_is_refused_naming_the_difference(pretrained_runs, tiny_dataset):
    root = pretrained_runs
    (root / "bad.yaml").write_text(
        "task: classification\n"
        f"data: {{path: {tiny_dataset}, transforms: [minmax]}}\n"
        f"model: {{name: vit_tiny_patch16_224, kwargs: {{patch_size: 4, depth: 3, embed_dim: 32, num_heads: 2}}, "
        f"init_from: {root / 'mae'}}}\n"
        f"run: {{dir: {root}, name: bad}}\ntrain: {{epochs: 1}}\nlogging: {{progress_bar: false}}\n"
    )
    result = run_cli("train", root / "bad.yaml", check=False)
    assert result.returncode == 2
    assert "model.init_from" in result.stderr and "blocks.2" in result.stderr
    assert "Traceback" not in result.stderr and not (root / "bad").exists()


def test_layer_decay_scales_the_learning_rate_of_each_vit_layer():
    from deeplense.models.heads import build_network
    from deeplense.tasks.optim import layer_decay_groups

    net = build_network({"name": "vit_tiny_patch16_224", "kwargs": VIT}, "linear", 3, 1, 16)
    groups = layer_decay_groups(net, "backbone", 0.05, 0.5, 1e-3)
    rate = {id(p): g["lr"] for g in groups for p in g["params"]}
    b = net.backbone
    stem, first, last = b.patch_embed.proj.weight, b.blocks[0].attn.qkv.weight, b.blocks[1].attn.qkv.weight
    assert rate[id(stem)] == pytest.approx(0.5 * rate[id(first)])  # each layer down: half the rate
    assert rate[id(first)] == pytest.approx(0.5 * rate[id(last)])
    assert all(rate[id(p)] == pytest.approx(1e-3) for p in net.head.parameters())
    n_params = sum(len(g["params"]) for g in groups)
    assert n_params == len(list(net.parameters()))


def test_the_mae_masked_error_is_an_anomaly_score(pretrained_runs, tiny_dataset):
    root = pretrained_runs
    (root / "mae_anomaly.yaml").write_text(
        "task: anomaly\n"
        f"data: {{path: {tiny_dataset}, transforms: [minmax]}}\n"
        f"model: {{name: mae, kwargs: {{encoder: vit_tiny_patch16_224, encoder_kwargs: {VIT_YAML}, "
        f"decoder_width: 16, decoder_depth: 1, decoder_heads: 2}}, init_from: {root / 'mae'}}}\n"
        f"run: {{dir: {root}, name: mae_anomaly}}\ntrain: {{epochs: 1, batch_size: 4}}\nlogging: {{progress_bar: false}}\n"
    )
    run_cli("train", root / "mae_anomaly.yaml")
    run_cli("evaluate", root / "mae_anomaly")
    metrics = json.loads((root / "mae_anomaly" / "evaluation" / "metrics.json").read_text())
    assert {"reconstruction", "filtered", "latent", "profile"} <= set(metrics["scores"])
    table = pd.read_csv(root / "mae_anomaly" / "evaluation" / "predictions.csv")
    assert np.isfinite(table["score_reconstruction"]).all() and table["score_reconstruction"].min() > 0


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.freeze_encoder=true", "train.freeze_encoder"),
        ("model.init_from=runs/x", "train.freeze_encoder"),
        ("train.layer_decay=1.5", "train.layer_decay"),
        ("train.mask_ratio=0.2", "train.mask_ratio"),
        ("train.temperature=0", "train.temperature"),
        ("model.init_from=3", "model.init_from"),
    ],
)
def test_pretraining_keys_are_checked(override, key, tiny_dataset):
    from deeplense.train.config import resolve_config

    extra = ["train.freeze_encoder=true"] if override.startswith("model.init_from=runs") else []
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        resolve_config({"task": "mae", "data": {"path": str(tiny_dataset)}}, [override, *extra])


def test_an_mae_exports_and_a_simclr_run_says_why_it_does_not(pretrained_runs, tmp_path):
    result = run_cli("export", pretrained_runs / "mae", "--format", "onnx", "--out", tmp_path / "mae_onnx")
    assert "parity with torch" in result.stdout and (tmp_path / "mae_onnx" / "model.onnx").exists()
    refused = run_cli("export", pretrained_runs / "simclr", "--format", "onnx", "--out", tmp_path / "s", check=False)
    assert refused.returncode == 2 and "not exported" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "s").exists()
