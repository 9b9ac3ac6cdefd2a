"""A 2-D map of an encoder's features (t-SNE from scikit-learn), for ``deeplense evaluate
--embed``: where the classes, or a physical parameter, lie in what the network learnt."""

from __future__ import annotations

import numpy as np

__all__ = ["feature_map"]


def feature_map(features: np.ndarray, max_points: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, xy)``: at most ``max_points`` rows of ``features`` (N, F), drawn without
    replacement from ``seed``, and their 2-D t-SNE coordinates (perplexity 30, or less for few
    images; PCA initialisation). Features are standardised first."""
    from sklearn.manifold import TSNE

    features = np.asarray(features, dtype=np.float64)
    n = len(features)
    if n < 5:
        raise ValueError(f"a feature map needs at least 5 images, got {n}")
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(n, max_points), replace=False))
    chosen = features[rows]
    chosen = (chosen - chosen.mean(0)) / np.maximum(chosen.std(0), 1e-12)
    perplexity = float(min(30.0, (len(rows) - 1) / 3))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(chosen)
    return rows, xy
