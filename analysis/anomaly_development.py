"""Which anomaly score to report first, decided without the test split.

An anomaly run never reads the cdm and axion images of its data set's training split. This
script uses them as a development set: the normal images are the run's validation images (the
densities are fitted on one half and scored on the other), the anomalies 600 training-split
images of each anomalous class. It prints the AUC of every score the run gives, and of the
alternatives considered (a k-nearest-neighbour distance between latent codes, the largest
local residual, the residual filtered by Gaussians of several widths), so the choice of ``train.anomaly_score`` is made on data the test metrics
never see.

    python analysis/anomaly_development.py runs/<anomaly run> data/<its data set>
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

import deeplense
from deeplense.infer import load_predictor
from deeplense.tasks.anomaly import filtered_power, gaussian_kernel

FILTER_WIDTHS = (0.7, 1.0, 1.5, 2.0, 3.0)  # pixels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("data")
    parser.add_argument("--per-class", type=int, default=600)
    args = parser.parse_args()
    model = load_predictor(args.run)
    names = model.contract.output.class_names
    normal = model.contract.training["normal_class"]
    source = deeplense.open_dataset(args.data)
    train, val = source.subset("train"), source.subset("val")
    rng = np.random.default_rng(0)
    normal_images = val.images(np.flatnonzero(np.asarray(val.class_names)[val.labels] == normal))
    half = len(normal_images) // 2
    train_names = np.asarray(train.class_names)[train.labels]
    anomalies = {
        c: train.images(np.sort(rng.choice(np.flatnonzero(train_names == c), args.per_class, replace=False)))
        for c in names
        if c != normal
    }
    fit_normal = rng.choice(np.flatnonzero(train_names == normal), 1500, replace=False)

    def features(images: np.ndarray) -> dict[str, np.ndarray]:
        pred, maps = model.predict(images), model.explain(images)
        squared = torch.as_tensor((maps["residual"] ** 2).sum(1, keepdims=True))
        local = torch.nn.functional.avg_pool2d(squared, 4, 1).amax((1, 2, 3)).numpy()
        residual = torch.as_tensor(maps["residual"])
        filtered = {f"filtered {w}": filtered_power(residual, gaussian_kernel(w)).numpy() for w in FILTER_WIDTHS}
        return {"reconstruction": pred["score_reconstruction"], "latent": pred["latent"]} | {
            "profile": pred["profile"],
            "local": local,
            **filtered,
        }

    fit, held = features(normal_images[:half]), features(normal_images[half:])
    known = features(train.images(np.sort(fit_normal)))
    latent, profile = LedoitWolf().fit(fit["latent"]), LedoitWolf().fit(fit["profile"])
    neighbours = NearestNeighbors(n_neighbors=5).fit(known["latent"])
    scores = {
        "reconstruction": lambda f: f["reconstruction"],
        "latent (Mahalanobis)": lambda f: latent.mahalanobis(f["latent"]),
        "latent (5-NN distance)": lambda f: neighbours.kneighbors(f["latent"])[0].mean(1),
        "largest local residual": lambda f: f["local"],
        "profile (Mahalanobis)": lambda f: profile.mahalanobis(f["profile"]),
        **{f"filtered, {w} px": (lambda f, key=f"filtered {w}": f[key]) for w in FILTER_WIDTHS},
    }
    per_class = {c: features(images) for c, images in anomalies.items()}
    print(f"{'score':24s} " + " ".join(f"{c:>8s}" for c in per_class))
    for name, score in scores.items():
        s0 = score(held)
        aucs = [
            roc_auc_score(np.r_[np.zeros(len(s0)), np.ones(len(s1))], np.r_[s0, s1])
            for s1 in map(score, per_class.values())
        ]
        print(f"{name:24s} " + " ".join(f"{a:8.3f}" for a in aucs))


if __name__ == "__main__":
    main()
