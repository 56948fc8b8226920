"""What latent refinement buys and costs: quality, rate and encode time against its steps.

    python -m benchmarks.refinement [--model codec-high-rate] [--images 6]
        [--qualities 60,100] [--steps 0,5,10,20,40]

Images: ../shared/datasets/CBSD68 when present, else the embedded sample photographs.  For
each quality and number of steps, every image is compressed (real code files, decoded by the
plain decoder) and timed; 0 steps is the baseline of the same run, so the encode figures are
ratios to it (``encode_x``) as well as seconds per megapixel.  ``loss`` is what the refinement
lowers, bpp + lambda * mse at that quality, measured on the files.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from benchmarks.codec_speed import load_images
from models.compressor import Compressor
from models.inference import psnr


def measure(model: str, images: list, quality: float, steps: int, plain: Compressor) -> dict:
    compressor = Compressor(model, refine_steps=steps) if steps else plain
    compressor.compress(images[0][:64, :64], quality=quality)  # warm-up: tracing, loading
    bits = squared = seconds = 0.0
    pixels = sum(x.shape[0] * x.shape[1] for x in images)
    psnrs = []
    for x in images:
        start = time.perf_counter()
        data = compressor.compress(x, quality=quality)
        seconds += time.perf_counter() - start
        decoded = plain.decompress(data)
        bits += 8 * len(data)
        squared += np.sum((decoded.astype(np.float64) - x) ** 2) / 3
        psnrs.append(psnr(x, decoded))
    bpp, mse = bits / pixels, squared / pixels
    return {
        "quality": quality,
        "steps": steps,
        "bpp": round(bpp, 4),
        "psnr_db": round(float(np.mean(psnrs)), 3),
        "loss": round(bpp + plain.refiner.lmbda(quality) * mse, 4),
        "encode_s_per_mp": round(seconds / (pixels / 1e6), 2),
    }


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="codec-high-rate")
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--qualities", default="60,100")
    parser.add_argument("--steps", default="0,5,10,20,40")
    args = parser.parse_args(argv)
    images = load_images(args.images)
    plain = Compressor(args.model)
    rows = []
    for quality in [float(q) for q in args.qualities.split(",")]:
        baseline = None
        for steps in sorted(int(s) for s in args.steps.split(",")):
            row = measure(args.model, images, quality, steps, plain)
            baseline = baseline or row
            row["encode_x"] = round(row["encode_s_per_mp"] / baseline["encode_s_per_mp"], 1)
            row["bpp_change_pct"] = round(100 * (row["bpp"] / baseline["bpp"] - 1), 2)
            row["psnr_gain_db"] = round(row["psnr_db"] - baseline["psnr_db"], 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


if __name__ == "__main__":
    main()
