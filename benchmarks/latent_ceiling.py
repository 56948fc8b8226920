"""How many latents a quality needs: the linear ceiling of M latents per 16x16 block.

    python -m benchmarks.latent_ceiling [--latents 128,192,256,320] [--fit 'train/*.jpg']
        [--images 'eval/*.png'] [--fit-images 200]

The codec keeps M latents for every 16x16x3 block of pixels (768 numbers), so M bounds what
even unquantized latents can carry.  The best *linear* code of that size is the block's first
M principal components (PCA fitted on ``--fit``, measured on ``--images``): its PSNR is a
ceiling a shape should clear with room to spare before its training is paid for.  A learned
transform overlaps blocks and is non-linear, so it can pass this ceiling, but measured
(2026-12-05) the 112/192/3x3 codec's unquantized ceiling flattened at the same height: CBSD68
35.4 dB for M=192 (its quality 100 gave 36.0 dB on CBSD68), 41.2 dB for M=256, 49.7 dB
for M=320.

Defaults: fitted on CBSD432 and measured on CBSD68 when ``../shared/datasets`` is there, else
both on the embedded sample photographs (a smoke run, not a measurement).
"""

from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

import numpy as np
from PIL import Image

from models.codec import LATENT_STRIDE

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
BLOCK_VALUES = LATENT_STRIDE * LATENT_STRIDE * 3


def blocks(paths: list[str]) -> np.ndarray:
    """Every whole 16x16 block of the images as rows of 768 values (float64, 0-255)."""
    rows = []
    for path in paths:
        pixels = np.asarray(Image.open(path).convert("RGB"), np.float64)
        height = pixels.shape[0] // LATENT_STRIDE * LATENT_STRIDE
        width = pixels.shape[1] // LATENT_STRIDE * LATENT_STRIDE
        grid = pixels[:height, :width].reshape(
            height // LATENT_STRIDE, LATENT_STRIDE, width // LATENT_STRIDE, LATENT_STRIDE, 3
        )
        rows.append(grid.transpose(0, 2, 1, 3, 4).reshape(-1, BLOCK_VALUES))
    if not rows:
        raise ValueError("no images")
    return np.concatenate(rows)


def linear_ceilings(fit: np.ndarray, test: np.ndarray, latents: list[int]) -> dict[int, float]:
    """PSNR (dB, pixels rounded and clipped as a decoder would) of ``test`` blocks kept to
    their first M principal components of ``fit``, for each M."""
    mean = fit.mean(axis=0)
    _, _, components = np.linalg.svd(fit - mean, full_matrices=False)
    ceilings = {}
    for count in latents:
        basis = components[:count]
        kept = (test - mean) @ basis.T @ basis + mean
        mse = np.mean((np.clip(np.round(kept), 0, 255) - test) ** 2)
        ceilings[count] = float(10 * np.log10(255.0**2 / max(mse, 1e-10)))
    return ceilings


def default_images() -> tuple[list[str], list[str], str]:
    fit = sorted(glob.glob(str(DATASETS / "CBSD432" / "*.jpg")))
    test = sorted(glob.glob(str(DATASETS / "CBSD68" / "*.png")))
    if fit and test:
        return fit, test, "fitted on CBSD432, measured on CBSD68"
    from latentpress.samples import sample_paths

    paths = sample_paths()
    return paths, paths, "embedded sample photographs (fit and measure alike: a smoke run)"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latents", default="128,192,256,320")
    parser.add_argument("--fit", help="glob of the photographs the components are fitted on")
    parser.add_argument("--images", help="glob of the photographs measured")
    parser.add_argument("--fit-images", type=int, default=200, help="at most this many")
    args = parser.parse_args(argv)
    fit_paths, test_paths, source = default_images()
    if args.fit:
        fit_paths, source = sorted(glob.glob(args.fit)), f"fitted on {args.fit}"
    if args.images:
        test_paths, source = sorted(glob.glob(args.images)), f"{source}, measured on {args.images}"
    latents = [int(value) for value in args.latents.split(",")]
    if max(latents) > BLOCK_VALUES:
        parser.error(f"at most {BLOCK_VALUES} latents per block")
    fit = blocks(fit_paths[: args.fit_images])
    if len(fit) < max(latents):
        parser.error(f"{len(fit)} blocks to fit cannot give {max(latents)} components")
    ceilings = linear_ceilings(fit, blocks(test_paths), latents)
    print(f"Linear ceiling of M latents per 16x16 block ({source}):\n")
    print("| M | PSNR dB |\n|---|---|")
    for count, psnr in ceilings.items():
        print(f"| {count} | {psnr:.2f} |")
    results = {"source": source, "psnr_db": {str(k): v for k, v in ceilings.items()}}
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
