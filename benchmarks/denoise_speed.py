"""Denoiser speed on one CPU core: seconds per megapixel, against CBM3D in the same run.

    python -m benchmarks.denoise_speed [--model denoiser] [--baseline-model PATH]
        [--images N] [--sigma 25] [--ensembles 1,8] [--no-cbm3d] [--megapixels 12]

Images: ../shared/datasets/CBSD68 when present, else the embedded sample photographs, with
seeded 8-bit Gaussian noise.  TensorFlow runs one thread (as one Beam worker per core does);
each variant denoises every image once after a warm-up on the first, and the report gives
seconds per megapixel and each variant's ratio to CBM3D (the ``bm3d`` package) measured in
the same process, so a busy machine slows all alike.  ``--megapixels N`` times one
photograph of N megapixels instead (``benchmarks.memory.photograph``): the size of a camera's,
denoised in tiles, so the tiles' overlap is part of the cost.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import tensorflow as tf

from benchmarks.codec_speed import load_images
from models.inference import Denoiser
from transforms.denoise_baselines import bm3d_color


def seconds(denoise, images: list[np.ndarray]) -> float:
    denoise(images[0][:256, :256])  # warm-up: traces the signature (shapes are not fixed)
    start = time.process_time()
    for image in images:
        denoise(image)
    return time.process_time() - start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="denoiser")
    parser.add_argument("--baseline-model", help="Another denoiser to time beside it.")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--sigma", type=float, default=25.0)
    parser.add_argument("--ensembles", default="1,8", help="Self-ensemble sizes to time.")
    parser.add_argument("--no-cbm3d", action="store_true", help="Skip CBM3D (slow).")
    parser.add_argument(
        "--megapixels",
        type=float,
        default=0,
        help="Time one photograph of this size (tiled) instead of the data set's images.",
    )
    args = parser.parse_args(argv)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # called in a process whose TensorFlow already runs (tests)
        pass
    rng = np.random.default_rng(25)
    if args.megapixels:
        import tempfile
        from pathlib import Path

        from PIL import Image

        from benchmarks.memory import photograph

        with tempfile.TemporaryDirectory() as folder:
            path = photograph(args.megapixels, Path(folder) / "photo.png")
            clean = [np.asarray(Image.open(path).convert("RGB"))]
    else:
        clean = load_images(args.images)
    images = [
        np.clip(np.rint(x + rng.normal(0.0, args.sigma, x.shape)), 0, 255).astype(np.uint8)
        for x in clean
    ]
    megapixels = sum(x.shape[0] * x.shape[1] for x in images) / 1e6
    variants = {}
    for size in (int(v) for v in args.ensembles.split(",")):
        variants[f"{args.model} x{size}"] = Denoiser(args.model, ensemble=size).denoise
    if args.baseline_model:
        variants[args.baseline_model] = Denoiser(args.baseline_model).denoise
    if not args.no_cbm3d:
        variants["cbm3d"] = lambda x: bm3d_color(x, args.sigma)
    per_megapixel = {}
    for name, denoise in variants.items():
        per_megapixel[name] = round(seconds(denoise, images) / megapixels, 2)
        print(f"{name}: {per_megapixel[name]} CPU s per megapixel", flush=True)
    results = {
        "images": len(images),
        "megapixels": round(megapixels, 3),
        "cpu_seconds_per_megapixel": per_megapixel,
    }
    if "cbm3d" in per_megapixel:
        results["times_faster_than_cbm3d"] = {
            name: round(per_megapixel["cbm3d"] / value, 1)
            for name, value in per_megapixel.items()
            if name != "cbm3d"
        }
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
