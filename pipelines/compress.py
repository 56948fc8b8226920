"""``latentpress compress``: images to code files, one per image.

    latentpress compress [--model M] [--quality low|medium|high|0-100] IMAGE [IMAGE ...] -o DIR

Writes ``DIR/<image name>.lpc`` (``a.png`` -> ``a.png.lpc``: ``manifest.output_name``; format:
``models/codefile.py``) and prints each file's size and bits per pixel (8 * file size / pixels,
header included).  A grayscale source is recorded as such and decompresses to a grayscale PNG.
Inputs that cannot be read are reported one line each; the exit code is 1 if any failed.
"""

from __future__ import annotations

import argparse
import os
import sys

from models.codefile import SUFFIX, bits_per_pixel
from models.compressor import Compressor
from pipelines.options import add_codec_args, add_max_pixels_arg, resolve_codec, stage_parser
from transforms.decode import GRAYSCALE_MODES, DecodeError, decode_with_mode
from transforms.manifest import output_names
from transforms.records import refuse_to_overwrite, write_atomically


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("latentpress compress", "Compress images to latentpress code files.")
    parser.add_argument("images", nargs="+", help="Image files to compress.")
    parser.add_argument("-o", "--output", required=True, help="Directory for the code files.")
    parser.add_argument(
        "--overwrite", action="store_true", help="Replace existing code files (never an input)."
    )
    add_codec_args(parser)
    add_max_pixels_arg(parser)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    names = output_names(args.images, SUFFIX)
    try:
        model, quality = resolve_codec(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"latentpress compress: {e}", file=sys.stderr)
        return 2
    compressor = Compressor(model)
    os.makedirs(args.output, exist_ok=True)
    failed = 0
    for path, name in zip(args.images, names, strict=True):
        try:
            with open(path, "rb") as handle:
                pixels, mode = decode_with_mode(handle.read(), args.max_pixels)
        except (OSError, DecodeError) as e:
            print(f"latentpress compress: {path}: {e}", file=sys.stderr)
            failed += 1
            continue
        target = os.path.join(args.output, name)
        refusal = refuse_to_overwrite(target, args.overwrite, args.images)
        if refusal:
            print(f"latentpress compress: {refusal}", file=sys.stderr)
            failed += 1
            continue
        channels = 1 if mode in GRAYSCALE_MODES else 3
        note = ""
        if args.target_psnr is not None or args.target_bpp is not None:
            quality, met = compressor.choose_quality(
                pixels, channels, args.target_psnr, args.target_bpp
            )
            note = f", quality {quality:g}" + ("" if met else " (target not reachable)")
        elif quality is not None:
            note = f", quality {quality:g}"
        data = compressor.compress(pixels, channels, quality)
        write_atomically(target, data)
        bpp = bits_per_pixel(len(data), pixels.shape[0] * pixels.shape[1])
        print(f"{target}: {len(data)} bytes, {bpp:.4f} bpp{note}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
