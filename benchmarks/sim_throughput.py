"""Simulation throughput: deeplense's batched torch engine against a per-image lenstronomy loop.

Both render the same configurations (model_i lens, source, PSF, substructure) including the same
noise model; lenstronomy reuses one ImageModel per configuration and rebuilds the lens model per
image (the subhalos change). One process, one thread each. Prints images/s and the ratio.

    python benchmarks/sim_throughput.py [--sizes 64 150] [--n 128] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from lenstronomy.Data.imaging_data import ImageData
from lenstronomy.Data.psf import PSF
from lenstronomy.ImSim.image_model import ImageModel
from lenstronomy.LensModel.lens_model import LensModel
from lenstronomy.LightModel.light_model import LightModel
from lenstronomy.Util import image_util, simulation_util

from deeplense.seeding import image_seed
from deeplense.sim import Simulator, load_preset

CLASSES = {"no_sub": 0, "cdm": 1, "axion": 2}


def config_for(size: int, closed_form: bool) -> dict:
    config = load_preset("model_i")
    config["instrument"]["size"] = size
    config["instrument"]["pixel_scale"] = 0.05 * 150 / size  # same field of view
    config["classes"]["axion"]["options"]["closed_form"] = closed_form
    return config


def lenstronomy_rate(sim: Simulator, label: int, n: int) -> float:
    inst = sim.instrument
    data = ImageData(**simulation_util.data_configure_simple(inst.size, inst.pixel_scale, 1.0, 0.01))
    psf = PSF(psf_type="GAUSSIAN", fwhm=0.087, truncation=4)
    samples = [sim.sample(image_seed(1, i), label) for i in range(n)]
    start = time.perf_counter()
    for s in samples:
        kinds = ["SIE", "SHEAR"] + ["POINT_MASS"] * len(s.subhalos.of("point_mass"))
        main = {k: s.params[0][k] for k in ("theta_E", "e1", "e2", "center_x", "center_y")}
        kwargs = [main, {"gamma1": 0.05, "gamma2": 0.0}]
        kwargs += [dict(theta_E=t, center_x=x, center_y=y) for x, y, t in s.subhalos.of("point_mass")]
        src = {k: s.params[2][k] for k in ("amp", "R_sersic", "n_sersic", "e1", "e2", "center_x", "center_y")}
        model = ImageModel(
            data, psf, lens_model_class=LensModel(kinds), source_model_class=LightModel(["SERSIC_ELLIPSE"])
        )
        image = model.image(kwargs_lens=kwargs, kwargs_source=[src])
        t = s.params[3]["exposure_time"]
        noisy = image + image_util.add_poisson(image, exp_time=t) + image_util.add_background(image, sigma_bkd=0.01)
        np.random.poisson(np.clip(t * noisy, 0, None))
    return n / (time.perf_counter() - start)


def deeplense_rate(sim: Simulator, label: int, n: int, batch: int, noise: bool = True) -> float:
    seeds = [image_seed(1, i) for i in range(n)]
    sim.simulate(seeds[:batch], [label] * batch, noise=noise)  # warm-up
    if sim.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for lo in range(0, n, batch):
        chunk = seeds[lo : lo + batch]
        sim.simulate(chunk, [label] * len(chunk), noise=noise)
    if sim.device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 150])
    parser.add_argument("--n", type=int, default=128, help="images per configuration")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread, device {args.device}")
    print(f"{'size':>5} {'class':>14} {'lenstronomy/s':>14} {'deeplense/s':>12} {'ratio':>7} {'noiseless/s':>12}")
    for size in args.sizes:
        for name, label in CLASSES.items():
            variants = [(name, False)] + ([("axion closed", True)] if name == "axion" else [])
            ref_sim = Simulator(config_for(size, False))
            n_ref = max(16, args.n // (4 if name == "axion" else 1))
            ref = lenstronomy_rate(ref_sim, label, n_ref)
            for label_name, closed in variants:
                sim = Simulator(config_for(size, closed), device=args.device)
                ours = deeplense_rate(sim, label, args.n, args.batch)
                noiseless = deeplense_rate(sim, label, args.n, args.batch, noise=False)
                print(f"{size:>5} {label_name:>14} {ref:>14.0f} {ours:>12.0f} {ours / ref:>6.1f}x {noiseless:>12.0f}")


if __name__ == "__main__":
    main()
