"""What tiling costs: a large photograph coded in tiles against the same coded as one tile.

    python -m benchmarks.tile_seams [--megapixels 6] [--quality 50] [--out DIR]

Codes one photograph (``benchmarks.memory.photograph``) twice in one process: with the
compressor's tiles, and as one tile covering the whole image (what format 2 did, and what
needs memory in proportion to the image).  Reports the rate of both files, their PSNR
against the original, the share of coded latents that differ and the PSNR between the two
decodes, and writes ``seam.png``: a close-up around a tile corner, whole-image decode |
tiled decode | their difference x 32 (grey is 0).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from models import codefile
from models import compressor as compressor_module
from models.compressor import Compressor
from models.inference import psnr


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, default=6.0)
    parser.add_argument("--quality", type=float, default=50.0)
    parser.add_argument("--out", default=".", help="Folder for seam.png.")
    args = parser.parse_args(argv)
    from benchmarks.memory import photograph

    with tempfile.TemporaryDirectory() as scratch:
        path = photograph(args.megapixels, Path(scratch) / "photo.png")
        x = np.asarray(Image.open(path).convert("RGB"))
    compressor = Compressor()
    height, width = x.shape[:2]
    results, decoded = {}, {}
    tile = compressor_module.TILE
    for name, size in (("tiled", tile), ("whole", max(height, width) + 64)):
        compressor_module.TILE = size
        latents = compressor.analyze(x, args.quality)
        data = compressor.encode(latents, height, width, 3, args.quality)
        decoded[name] = compressor.decompress(data)
        results[name] = {
            "bpp": round(codefile.bits_per_pixel(len(data), height * width), 5),
            "psnr_db": psnr(x, decoded[name]),
            "code": latents.code,
        }
    compressor_module.TILE = tile
    changed = float((results["tiled"].pop("code") != results["whole"].pop("code")).mean())
    report = {
        "image": f"{width}x{height}",
        "tile": tile,
        "halo": compressor_module.HALO,
        **results,
        "rate_change_pct": round(100 * (results["tiled"]["bpp"] / results["whole"]["bpp"] - 1), 4),
        "latents_changed": changed,
        "psnr_between_decodes_db": psnr(decoded["whole"], decoded["tiled"]),
    }
    # a 96x96 close-up around the first interior tile corner, 3x enlarged
    top, left = min(tile, height - 48) - 48, min(tile, width - 48) - 48
    window = (slice(top, top + 96), slice(left, left + 96))
    difference = decoded["tiled"][window].astype(int) - decoded["whole"][window]
    panels = [
        decoded["whole"][window],
        decoded["tiled"][window],
        np.clip(128 + 32 * difference, 0, 255).astype(np.uint8),
    ]
    strip = np.concatenate(
        [np.pad(p, ((0, 0), (0, 4), (0, 0)), constant_values=255) for p in panels], axis=1
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(strip).resize((strip.shape[1] * 3, strip.shape[0] * 3), Image.NEAREST).save(
        out / "seam.png"
    )
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
