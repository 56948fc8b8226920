"""Codec speed on CPU: encode and decode milliseconds per megapixel, network vs entropy coding.

    python -m benchmarks.codec_speed [--model codec | --untrained N,M,K[,H[,C[,F]]]]
        [--baseline-model codec] [--images N] [--repeats R] [--quality Q]

Images: ../shared/datasets/CBSD68 when present, else the embedded sample photographs.  Each
image is compressed and decompressed R times after one warm-up; the fastest repeat counts.
Pillow's JPEG (quality 75) on the same images is the baseline of the same run, and with
``--baseline-model`` another codec too, image by image (``over_baseline``: the ratios).

``--untrained N,M,K[,H[,C[,F]]]`` times a codec of that shape before anyone trains it (N transform
channels, M latents, K x K kernels, H hyper channels, C x C kernels next to the latents,
F x F next to the image; variable-rate, mean-scale): what an
architecture would cost.  Its network times are those of a trained one; its entropy-coding
time is not (an untrained codec codes few bits), so compare that part at equal rates.

``--quality Q`` (0-100; default medium) times a variable-rate codec at that rate, e.g. at either
end of its range (measured: its entropy coding costs per latent, not per bit).
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
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


def codec_times(
    compressor: Compressor, x: np.ndarray, quality: float | None = None
) -> dict[str, float]:
    """Seconds of each part of a compress and a decompress of ``x``: the networks (analysis
    and hyper-analysis; synthesis), and the entropy coding with its exact model (the integer
    hyperprior and the range coder; for a codec with context, slices or checkerboard, too)."""
    height, width = x.shape[:2]
    quality = compressor.clamp_quality(quality)
    y, analysis = timed(compressor.latents, x, quality)
    z_hat, hyper_analysis = timed(compressor.side_information, y)
    latents, exact_encode = timed(compressor.code_latents, y, z_hat, (height, width), quality)
    data, code = timed(compressor.encode, latents, height, width, 3, quality)
    parsed, parse = timed(compressor.parse, data)
    decoded, decode = timed(compressor.decode_latents, parsed)
    _, synthesize = timed(compressor.synthesize, decoded, height, width, parsed.quality)
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


# the rate levels of an untrained candidate (the shipped range's ends and what issue 30 adds)
UNTRAINED_LMBDAS = (0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64)


def export_untrained(shape: str, folder: str) -> str:
    """An untrained codec of shape "N,M,K[,H[,C[,F]]]" exported to ``folder`` (C: the kernel
    side next to the latents, ``coarse_kernel_size``; F: next to the image,
    ``fine_kernel_size``)."""
    import tensorflow as tf

    from models.codec import CodecConfig, ScaleHyperprior
    from models.export import CODEC, export_model

    num, latent, kernel, hyper, coarse, fine, *_ = (*(int(v) for v in shape.split(",")), 0, 0, 0)
    config = CodecConfig(
        num,
        latent,
        lmbdas=UNTRAINED_LMBDAS,
        hyper_filters=hyper,
        mean_scale=True,
        kernel_size=kernel,
        coarse_kernel_size=coarse,
        fine_kernel_size=fine,
    )
    model = ScaleHyperprior(config)
    model.build_for_images()
    # Random weights of full fan-in exceed the exact hyperprior's fixed-point range, and a
    # network's time does not depend on its values: the hyper synthesis starts at zero.
    for weight in model.hyper_synthesis_transform.weights:
        weight.assign(tf.zeros_like(weight))
    export_model(model, CODEC, folder, {"name": f"untrained {shape}"})
    return folder


def measure(
    compressors: dict, images: list[np.ndarray], repeats: int, quality: float | None = None
) -> dict[str, dict]:
    """name -> summed fastest seconds per part over the images ("jpeg" among them), the
    variants interleaved image by image so a busy spell slows all alike."""
    totals: dict[str, dict] = {name: {} for name in [*compressors, "jpeg"]}
    for x in images:
        for name, compressor in compressors.items():
            codec_times(compressor, x, quality)  # warm-up: traces the signatures for this shape
            runs = [codec_times(compressor, x, quality) for _ in range(repeats)]
            for key, value in fastest(runs).items():
                totals[name][key] = totals[name].get(key, 0.0) + value
        for key, value in fastest([jpeg_times(x) for _ in range(repeats)]).items():
            totals["jpeg"][key] = totals["jpeg"].get(key, 0.0) + value
    return totals


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="codec")
    parser.add_argument("--untrained", help="Time an untrained codec of shape N,M,K[,H[,C[,F]]].")
    parser.add_argument("--baseline-model", help="Another codec timed beside it.")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--quality", type=float, help="A variable-rate codec's quality, 0-100 (default medium)."
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        model = export_untrained(args.untrained, folder) if args.untrained else args.model
        compressors = {"model": Compressor(model)}
        if args.baseline_model:
            compressors["baseline"] = Compressor(args.baseline_model)
        images = load_images(args.images)
        measured = measure(compressors, images, args.repeats, args.quality)
    totals, jpeg_totals = measured["model"], measured["jpeg"]
    megapixels = sum(x.shape[0] * x.shape[1] for x in images) / 1e6
    pixels = megapixels * 1e6
    per_mp = {k: round(1000 * v / megapixels, 1) for k, v in totals.items() if k != "bytes"}
    encode = per_mp["encode_network"] + per_mp["encode_entropy"]
    decode = per_mp["decode_network"] + per_mp["decode_entropy"]
    jpeg_encode = 1000 * jpeg_totals["encode"] / megapixels
    jpeg_decode = 1000 * jpeg_totals["decode"] / megapixels
    results = {
        "quality": args.quality,
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
    if args.baseline_model:
        base = measured["baseline"]
        results["baseline_ms_per_megapixel"] = {
            k: round(1000 * v / megapixels, 1) for k, v in base.items() if k != "bytes"
        }
        results["over_baseline"] = {
            "encode_network": round(totals["encode_network"] / base["encode_network"], 3),
            "decode_network": round(totals["decode_network"] / base["decode_network"], 3),
            "encode": round(
                (totals["encode_network"] + totals["encode_entropy"])
                / (base["encode_network"] + base["encode_entropy"]),
                3,
            ),
            "decode": round(
                (totals["decode_network"] + totals["decode_entropy"])
                / (base["decode_network"] + base["decode_entropy"]),
                3,
            ),
        }
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
