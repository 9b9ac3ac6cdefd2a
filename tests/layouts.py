"""Writers of the DeepLense file layouts in circulation, for tests (small images, real files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _image(rng, size=16, bands=None):
    shape = (size, size) if bands is None else (bands, size, size)
    return rng.random(shape).astype(np.float64)


def save_object_pair(path: Path, image: np.ndarray, value: float) -> None:
    """The axion-file format: a pickled 2-element object array ``[image, m_a]``."""
    pair = np.empty(2, dtype=object)
    pair[0], pair[1] = image, value
    np.save(path, pair, allow_pickle=True)


def model_i(root: Path, n=4, size=16, seed=0) -> dict[str, np.ndarray]:
    """``Model_I/{axion,cdm,no_sub}/*.npy``; axion files are ``[image, m_a]`` object arrays."""
    rng = np.random.default_rng(seed)
    masses = 10 ** rng.uniform(-24, -22, n)
    for cls in ("axion", "cdm", "no_sub"):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            image = _image(rng, size)
            if cls == "axion":
                save_object_pair(root / cls / f"{cls}_sim_{i}.npy", image, masses[i])
            else:
                np.save(root / cls / f"{cls}_sim_{i}.npy", image)
    return {"m_a": masses}


def gsoc(root: Path, n=3, size=16, seed=1) -> None:
    """``{train,val}/{no,sphere,vort}/*.npy`` min-max normalised, with a leading band axis."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for cls in ("no", "sphere", "vort"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                image = _image(rng, size)[None]
                np.save(root / split / cls / f"{i}.npy", (image - image.min()) / np.ptp(image))


def lens_finding(root: Path, n_lens=2, n_non=6, size=16, seed=2) -> None:
    """``{train,test}_{lenses,nonlenses}/*.npy`` with (3, H, W) images."""
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for cls, n in (("lenses", n_lens), ("nonlenses", n_non)):
            (root / f"{split}_{cls}").mkdir(parents=True)
            for i in range(n):
                np.save(root / f"{split}_{cls}" / f"img_{i}.npy", _image(rng, size, bands=3).astype(np.float32))
