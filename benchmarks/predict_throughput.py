"""`deeplense predict` on many FITS cutouts: wall time, images/s and peak memory, with torch and
with ONNX Runtime (the baseline is torch, in the same run).

Writes ``--n`` single-band FITS cutouts (96x96 pixels of 0.05 arcsec with a TAN WCS; the pixels
come from 500 images of the ``lens_finding_hst`` preset, reused with different WCS centres), exports
the shipped ``lens_finder_hst`` to ONNX, then runs ``predict`` in a fresh process per case (one
thread) on the first 1/10 and on all of the files, and prints wall time, images/s, the peak
resident memory of that process, and the ONNX/torch ratio.

    python benchmarks/predict_throughput.py [--n 10000] [--workdir /tmp/predict_bench]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def child(model: str, inputs: str, out: str) -> None:
    """One predict run in this process; prints its JSON line."""
    import torch

    torch.set_num_threads(1)
    import deeplense
    from deeplense.infer import load_predictor

    predictor = load_predictor(model)
    start = time.perf_counter()
    table = deeplense.predict(predictor, inputs, out=out, batch_size=256)
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"n": len(table), "seconds": seconds, "images_per_s": len(table) / seconds, "peak_mib": peak_mib}))


def write_cutouts(folder: Path, n: int) -> None:
    from astropy.io import fits
    from astropy.wcs import WCS

    import deeplense
    from deeplense.evaluate.package import simulate_check_set

    data = simulate_check_set({"preset": "lens_finding_hst", "n_per_class": 46, "seed": 7}, folder.parent / "sim")
    images = deeplense.open_dataset(data).images(np.arange(500))
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = [150.0 + (i % 100) * 0.002, 2.0 + (i // 100) * 0.002]
        w.wcs.crpix = [48.5, 48.5]
        w.wcs.cdelt = [-0.05 / 3600, 0.05 / 3600]
        header = w.to_header()
        header["BUNIT"] = "ELECTRONS/S"
        fits.PrimaryHDU(images[i % len(images), 0], header=header).writeto(folder / f"cut_{i:05d}.fits")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/predict_bench"))
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "INPUTS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    import deeplense
    from deeplense.infer.export import export_model

    folder = args.workdir / "cutouts"
    if not folder.exists() or len(list(folder.iterdir())) < args.n:
        start = time.perf_counter()
        write_cutouts(folder, args.n)
        print(f"wrote {args.n} FITS cutouts in {time.perf_counter() - start:.0f} s")
    model = deeplense.from_pretrained("lens_finder_hst")
    sample = np.stack([np.zeros((1, 96, 96), np.float32) + np.random.default_rng(0).normal(size=(1, 96, 96))] * 8)
    export_model(model, "onnx", args.workdir / "onnx", sample.astype(np.float32))
    small = args.workdir / "small"
    small.mkdir(exist_ok=True)
    for path in sorted(folder.iterdir())[: args.n // 10]:
        target = small / path.name
        if not target.exists():
            target.symlink_to(path)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch and onnxruntime on 1 thread")
    rates = {}
    for backend, model_ref in (("torch", "lens_finder_hst"), ("onnx", str(args.workdir / "onnx"))):
        for label, inputs in ((f"{args.n // 10}", small), (f"{args.n}", folder)):
            out = args.workdir / f"{backend}_{label}.csv"
            out.unlink(missing_ok=True)
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            cmd = [sys.executable, __file__, "--child", model_ref, str(inputs), str(out)]
            got = json.loads(
                subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout.splitlines()[-1]
            )
            rates[(backend, label)] = got["images_per_s"]
            print(
                f"{backend:5s} {got['n']:6d} files: {got['seconds']:7.1f} s, {got['images_per_s']:7.1f} images/s, "
                f"peak memory {got['peak_mib']:.0f} MiB"
            )
    full = f"{args.n}"
    print(f"ONNX Runtime / torch throughput on {full} files: {rates[('onnx', full)] / rates[('torch', full)]:.2f}x")


if __name__ == "__main__":
    main()
