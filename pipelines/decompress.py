"""``latentpress decompress``: code files back to PNG images.

    latentpress decompress [--model M] CODE [CODE ...] -o DIR

Writes ``DIR/<code name>.png``.  A file that is not a code file, is truncated or corrupted, has
an unknown format version or was written by another model gets one line naming the problem;
the exit code is 1 if any failed.
"""

from __future__ import annotations

import argparse
import io
import os
import sys

from PIL import Image

from models import registry
from models.codefile import CodeFileError
from models.compressor import Compressor
from pipelines.compress import output_names
from transforms.records import write_atomically


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latentpress decompress", description="Decompress latentpress code files to PNG."
    )
    parser.add_argument("codes", nargs="+", help="Code files (.lpc) to decompress.")
    parser.add_argument("-o", "--output", required=True, help="Directory for the PNG files.")
    parser.add_argument(
        "--model",
        default=registry.DEFAULT_CODEC,
        help="The model that wrote the files: shipped name or exported directory "
        "(default: %(default)s).",
    )
    return parser


def encode_png(image) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    names = output_names(args.codes, ".png")
    compressor = Compressor(args.model)
    os.makedirs(args.output, exist_ok=True)
    failed = 0
    for path, name in zip(args.codes, names, strict=True):
        try:
            with open(path, "rb") as handle:
                image = compressor.decompress(handle.read())
        except (OSError, CodeFileError) as e:
            print(f"latentpress decompress: {path}: {e}", file=sys.stderr)
            failed += 1
            continue
        target = os.path.join(args.output, name)
        write_atomically(target, encode_png(image))
        print(f"{target}: {image.shape[1]}x{image.shape[0]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
