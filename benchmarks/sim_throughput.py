"""Simulation throughput: deeplense's batched torch engine against a per-image lenstronomy loop.

Both render the same images (same lens, source, PSF and subhalo catalogue, drawn once by
deeplense) including the same noise recipe; lenstronomy rebuilds its lens and image model per
image, as DeepLenseSim does (the subhalos change). Both are timed on catalogues drawn beforehand;
the rate at which deeplense draws them is printed apart (draw/s). One process, one thread each,
with the allocator setting of ``deeplense.core.runtime`` unless ``--default-malloc``; each rate is the
fastest of ``--repeat`` timed runs (the shared machine's load only slows runs down). Prints images/s
and the ratio for the DeepLense classes of ``model_i`` at each size (``--sizes``) and for the
physical populations of ``cdm_wdm_sidm`` at 64x64 (``--populations``): truncated NFW (cdm),
pseudo-NFW truncated (cdm, wdm) and cored TNFWC (sidm) subhalos.

    python benchmarks/sim_throughput.py [--sizes 64 150] [--populations] [--n 128] [--device cpu|cuda]
        [--default-malloc] [--generator 1|2] [--repeat 3] [--n-reference N]

On a GPU, give deeplense large batches and lenstronomy few images, e.g.
``--device cuda --n 16384 --batch 4096 --n-reference 64``.

``DEEPLENSE_KERNELS=0`` runs deeplense without its compiled CPU kernels (the torch path alone).
"""

from __future__ import annotations

import argparse
import os
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

from deeplense.core.runtime import keep_freed_memory
from deeplense.core.seeding import image_seed
from deeplense.sim import Simulator, load_preset
from deeplense.sim.substructure import PROFILE_COLUMNS

CLASSES = {"no_sub": 0, "cdm": 1, "axion": 2}
#: (row name, cdm_wdm_sidm class, subhalo profile of the cdm class or None for the preset's)
POPULATIONS = [("cdm tnfw", "cdm", "tnfw"), ("cdm pseudo", "cdm", None), ("wdm", "wdm", None), ("sidm", "sidm", None)]


#: Noise scheme of deeplense's images (``--generator``; deeplense.sim.rng).
GENERATOR = {"scheme": 2}


def with_generator(config: dict) -> dict:
    for band in config["instrument"]["bands"]:
        band["noise"].setdefault("options", {})["generator"] = GENERATOR["scheme"]
    return config


def config_for(size: int, closed_form: bool) -> dict:
    config = load_preset("model_i")
    config["instrument"]["size"] = size
    config["instrument"]["pixel_scale"] = 0.05 * 150 / size  # same field of view
    config["classes"]["axion"]["options"]["closed_form"] = closed_form
    return with_generator(config)


LENSTRONOMY_PROFILES = {"point_mass": "POINT_MASS", "nfw": "NFW", "tnfw": "TNFW", "tnfwc": "TNFWC"}


def lenstronomy_rate(sim: Simulator, label: int, n: int, repeat: int) -> tuple[float, float]:
    """Images/s of a per-image lenstronomy loop over the images deeplense draws for ``label``, and
    the largest difference between the two noiseless renderings of the last image (fraction of its
    peak), which checks that both render the same scene."""
    inst = sim.instrument
    data = ImageData(**simulation_util.data_configure_simple(inst.size, inst.pixel_scale, 1.0, 0.01))
    psf = PSF(psf_type="GAUSSIAN", fwhm=0.087, truncation=4)
    scenes = [_lenstronomy_scene(sim, sim.sample(image_seed(1, i), label)) for i in range(n)]

    def loop() -> None:
        for kinds, kwargs, source, t in scenes:
            image = _lenstronomy_image(data, psf, kinds, kwargs, source)
            noisy = image + image_util.add_poisson(image, exp_time=t) + image_util.add_background(image, sigma_bkd=0.01)
            np.random.poisson(np.clip(t * noisy, 0, None))

    reference = _lenstronomy_image(data, psf, *scenes[-1][:3])
    ours = sim.render([sim.sample(image_seed(1, n - 1), label)], noise=False)[0, 0].double().numpy()
    return best_rate(loop, n, repeat), float(np.abs(ours - reference).max() / reference.max())


def _lenstronomy_scene(sim: Simulator, sample) -> tuple[list, list, dict, float]:
    """lenstronomy lens kinds, lens kwargs, source kwargs and exposure time of a deeplense sample."""
    params = dict(zip([c.name for c in sim.components], sample.params))
    kinds = ["SIE", "SHEAR"]
    kwargs = [
        {k: params["main_lens"][k] for k in ("theta_E", "e1", "e2", "center_x", "center_y")},
        dict(params["shear"]) if "shear" in params else {"gamma1": 0.05, "gamma2": 0.0},
    ]
    for profile, table in sample.subhalos.tables.items():
        kinds += [LENSTRONOMY_PROFILES[profile]] * len(table)
        kwargs += [dict(zip(PROFILE_COLUMNS[profile], row)) for row in table]
    source = {k: params["source"][k] for k in ("amp", "R_sersic", "n_sersic", "e1", "e2", "center_x", "center_y")}
    return kinds, kwargs, source, params["noise"]["exposure_time"]


def _lenstronomy_image(data, psf, kinds, kwargs, source) -> np.ndarray:
    """Noiseless image, the lens model rebuilt for the image (the subhalos change), as DeepLenseSim does."""
    model = ImageModel(data, psf, lens_model_class=LensModel(kinds), source_model_class=LightModel(["SERSIC_ELLIPSE"]))
    return model.image(kwargs_lens=kwargs, kwargs_source=[source])


def best_rate(run, n: int, repeat: int) -> float:
    """Images/s of the fastest of ``repeat`` timed runs of ``run`` (which makes ``n`` images): the
    shared machine's load only ever slows a run down."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return n / best


def population_config(profile: str | None) -> dict:
    config = load_preset("cdm_wdm_sidm")
    if profile is not None:
        config["classes"]["cdm"]["options"]["profile"] = profile
    return with_generator(config)


def deeplense_rate(sim: Simulator, label: int, n: int, batch: int, repeat: int, noise: bool = True) -> float:
    """Images/s rendered from catalogues drawn beforehand (what the lenstronomy loop is given)."""
    samples = [sim.sample(image_seed(1, i), label) for i in range(n)]

    def loop() -> None:
        for lo in range(0, n, batch):
            sim.render(samples[lo : lo + batch], noise=noise)
        if sim.device.type == "cuda":
            torch.cuda.synchronize()

    with torch.no_grad():
        sim.render(samples[:batch], noise=noise)  # warm-up (and the kernels' first compilation)
        return best_rate(loop, n, repeat)


def draw_rate(sim: Simulator, label: int, n: int) -> float:
    """Images/s at which deeplense draws parameters and subhalo catalogues (numpy, one core)."""
    start = time.perf_counter()
    for i in range(n):
        sim.sample(image_seed(2, i), label)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[64, 150], help="model_i sizes (none: skip)")
    parser.add_argument("--n", type=int, default=128, help="images per configuration")
    parser.add_argument(
        "--n-reference", type=int, help="lenstronomy images per configuration (default: from --n, a quarter for axion)"
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--populations", action="store_true", help="also the cdm_wdm_sidm populations at 64x64")
    parser.add_argument("--default-malloc", action="store_true", help="leave glibc's allocator settings alone")
    parser.add_argument("--generator", type=int, choices=(1, 2), default=2, help="deeplense's noise scheme")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per rate; the fastest counts")
    args = parser.parse_args()
    GENERATOR["scheme"] = args.generator
    tuned = False if args.default_malloc else keep_freed_memory()
    torch.set_num_threads(1)
    kernels = "off (DEEPLENSE_KERNELS=0)" if os.environ.get("DEEPLENSE_KERNELS", "1") == "0" else "on"
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread, device {args.device},"
        f" allocator tuned: {tuned}, compiled kernels: {kernels}, noise scheme: {args.generator}"
    )
    lenstronomy_rate(Simulator(config_for(64, False)), 1, 4, 1)  # warm-up: lenstronomy's first-call costs
    print(
        f"{'size':>5} {'class':>14} {'lenstronomy/s':>14} {'deeplense/s':>12} {'ratio':>7} {'noiseless/s':>12} {'draw/s':>8} {'max diff':>10}"
    )
    for size in args.sizes:
        for name, label in CLASSES.items():
            variants = [(name, False)] + ([("axion closed", True)] if name == "axion" else [])
            ref_sim = Simulator(config_for(size, False))
            n_ref = args.n_reference or max(16, args.n // (4 if name == "axion" else 1))
            ref, diff = lenstronomy_rate(ref_sim, label, n_ref, args.repeat)
            for label_name, closed in variants:
                sim = Simulator(config_for(size, closed), device=args.device)
                report(size, label_name, ref, diff if not closed else float("nan"), sim, label, args)
    if args.populations:
        for row, class_name, profile in POPULATIONS:
            sim = Simulator(population_config(profile), device=args.device)
            label = sim.class_names.index(class_name)
            ref, diff = lenstronomy_rate(
                Simulator(population_config(profile)), label, args.n_reference or max(16, args.n // 4), args.repeat
            )
            report(sim.instrument.size, row, ref, diff, sim, label, args)


def report(size: int, row: str, ref: float, diff: float, sim: Simulator, label: int, args) -> None:
    ours = deeplense_rate(sim, label, args.n, args.batch, args.repeat)
    noiseless = deeplense_rate(sim, label, args.n, args.batch, args.repeat, noise=False)
    draws = draw_rate(sim, label, args.n)
    print(
        f"{size:>5} {row:>14} {ref:>14.0f} {ours:>12.0f} {ours / ref:>6.1f}x {noiseless:>12.0f} {draws:>8.0f}"
        f" {diff:>10.1e}",
        flush=True,
    )


if __name__ == "__main__":
    main()
