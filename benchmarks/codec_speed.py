"""Codec speed on CPU: encode and decode milliseconds per megapixel, network vs entropy coding.

    python -m benchmarks.codec_speed [--model codec] [--images N] [--repeats R]

Images: ../shared/datasets/CBSD68 when present, else the embedded sample photographs.  Each
image is compressed and decompressed R times after one warm-up; the fastest repeat counts.
Pillow's JPEG (quality 75) on the same images is the baseline of the same run.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from models import codefile
from models.compressor import Compressor

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "CBSD68"


def load_images(count: int) -> list[np.ndarray]:
    if SHARED.is_dir():
        paths = sorted(SHARED.glob("*.png"))[:count]
    else:
        from latentpress.samples import sample_paths

        paths = [Path(p) for p in sample_paths()][:count]
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def codec_times(compressor: Compressor, x: np.ndarray) -> dict[str, float]:
    """Seconds of each part of a compress and a decompress of ``x``: the networks (analysis
    and hyper-analysis; synthesis), and the entropy coding with its exact model (the integer
    hyperprior and the range coder; for a codec with channel slices its context too)."""
    height, width = x.shape[:2]
    y, analysis = timed(compressor.latents, x)
    z_hat, hyper_analysis = timed(compressor.side_information, y)
    latents, exact_encode = timed(compressor.code_latents, y, z_hat)
    data, code = timed(compressor.encode, latents, height, width, 3)
    parsed, parse = timed(compressor.parse, data)
    decoded, decode = timed(compressor.decode_latents, parsed)
    _, synthesize = timed(compressor.synthesize, decoded, height, width)
    return {
        "encode_network": analysis + hyper_analysis,
        "encode_entropy": exact_encode + code,
        "decode_network": synthesize,
        "decode_entropy": parse + decode,
        "bytes": len(data),
    }


def jpeg_times(x: np.ndarray) -> dict[str, float]:
    buffer = io.BytesIO()
    _, encode = timed(lambda: Image.fromarray(x).save(buffer, format="JPEG", quality=75))
    data = buffer.getvalue()
    _, decode = timed(lambda: np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    return {"encode": encode, "decode": decode, "bytes": len(data)}


def fastest(runs: list[dict]) -> dict:
    return {key: min(run[key] for run in runs) for key in runs[0]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="codec")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    compressor = Compressor(args.model)
    images = load_images(args.images)
    totals: dict[str, float] = {}
    jpeg_totals: dict[str, float] = {}
    megapixels = sum(x.shape[0] * x.shape[1] for x in images) / 1e6
    pixels = megapixels * 1e6
    for x in images:
        codec_times(compressor, x)  # warm-up: traces the signatures for this shape
        for key, value in fastest(
            [codec_times(compressor, x) for _ in range(args.repeats)]
        ).items():
            totals[key] = totals.get(key, 0.0) + value
        for key, value in fastest([jpeg_times(x) for _ in range(args.repeats)]).items():
            jpeg_totals[key] = jpeg_totals.get(key, 0.0) + value
    per_mp = {k: round(1000 * v / megapixels, 1) for k, v in totals.items() if k != "bytes"}
    encode = per_mp["encode_network"] + per_mp["encode_entropy"]
    decode = per_mp["decode_network"] + per_mp["decode_entropy"]
    jpeg_encode = 1000 * jpeg_totals["encode"] / megapixels
    jpeg_decode = 1000 * jpeg_totals["decode"] / megapixels
    results = {
        "images": len(images),
        "megapixels": round(megapixels, 3),
        "ms_per_megapixel": {
            **per_mp,
            "encode_total": round(encode, 1),
            "decode_total": round(decode, 1),
            "jpeg_q75_encode": round(jpeg_encode, 1),
            "jpeg_q75_decode": round(jpeg_decode, 1),
        },
        "entropy_share": {
            "encode": round(per_mp["encode_entropy"] / encode, 3),
            "decode": round(per_mp["decode_entropy"] / decode, 3),
        },
        "over_jpeg": {
            "encode": round(encode / jpeg_encode, 1),
            "decode": round(decode / jpeg_decode, 1),
        },
        "bpp": {
            "codec": round(codefile.bits_per_pixel(totals["bytes"], pixels), 4),
            "jpeg_q75": round(codefile.bits_per_pixel(jpeg_totals["bytes"], pixels), 4),
        },
    }
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
