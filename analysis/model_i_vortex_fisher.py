"""How much a `model_i` axion image says about log10 m_a: Fisher information and a Bayes bound.

The `model_i` lens is fixed (SIE + shear, PHYSICS.md section 1); an axion image differs from
another only by the source centre (x_s, y_s), the vortex angle phi, log10 m_a (through the vortex
half-length L = 0.03" x 1e-22 eV / m_a) and the exposure time t. This script renders the scene
with lenstronomy (the physics oracle, not deeplense), differentiates it numerically in
(log10 m_a, phi, x_s, y_s) and forms the Fisher matrix with the pixel variance of the released
files' noise (2 C + (0.01 t)^2 for expected counts C). sqrt((F^-1)_00) is the smallest standard
deviation an unbiased estimator of log10 m_a can have with the other three unknown (Cramer-Rao).

Below L of about 1" the image only sees the vortex's quadrupole, whose amplitude scales as
L^2 = 10^(-2 log10 m_a): the information then reduces to one number A = 10^(-2 (log10 m_a + 23))
measured with a constant error sigma_A. The script fits sigma_A to the Fisher errors and computes
the MAE of the posterior median for log10 m_a ~ U(-24, -22) in that one-number model: an estimate
of the best MAE any method can reach on these images.

    python analysis/model_i_vortex_fisher.py [--binned] [--scenes 6]

``--binned``: the networks' input (central 128 px binned 2x2) instead of the full 150x150 image.
"""

from __future__ import annotations

import argparse

import numpy as np
from lenstronomy.Data.imaging_data import ImageData
from lenstronomy.Data.psf import PSF
from lenstronomy.ImSim.image_model import ImageModel
from lenstronomy.LensModel.lens_model import LensModel
from lenstronomy.LightModel.light_model import LightModel

SIZE, PIXEL = 150, 0.05  # pixels, arcsec
THETA_E_MAIN, THETA_E_ELEMENT = 1.2814906, 0.0221961  # arcsec (PHYSICS.md, luminosity distances)
N_ELEMENTS = 100


def image_model() -> ImageModel:
    origin = -(SIZE - 1) / 2 * PIXEL
    data = ImageData(
        image_data=np.zeros((SIZE, SIZE)),
        ra_at_xy_0=origin,
        dec_at_xy_0=origin,
        transform_pix2angle=np.array([[PIXEL, 0.0], [0.0, PIXEL]]),
    )
    psf = PSF(psf_type="GAUSSIAN", fwhm=0.087, truncation=4, pixel_size=PIXEL)
    lens = LensModel(["SIE", "SHEAR"] + ["POINT_MASS"] * N_ELEMENTS)
    return ImageModel(data, psf, lens_model_class=lens, source_model_class=LightModel(["SERSIC_ELLIPSE"]))


def render(model: ImageModel, log10_m_a: float, phi: float, x_s: float, y_s: float) -> np.ndarray:
    """Noise-free image (flux per pixel) of one axion scene."""
    half_length = 0.03 * 10 ** (-22 - log10_m_a)
    lens = [
        {"theta_E": THETA_E_MAIN, "e1": 0.1, "e2": 0.0, "center_x": 0.0, "center_y": 0.0},
        {"gamma1": 0.05, "gamma2": 0.0},
    ] + [
        {"theta_E": THETA_E_ELEMENT, "center_x": s * np.cos(phi), "center_y": s * np.sin(phi)}
        for s in np.linspace(-half_length, half_length, N_ELEMENTS)
    ]
    source = [{"amp": 20.0, "R_sersic": 0.25, "n_sersic": 1.0, "e1": -0.1, "e2": 0.1, "center_x": x_s, "center_y": y_s}]
    return model.image(lens, source)


def observed(image: np.ndarray, binned: bool) -> np.ndarray:
    """What the network sees: the whole image, or its central 128 px summed in 2x2 blocks."""
    if not binned:
        return image
    lo = (SIZE - 128) // 2
    return image[lo : lo + 128, lo : lo + 128].reshape(64, 2, 64, 2).sum((1, 3))


def sigma_log10_m_a(model, params, exposure, binned) -> float:
    """Cramer-Rao standard deviation of log10 m_a with phi, x_s, y_s unknown."""
    steps = np.array([0.01, 1e-3, 1e-4, 1e-4])
    counts = observed(exposure * render(model, *params), binned)
    # summed 2x2 blocks carry 4 background variances
    variance = 2 * np.clip(counts, 0, None) + (4 if binned else 1) * (0.01 * exposure) ** 2
    jacobian = []
    for i, step in enumerate(steps):
        delta = np.zeros(4)
        delta[i] = step
        diff = render(model, *(params + delta)) - render(model, *(params - delta))
        jacobian.append(observed(exposure * diff, binned).ravel() / (2 * step))
    jacobian = np.array(jacobian)
    fisher = (jacobian / variance.ravel()) @ jacobian.T
    return float(np.sqrt(np.linalg.inv(fisher)[0, 0]))


def bayes_mae(sigma_a: float, n: int, rng: np.random.Generator) -> tuple[float, np.ndarray]:
    """MAE of the posterior median when only A = 10^(-2 (m + 23)) is seen, with error sigma_A."""
    grid = np.linspace(-24.0, -22.0, 4001)
    amplitude = 10 ** (-2 * (grid + 23))
    truth = rng.uniform(-24.0, -22.0, n)
    seen = 10 ** (-2 * (truth + 23)) + rng.normal(0.0, sigma_a, n)
    errors = np.empty(n)
    for i, (t, s) in enumerate(zip(truth, seen)):
        log_post = -0.5 * ((s - amplitude) / sigma_a) ** 2
        cdf = np.cumsum(np.exp(log_post - log_post.max()))
        errors[i] = abs(grid[np.searchsorted(cdf / cdf[-1], 0.5)] - t)
    edges = np.arange(-24.0, -21.99, 0.25)
    per_bin = np.array([errors[(truth >= a) & (truth < b)].mean() for a, b in zip(edges[:-1], edges[1:])])
    return float(errors.mean()), per_bin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binned", action="store_true", help="central 128 px binned 2x2, as the networks see it")
    parser.add_argument("--scenes", type=int, default=6, help="random scenes per log10 m_a value")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng, model = np.random.default_rng(args.seed), image_model()

    print(f"{'log10 m_a':>9} {'L (arcsec)':>10} {'median sigma':>12} {'range':>15} {'sigma_A':>8}")
    quadrupole_sigma_a = []
    for log10_m_a in np.arange(-24.0, -21.99, 0.25):
        sigmas = []
        for _ in range(args.scenes):
            phi, x_s, y_s = rng.uniform(0, np.pi), *rng.uniform(-0.35, 0.35, 2)
            exposure = 10 ** rng.uniform(3.0, 3.5)  # s, the preset's prior
            sigmas.append(sigma_log10_m_a(model, np.array([log10_m_a, phi, x_s, y_s]), exposure, args.binned))
        sigma = float(np.median(sigmas))
        half_length = 0.03 * 10 ** (-22 - log10_m_a)
        # error of the quadrupole amplitude implied by sigma: |dA/dm| = 2 ln(10) A
        sigma_a = sigma * 2 * np.log(10) * 10 ** (-2 * (log10_m_a + 23))
        if half_length < 0.6:  # lines well inside the Einstein ring: quadrupole only
            quadrupole_sigma_a.append(sigma_a)
        print(
            f"{log10_m_a:9.2f} {half_length:10.2f} {sigma:12.4f} {min(sigmas):7.4f}-{max(sigmas):7.4f} {sigma_a:8.3f}"
        )

    sigma_a = float(np.median(quadrupole_sigma_a))
    mae, per_bin = bayes_mae(sigma_a, 4000, rng)
    print(f'\nquadrupole amplitude error sigma_A = {sigma_a:.3f} (median over L < 0.6")')
    print(f"Bayes MAE of log10 m_a in the one-number model: {mae:.3f} dex (constant predictor: 0.5)")
    print("per quarter dex from -24:", " ".join(f"{v:.3f}" for v in per_bin))


if __name__ == "__main__":
    main()
