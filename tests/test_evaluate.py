"""Evaluation, comparison, profiling and the demo through the real CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli as run
from deeplense import open_dataset
from deeplense.tasks.metrics import (
    bootstrap_auc,
    classification_metrics,
    errors_by_truth,
    rank_auc,
    tpr_at_false_positives,
)


def test_tpr_at_false_positives_and_binary_metrics():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    positive = np.array([1, 1, 0, 1, 0, 1, 0], bool)
    assert tpr_at_false_positives(scores, positive, 0) == 0.5  # 0.9, 0.8 above the best negative 0.7
    assert tpr_at_false_positives(scores, positive, 1) == 0.75  # one negative allowed: threshold 0.5
    assert tpr_at_false_positives(scores, positive, 3) == 1.0
    probs = np.stack([1 - scores, scores], 1)
    m = classification_metrics(probs, positive.astype(int), ["nonlens", "lens"], n_boot=200)
    assert m["auc"] == pytest.approx(9 / 12)  # 9 of the 12 positive-negative pairs are ordered
    assert m["tpr_0"] == 0.5 and m["tpr_10"] == 1.0 and 0 < m["average_precision"] <= 1
    assert m["auc_ci"][0] <= m["auc"] <= m["auc_ci"][1]


def test_errors_by_truth_bins_the_true_values():
    truth = np.array([0.0, 0.1, 0.9, 1.0, 2.0, 3.9, 4.0])
    err = np.array([1.0, -1.0, 2.0, 2.0, 0.5, -3.0, -1.0])
    rows = errors_by_truth(truth, err, bins=4)
    assert [(r["lo"], r["hi"], r["n"]) for r in rows] == [(0.0, 1.0, 3), (1.0, 2.0, 1), (2.0, 3.0, 1), (3.0, 4.0, 2)]
    assert rows[0]["mae"] == pytest.approx(4 / 3) and rows[0]["bias"] == pytest.approx(2 / 3)
    assert rows[3]["mae"] == pytest.approx(2.0) and rows[3]["bias"] == pytest.approx(
        -2.0
    )  # the maximum is in the last bin
    empty = errors_by_truth(np.array([0.0, 1.0]), np.array([1.0, 1.0]), bins=4)
    assert empty[1]["n"] == 0 and empty[1]["mae"] is None


def test_bootstrap_interval_narrows_with_more_data(rng):
    def interval(n):
        labels = np.arange(n) % 3
        logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[labels]
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        ci = bootstrap_auc(probs, labels, 3, n_boot=300)["macro"]
        return ci[1] - ci[0]

    assert interval(3000) < interval(150) / 2


def test_evaluate_own_test_split_and_a_foreign_layout_give_the_same_numbers(tiny_runs, tmp_path):
    run_dir = tiny_runs["cls"]
    result = run("evaluate", run_dir, "--out", tmp_path / "own", "--bootstrap", "100")
    assert "auc_macro" in result.stdout and "report:" in result.stdout
    own = json.loads((tmp_path / "own" / "metrics.json").read_text())
    stored = json.loads((run_dir / "test_metrics.json").read_text())
    assert own["auc_macro"] == pytest.approx(stored["auc_macro"]) and own["n"] == stored["n"]
    assert own["auc_macro_ci"][0] <= own["auc_macro"] <= own["auc_macro_ci"][1]
    for figure in ("roc", "confusion", "reliability", "examples"):
        assert (tmp_path / "own" / f"{figure}.png").stat().st_size > 5000
        assert (tmp_path / "own" / f"{figure}.pdf").read_bytes().startswith(b"%PDF")
    html = (tmp_path / "own" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and "<img alt='roc'" in html
    assert "src='http" not in html and 'src="http' not in html  # self-contained
    assert "Training data and model contract" in html and "small_cnn" in html
    # the same test images, written out as the released per-file layout, through the readers
    source = open_dataset(
        json.loads((run_dir / "contract.json").read_text())["provenance"]["data"]["path"], split="test"
    )
    for i in range(len(source)):
        folder = tmp_path / "Model_I" / source.class_names[source.labels[i]]
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"img_{i}.npy", source.image(i)[0].astype(np.float64))
    scale = json.loads((run_dir / "contract.json").read_text())["input"]["pixel_scale_arcsec"]
    refused = run("evaluate", run_dir, "--data", tmp_path / "Model_I", "--out", tmp_path / "foreign", check=False)
    assert refused.returncode == 2 and "pixel scale unknown" in refused.stderr and "--pixel-scale" in refused.stderr
    assert not (tmp_path / "foreign").exists()
    args = ("--out", tmp_path / "foreign", "--bootstrap", "0", "--pixel-scale", str(scale))
    run("evaluate", run_dir, "--data", tmp_path / "Model_I", *args)
    foreign = json.loads((tmp_path / "foreign" / "metrics.json").read_text())
    assert foreign["data"]["layout"] == "class_folders"
    assert foreign["auc_macro"] == pytest.approx(own["auc_macro"], abs=1e-6)
    assert foreign["confusion_matrix"] == own["confusion_matrix"]


def test_evaluate_regression_reports_coverage_and_figures(tiny_runs, tmp_path):
    result = run("evaluate", tiny_runs["reg"], "--out", tmp_path / "reg")
    assert "MAE" in result.stdout and "coverage 68%" in result.stdout
    metrics = json.loads((tmp_path / "reg" / "metrics.json").read_text())
    entry = metrics["substructure.log10_m_a"]
    assert {"mae", "rmse", "r2", "bias", "coverage_68", "coverage_95"} <= set(entry)
    assert (tmp_path / "reg" / "pred_vs_true_substructure_log10_m_a.png").exists()
    assert (tmp_path / "reg" / "residuals_substructure_log10_m_a.pdf").exists()


@pytest.mark.parametrize(("run_name", "group", "elements"), [("cls", "d4", range(8)), ("reg", "d2", (0, 2, 4, 6))])
def test_test_time_augmentation_is_the_mixture_of_the_transformed_images(tiny_runs, run_name, group, elements):
    import torch

    from deeplense.data.transforms import dihedral
    from deeplense.infer import load_predictor

    model = load_predictor(tiny_runs[run_name])
    source = open_dataset(model.contract.provenance.data["path"], split="test")
    images = torch.as_tensor(source.images(np.arange(len(source))))
    views = [model.predict(dihedral(images, e).numpy()) for e in elements]  # minmax commutes with them
    averaged = model.predict(images.numpy(), tta=group)
    if run_name == "cls":
        expected = np.mean([v["probs"] for v in views], axis=0)
        assert np.allclose(averaged["probs"], expected, atol=1e-6)
        assert not np.allclose(averaged["probs"], views[0]["probs"], atol=1e-4)  # the small CNN is not invariant
    else:
        means, sigmas = np.array([v["mean"] for v in views]), np.array([v["sigma"] for v in views])
        assert np.allclose(averaged["mean"], means.mean(0), atol=1e-5)
        assert np.allclose(averaged["sigma"] ** 2, (sigmas**2).mean(0) + means.var(0), rtol=1e-4)
    with pytest.raises(ValueError, match="tta"):
        model.predict(images.numpy(), tta="c8")


def test_evaluate_cli_with_test_time_augmentation(tiny_runs, tmp_path):
    result = run("evaluate", tiny_runs["reg"], "--out", tmp_path / "tta", "--tta", "d4")
    assert "MAE" in result.stdout
    assert json.loads((tmp_path / "tta" / "metrics.json").read_text())["test_time_augmentation"] == "d4"


def test_evaluate_rejects_data_the_model_cannot_score(tiny_runs, tmp_path):
    folder = tmp_path / "wdm"
    folder.mkdir()
    np.save(folder / "a.npy", np.zeros((16, 16)))
    result = run("evaluate", tiny_runs["cls"], "--data", tmp_path, check=False)
    assert result.returncode == 2 and "class 'wdm' is not one the model predicts" in result.stderr


def test_compare_writes_a_ranked_leaderboard_and_roc_overlay(tiny_runs, tmp_path):
    result = run("compare", tiny_runs["cls"], tiny_runs["cls2"], "--out", tmp_path / "cmp")
    board = pd.read_csv(tmp_path / "cmp" / "leaderboard.csv")
    assert board["rank"].tolist() == [1, 2] and set(board["run"]) == {"cls", "cls2"}
    assert board["auc_macro"].is_monotonic_decreasing
    assert {"parameters", "train_minutes", "train_images_per_s", "auc_no_sub"} <= set(board.columns)
    assert "| rank | run |" in result.stdout
    assert (tmp_path / "cmp" / "roc_overlay.png").exists()


def test_profile_reports_throughput_and_memory():
    result = run("profile", "small_cnn", "--img-size", "32", "--batch", "8")
    assert "parameters" in result.stdout and "images/s" in result.stdout and "peak memory" in result.stdout


def test_demo_runs_end_to_end_and_reuses_its_work(tmp_path):
    first = run("demo", "--out", tmp_path / "demo", "--n-per-class", "40", "--epochs", "1")
    assert "test macro ROC AUC" in first.stdout and "report:" in first.stdout
    headline = json.loads((tmp_path / "demo" / "headline.json").read_text())
    assert 0 <= headline["test_auc_macro"] <= 1 and headline["n_test"] == 12
    assert (tmp_path / "demo" / "report" / "report.html").exists()
    second = run("demo", "--out", tmp_path / "demo", "--n-per-class", "40", "--epochs", "1")
    assert "0 rendered now, 120 reused" in second.stdout and "reuse the trained model" in second.stdout
    assert json.loads((tmp_path / "demo" / "headline.json").read_text())["test_auc_macro"] == headline["test_auc_macro"]


def test_class_names_mean_the_same_in_every_layout(tmp_path):
    """A lens finder trained on the lens_finding preset (non_lens, lens) reads DeepLense
    lens-finding folders (nonlenses, lenses) directly."""
    import deeplense

    model = deeplense.from_pretrained("lens_finder_lsst")
    assert model.contract.output.class_names == ["non_lens", "lens"]
    for k, folder in enumerate(["lenses", "nonlenses", "lenses"]):
        (tmp_path / folder).mkdir(exist_ok=True)
        np.save(tmp_path / folder / f"img_{k}.npy", np.zeros((3, 64, 64), np.float32))
    source = open_dataset(tmp_path)
    truth = model.task.truth_from_source(source, str(tmp_path))
    expected = [
        model.contract.output.class_names.index("lens" if c == "lens" else "non_lens")
        for c in source.metadata["class_name"]
    ]
    assert truth["label"].tolist() == expected and sorted(expected) == [0, 1, 1]


def test_a_regressor_evaluates_a_class_folder_set_on_the_classes_with_its_target(tiny_runs, tmp_path):
    from deeplense.infer import load_predictor

    model = load_predictor(tiny_runs["reg"])
    source = open_dataset(json.loads((tiny_runs["cls"] / "contract.json").read_text())["provenance"]["data"]["path"])
    axion = []
    for i in range(len(source)):
        name = source.class_names[source.labels[i]]
        folder = tmp_path / "Model_I" / name
        folder.mkdir(parents=True, exist_ok=True)
        image = source.image(i)[0].astype(np.float64)
        if name == "axion":  # the released files: [image, m_a in eV] object arrays
            pair = np.empty(2, dtype=object)
            pair[0], pair[1] = image, 10 ** float(source.metadata["substructure.log10_m_a"].iloc[i])
            np.save(folder / f"img_{i}.npy", pair, allow_pickle=True)
            axion.append(i)
        else:
            np.save(folder / f"img_{i}.npy", image)
    args = ("--out", tmp_path / "ev", "--bootstrap", "0", "--pixel-scale", "0.2")
    run("evaluate", tiny_runs["reg"], "--data", tmp_path / "Model_I", *args)
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["data"]["n"] == len(axion) == 12
    pred = model.predict(source.images(np.array(axion)))["mean"][:, 0]
    truth = source.metadata["substructure.log10_m_a"].to_numpy()[axion]
    assert metrics["substructure.log10_m_a"]["mae"] == pytest.approx(np.abs(pred - truth).mean(), abs=1e-5)
    table = pd.read_csv(tmp_path / "ev" / "predictions.csv")
    assert table["file"].str.contains("/axion/").all() and len(table) == len(axion)


def test_the_rank_auc_equals_scikit_learns_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    positive = rng.random(500) < 0.3
    score = np.round(rng.normal(size=500) + positive, 1)  # rounded: many ties
    assert rank_auc(positive, score) == pytest.approx(roc_auc_score(positive, score), abs=1e-12)
