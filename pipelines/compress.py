"""``latentpress compress``: images to code files, one per image.

    latentpress compress [--model M] [--quality low|medium|high|0-100] IMAGE [IMAGE ...] -o DIR

Writes ``DIR/<image name>.lpc`` (``a.png`` -> ``a.png.lpc``: ``manifest.output_name``; format:
``models/codefile.py``) and prints each file's size and bits per pixel (8 * file size / pixels,
header included).  A grayscale source is recorded as such and decompresses to a grayscale PNG.
EXIF, XMP, the ICC profile and alpha travel in the code file (``transforms.metadata``); each
frame of a multi-frame input gets its own file (``a.tif.frame-1.lpc``, ...); what is left out
or changed (16-bit samples, a CMYK profile, --strip-metadata) is said on the file's line.
Inputs that cannot be read are reported one line each; the exit code is 1 if any failed.
"""

from __future__ import annotations

import argparse
import os
import sys

from models.codefile import SUFFIX, bits_per_pixel
from models.compressor import Compressor
from pipelines.options import (
    Refused,
    add_carry_args,
    add_codec_args,
    add_max_pixels_arg,
    decode_options,
    each_file,
    missed_targets_note,
    resolve_codec,
    stage_parser,
)
from transforms import metadata
from transforms.decode import GRAYSCALE_MODES, DecodedFrame, DecodeError, decode_frames
from transforms.manifest import output_name, output_names
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
    add_carry_args(parser)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    names = output_names(args.images, SUFFIX)
    try:
        model, quality = resolve_codec(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"latentpress compress: {e}", file=sys.stderr)
        return 2
    compressor = Compressor(model, args.refine_steps)
    options = decode_options(args)
    os.makedirs(args.output, exist_ok=True)

    def compress_file(path: str, name: str):
        with open(path, "rb") as handle:
            data = handle.read()
        for frame in decode_frames(data, args.max_pixels, options):
            key = metadata.frame_key(name[: -len(SUFFIX)], frame.carried)
            target = os.path.join(args.output, output_name(key, SUFFIX))
            if refusal := refuse_to_overwrite(target, args.overwrite, args.images):
                raise Refused(refusal)
            yield _compress_frame(compressor, frame, target, quality, args)

    pairs = zip(args.images, names, strict=True)
    return each_file("compress", pairs, compress_file, (OSError, DecodeError))


def _compress_frame(compressor, frame: DecodedFrame, target: str, quality, args) -> str:
    """Writes one frame's code file; returns its line."""
    pixels = frame.pixels
    channels = 1 if frame.mode in GRAYSCALE_MODES else 3
    note = ""
    if args.target_psnr is not None or args.target_bpp is not None:
        quality, met = compressor.choose_quality(
            pixels, channels, args.target_psnr, args.target_bpp
        )
        note = f", quality {quality:g}" + (
            "" if met else f" ({missed_targets_note(1, args.model)})"
        )
    elif quality is not None:
        note = f", quality {quality:g}"
    data = compressor.compress(pixels, channels, quality, metadata.to_chunks(frame.carried))
    write_atomically(target, data)
    bpp = bits_per_pixel(len(data), pixels.shape[0] * pixels.shape[1])
    carried = frame.carried
    kept = [n for n, v in (("EXIF", carried.exif), ("XMP", carried.xmp), ("ICC", carried.icc)) if v]
    kept += ["alpha"] if carried.alpha is not None else []
    note += f"; carries {', '.join(kept)}" if kept else ""
    note += f"; {'; '.join(carried.notes)}" if carried.notes else ""
    return f"{target}: {len(data)} bytes, {bpp:.4f} bpp{note}"


if __name__ == "__main__":
    sys.exit(main())
