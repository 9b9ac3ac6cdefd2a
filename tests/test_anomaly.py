"""Unsupervised anomaly detection: the autoencoders, their losses, the scores, the metrics, and
the task trained, evaluated and used for prediction through the real CLI."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from conftest import run_cli
from deeplense.core.config import ConfigError
from deeplense.models.autoencoders import (
    AdversarialAutoencoder,
    ConvAutoencoder,
    VariationalAutoencoder,
    build_autoencoder,
)
from deeplense.tasks.metrics import anomaly_metrics


def test_vae_loss_contains_its_kl_term_weighted_by_beta():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 16, 16)
    vae = VariationalAutoencoder(in_chans=1, img_size=16, widths=(8, 16), latent_dim=4, beta=2.0).eval()
    with torch.no_grad():
        vae.to_latent.bias[:4] += 2.0  # a KL of about 8 nats
    mean, log_var = vae.posterior(x)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, (0.5 * log_var).exp()), torch.distributions.Normal(0.0, 1.0)
    ).sum(1)
    assert torch.allclose(vae.kl_divergence(mean, log_var), expected, rtol=1e-4, atol=1e-7)
    reconstruction, z, penalty = vae(x)
    assert torch.allclose(z, mean)
    assert torch.allclose(penalty, 2.0 * expected, rtol=1e-4, atol=1e-7)
    torch.manual_seed(1)
    with_kl = vae.training_loss(x)
    vae.beta = 0.0
    torch.manual_seed(1)
    without = vae.training_loss(x)
    assert torch.allclose(with_kl - without, 2.0 * expected, rtol=1e-3, atol=1e-2)


def test_the_kl_term_trains_the_posterior_towards_the_prior():
    """Minimising the VAE loss moves q(z|x) towards N(0, I): the KL falls (it is really in the loss)."""
    torch.manual_seed(0)
    x = torch.rand(16, 1, 16, 16)
    vae = VariationalAutoencoder(in_chans=1, img_size=16, widths=(8, 16), latent_dim=4, beta=50.0)
    with torch.no_grad():
        vae.to_latent.bias[:4] += 3.0  # a posterior far from the prior
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    kl = []
    for _ in range(60):
        loss = vae.training_loss(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        kl.append(float(vae.kl_divergence(*vae.posterior(x)).mean().detach()))
    assert kl[-1] < 0.2 * kl[0]


def test_aae_discriminator_and_encoder_learn_from_their_own_losses():
    """Non-saturating AAE: the discriminator's cross-entropy trains the discriminator only (the
    codes are detached); the encoder's -log D(z) trains the codes only (the discriminator's
    weights are frozen in it), and its gradient is that of -log D(z) times the weight."""
    torch.manual_seed(0)
    aae = AdversarialAutoencoder(in_chans=1, img_size=16, widths=(8, 16), latent_dim=4, adversarial_weight=0.5)
    z = (torch.randn(32, 4) * 3 + 2).requires_grad_(True)
    aae.discriminator_loss(z).mean().backward()
    assert z.grad is None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in aae.discriminator.parameters())
    aae.zero_grad()
    (aae.adversarial_weight * aae.encoder_adversarial_loss(z)).mean().backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in aae.discriminator.parameters())
    got = z.grad.clone()
    z.grad = None
    logit = aae.discriminator(z).squeeze(1)
    (0.5 * -torch.nn.functional.logsigmoid(logit)).mean().backward()
    assert torch.allclose(got, z.grad, atol=1e-7)


def test_the_filtered_score_suppresses_white_noise_and_keeps_psf_sized_residuals():
    """The filter of 0.7 px keeps ~1/(4 pi 0.7^2) = 16 % of white noise's power and most of a
    residual blob 2 px wide, so the blob (a subhalo's perturbation) stands out against noise of
    the same unfiltered power."""
    from deeplense.tasks.anomaly import filtered_power, gaussian_kernel

    kernel = gaussian_kernel(0.7)
    assert kernel.sum().item() == pytest.approx(1.0)
    noise = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    blob = torch.exp(-((xx - 30) ** 2 + (yy - 34) ** 2) / (2 * 2.0**2)).expand(4, 3, 64, 64)
    blob = blob * (noise.pow(2).mean() / blob.pow(2).mean()).sqrt()  # the same unfiltered power
    kept_noise = filtered_power(noise, kernel) / noise.pow(2).mean((1, 2, 3))
    kept_blob = filtered_power(blob, kernel) / blob.pow(2).mean((1, 2, 3))
    assert torch.allclose(kept_noise, torch.tensor(1 / (4 * np.pi * 0.49)), rtol=0.1)
    assert torch.all(kept_blob > 0.8)


def test_autoencoders_refuse_sizes_and_weights_they_cannot_use():
    with pytest.raises(ValueError, match="not divisible"):
        ConvAutoencoder(img_size=20, widths=(8, 16, 32))
    with pytest.raises(ValueError, match="beta"):
        VariationalAutoencoder(img_size=16, widths=(8,), beta=-1)
    net = build_autoencoder("conv_ae", 3, 32, widths=[8, 16], latent_dim=5)
    reconstruction, z, penalty = net(torch.rand(2, 3, 32, 32))
    assert reconstruction.shape == (2, 3, 32, 32) and z.shape == (2, 5) and torch.all(penalty == 0)


def test_anomaly_metrics_match_sklearn_and_count_false_positives():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [200, 100, 100])
    score = rng.normal(size=400) + np.where(labels == 1, 1.0, 0) + np.where(labels == 2, 3.0, 0)
    m = anomaly_metrics({"s": score}, labels, ["no_sub", "cdm", "axion"], "no_sub", n_boot=50)
    entry = m["scores"]["s"]
    assert entry["auc"] == pytest.approx(roc_auc_score(labels > 0, score))
    cdm = labels != 2
    assert entry["per_class"]["cdm"]["auc"] == pytest.approx(roc_auc_score(labels[cdm] == 1, score[cdm]))
    lo, hi = entry["auc_ci"]
    assert lo < entry["auc"] < hi
    # TPR at 1 % FPR: above the threshold that lets 2 of the 200 normal images through
    threshold = np.sort(score[labels == 0])[::-1][2]
    assert entry["tpr_at_1pct_fpr"] == pytest.approx((score[labels > 0] > threshold).mean())
    assert m["n_per_class"] == {"no_sub": 200, "cdm": 100, "axion": 100}


def test_latent_density_is_fitted_on_normal_codes(tiny_anomaly_run):
    """The Mahalanobis score uses the mean and (shrunk) precision of the codes it was fitted on."""
    from deeplense.infer import load_predictor

    task = load_predictor(tiny_anomaly_run).task
    rng = np.random.default_rng(0)
    dim = task.latent_mean.numel()
    cov = np.diag(np.linspace(0.5, 2.0, dim))
    z = rng.multivariate_normal(np.full(dim, 3.0), cov, size=4000)
    n_profile = task.profile_mean.numel()
    profile = rng.normal(0.1, 0.01, size=(4000, n_profile))
    task.fit_to_validation({"latent": z, "profile": profile, "score_reconstruction": rng.random(4000)})
    assert np.allclose(task.latent_mean.numpy(), 3.0, atol=0.1)
    assert np.allclose(np.linalg.inv(task.latent_precision.numpy()), cov, atol=0.15)
    assert np.allclose(task.profile_mean.numpy(), 0.1, atol=0.002)
    out = torch.zeros(2, 3 + n_profile + dim)
    out[:, 3 : 3 + n_profile] = 0.1
    out[1, 3 : 3 + n_profile] = 0.2  # ten standard deviations out in every ring
    out[0, 3 + n_profile :] = 3.0
    out[1, 3 + n_profile :] = 3.0 + 5.0
    scores = task.decode(out)
    assert scores["score_latent"][0] < 0.1 < 10 < scores["score_latent"][1]
    assert scores["score_profile"][0] < 0.1 < 100 < scores["score_profile"][1]


def test_radial_profile_is_the_flux_fraction_in_rings_and_ignores_rotation():
    from deeplense.tasks.anomaly import PROFILE_BINS, ring_matrix

    rings = ring_matrix(32)  # rings one pixel wide
    assert rings.shape == (1024, PROFILE_BINS) and torch.all(rings.sum(1) <= 1)
    assert rings[:, 0].sum() == 4  # the four central pixels are in the innermost ring
    image = torch.zeros(1, 1, 32, 32)
    image[0, 0, 15, 15] = 1.0  # central ring
    image[0, 0, 15, 0] = 3.0  # 15.5 pixels out: the outermost ring
    image[0, 0, 0, 0] = 5.0  # a corner: outside every ring
    profile = (image.flatten(2) @ rings).flatten(1)
    assert profile[0, 0] == 1 and profile[0, 15] == 3 and profile.sum() == 4
    torch.manual_seed(0)
    x = torch.rand(3, 1, 32, 32)
    rotated = torch.rot90(x, 1, (2, 3))
    assert torch.allclose((x.flatten(2) @ rings), (rotated.flatten(2) @ rings), atol=1e-5)


@pytest.fixture(scope="module")
def tiny_anomaly_run(tiny_dataset, tmp_path_factory):
    """conv_ae trained for two epochs on the no_sub images of the tiny data set (through the CLI)."""
    root = tmp_path_factory.mktemp("anomaly")
    config = root / "anomaly.yaml"
    config.write_text(
        "task: anomaly\n"
        f"data: {{path: {tiny_dataset}, transforms: [minmax]}}\n"
        "model: {name: conv_ae, kwargs: {widths: [8, 16], latent_dim: 4}}\n"
        "train: {epochs: 2, batch_size: 4}\n"
        f"run: {{dir: {root}, name: ae}}\n"
        "logging: {progress_bar: false}\n"
    )
    run_cli("train", config)
    return root / "ae"


def test_anomaly_run_trains_on_the_normal_class_only(tiny_anomaly_run, tiny_dataset):
    from deeplense.train.config import resolve_config
    from deeplense.train.data import build_data

    contract = json.loads((tiny_anomaly_run / "contract.json").read_text())
    assert contract["task"] == "anomaly"
    assert contract["output"]["class_names"] == ["no_sub", "cdm", "axion"]
    assert contract["provenance"]["class_counts"][1:] == [0, 0]
    assert contract["training"] == {
        "normal_class": "no_sub",
        "anomaly_score": "reconstruction",
        "residual_filter_px": 0.7,
    }
    data = build_data(
        resolve_config({"task": "anomaly", "data": {"path": str(tiny_dataset)}, "model": {"name": "conv_ae"}})
    )
    assert set(data.train.source.metadata["class_name"]) == {"no_sub"}
    assert set(data.val.source.metadata["class_name"]) == {"no_sub"}
    assert set(data.test.source.metadata["class_name"]) == {"no_sub", "cdm", "axion"}


def test_evaluate_anomaly_run_through_the_cli(tiny_anomaly_run, tmp_path):
    out = tmp_path / "eval"
    result = run_cli("evaluate", tiny_anomaly_run, "--out", out)
    assert "reconstruction" in result.stdout and "latent" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["scores"]) == {"reconstruction", "filtered", "latent", "combined", "profile"}
    assert set(metrics["scores"]["latent"]["per_class"]) == {"cdm", "axion"}
    table = pd.read_csv(out / "predictions.csv")
    assert {
        "anomaly_score",
        "score_reconstruction",
        "score_filtered",
        "score_latent",
        "score_combined",
        "score_profile",
    } <= set(table.columns)
    positive = table["label"] > 0
    assert metrics["scores"]["reconstruction"]["auc"] == pytest.approx(
        roc_auc_score(positive, table["score_reconstruction"])
    )
    for figure in ("roc.png", "score_histograms.png", "reconstructions.png"):
        assert (out / figure).stat().st_size > 1000


def test_predict_writes_anomaly_scores(tiny_anomaly_run, tmp_path, tiny_dataset):
    out = tmp_path / "scores.csv"
    run_cli("predict", tiny_anomaly_run, tiny_dataset, "--out", out)
    from deeplense.infer.catalogue import read_catalogue

    table, _ = read_catalogue(out)
    assert len(table) == 36
    assert np.isfinite(table["anomaly_score"]).all()


def test_an_anomaly_detector_finds_a_planted_anomaly():
    """Trained on smooth blobs, the autoencoder scores blobs with a compact bright knot higher."""
    from deeplense.core.contract import InputSpec, ModelContract, ModelSpec, OutputSpec
    from deeplense.tasks import TASKS

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:16, :16]

    def blobs(n, knot):
        cx, cy = rng.uniform(5, 11, n), rng.uniform(5, 11, n)
        images = np.exp(-((xx - cx[:, None, None]) ** 2 + (yy - cy[:, None, None]) ** 2) / 12.0)
        if knot:
            kx, ky = rng.integers(2, 14, n), rng.integers(2, 14, n)
            images[np.arange(n), ky, kx] += 0.8
        return torch.as_tensor(images[:, None] + rng.normal(0, 0.02, images.shape)[:, None], dtype=torch.float32)

    contract = ModelContract(
        task="anomaly",
        model=ModelSpec("conv_ae", {"widths": [8, 16], "latent_dim": 4}),
        input=InputSpec(in_chans=1, img_size=16),
        output=OutputSpec(class_names=["normal", "knot"]),
        training={"normal_class": "normal", "anomaly_score": "reconstruction"},
    )
    torch.manual_seed(0)
    task = TASKS.create("anomaly", contract, {"normal_class": "normal", "anomaly_score": "reconstruction"})
    opt = torch.optim.Adam(task.parameters(), lr=3e-3)
    train = blobs(256, knot=False)
    for step in range(150):
        batch = train[torch.randint(0, 256, (32,))]
        loss = task.training_loss({"image": batch}, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    task.eval()
    with torch.no_grad():
        task.fit_to_validation({k: v.numpy() for k, v in task.predict(blobs(200, knot=False)).items()})
        normal, knotted = task.predict(blobs(200, knot=False)), task.predict(blobs(200, knot=True))
    labels = np.repeat([0, 1], 200)
    for key in ("score_reconstruction", "score_combined"):
        score = np.concatenate([normal[key].numpy(), knotted[key].numpy()])
        assert roc_auc_score(labels, score) > 0.9, key


def test_anomaly_config_errors_name_the_key(tiny_dataset, tmp_path):
    from deeplense.train.config import resolve_config
    from deeplense.train.run import train

    base = {"task": "anomaly", "data": {"path": str(tiny_dataset)}, "model": {"name": "conv_ae"}}
    with pytest.raises(ConfigError, match="model.name"):
        resolve_config({**base, "model": {"name": "small_cnn"}})
    with pytest.raises(ConfigError, match="train.anomaly_score"):
        resolve_config({**base, "train": {"anomaly_score": "magic"}})
    for bad, key in (
        ({"train": {"normal_class": "wdm"}}, "train.normal_class"),
        ({"data": {"path": str(tiny_dataset), "splits": {"train": "train", "val": None, "test": "test"}}}, "val"),
    ):
        config = resolve_config({**base, **bad, "run": {"dir": str(tmp_path), "name": "x"}})
        with pytest.raises(ConfigError, match=key):
            train(config)
    assert not (tmp_path / "x").exists()


def test_an_anomaly_ensemble_is_never_stacked_on_labelled_anomalies(tiny_anomaly_run):
    from deeplense.infer import load_predictor

    task = load_predictor(tiny_anomaly_run).task
    keys = ("score", "score_reconstruction", "score_filtered", "score_latent", "score_combined", "score_profile")
    pred = {k: np.arange(4.0) for k in keys}
    with pytest.raises(ConfigError, match="stack"):
        task.combine_members([pred, pred], "stack")
    combined, _ = task.combine_members([pred, pred], "mean")
    assert np.all(np.diff(combined["score"]) > 0)


def test_anomaly_on_the_fly_simulation_with_ema_renders_normal_training_images(tmp_path):
    """Simulated on the fly, training and validation images are rendered as the normal class
    and the test images as every class; EMA weights are what the run evaluates with."""
    from deeplense.train.config import resolve_config
    from deeplense.train.data import build_data
    from deeplense.train.run import train

    sim = {"preset": "model_i", "set": ["instrument.size=16", "instrument.pixel_scale=0.4"], "seed": 3}
    config = resolve_config(
        {
            "task": "anomaly",
            "data": {"simulate": {**sim, "train": 12, "val": 6, "test": 9}, "transforms": ["minmax"]},
            "model": {"name": "conv_ae", "kwargs": {"widths": [8, 16], "latent_dim": 4}},
            "train": {"epochs": 1, "batch_size": 4, "ema_decay": 0.9, "early_stopping_patience": 1},
            "logging": {"progress_bar": False},
            "run": {"dir": str(tmp_path), "name": "sim"},
        }
    )
    data = build_data(config)
    assert data.class_names == ["no_sub", "cdm", "axion"] and data.class_counts == [12, 0, 0]
    assert data.train.output_class_names == ["no_sub"] and data.val.output_class_names == ["no_sub"]
    assert data.test.output_class_names == ["no_sub", "cdm", "axion"]
    summary = train(config)
    assert summary["test"]["n_per_class"] == {"no_sub": 3, "cdm": 3, "axion": 3}
    assert set(summary["test"]["scores"]["profile"]["per_class"]) == {"cdm", "axion"}
    state = torch.load(tmp_path / "sim" / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    assert any(k.startswith("task.ema.") for k in state)


def test_anomaly_model_exports_to_onnx_with_the_same_scores(tiny_anomaly_run, tiny_dataset, tmp_path):
    import deeplense
    from deeplense.infer import load_predictor
    from deeplense.infer.export import export_model, load_export

    images = deeplense.open_dataset(tiny_dataset).images(np.arange(12))
    model = load_predictor(tiny_anomaly_run)
    export_model(model, "onnx", tmp_path / "onnx", images)
    exported = load_export(tmp_path / "onnx")
    got, expected = exported.predict(images), model.predict(images)
    for key in ("score_reconstruction", "score_latent", "score_profile"):
        assert np.allclose(got[key], expected[key], rtol=1e-4, atol=1e-6), key
    with pytest.raises(ValueError, match="explain"):
        exported.explain(images)


def test_the_aae_discriminator_pulls_the_codes_towards_the_prior():
    """Trained the same way from the same initial weights, the adversarial autoencoder's codes
    are closer to N(0, I) than the plain autoencoder's (mean KS distance per dimension)."""
    from scipy import stats

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:16, :16]
    centres = rng.uniform(4, 12, (512, 2))
    images = np.exp(-((xx - centres[:, :1, None]) ** 2 + (yy - centres[:, 1:, None]) ** 2) / 8.0)
    x = torch.as_tensor(images[:, None], dtype=torch.float32)

    def codes(kind):
        torch.manual_seed(0)
        net = kind(in_chans=1, img_size=16, widths=(8, 16), latent_dim=4)
        opt = torch.optim.Adam(net.parameters(), lr=2e-3)
        for _ in range(300):
            loss = net.training_loss(x[torch.randint(0, 512, (64,))]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            z = net.eval().encode(x).numpy()
        return np.mean([stats.kstest(z[:, j], "norm").statistic for j in range(z.shape[1])])

    assert codes(AdversarialAutoencoder) < 0.6 * codes(ConvAutoencoder)
