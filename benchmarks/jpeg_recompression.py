"""What JPEG XL's lossless recompression saves on an archive of JPEGs (same pixels).

    python -m benchmarks.jpeg_recompression [--input '../shared/datasets/CBSD432/*.jpg']

The alternative an archivist weighs before re-encoding JPEGs with a lossy codec: every file
is recompressed (``transforms.rate_distortion.jpeg_recompression``), checked to decode to the
JPEG's very pixels, and the JSON gives the bytes before and after and their ratio.
"""

from __future__ import annotations

import argparse
import glob
import json

from transforms import rate_distortion


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default="../shared/datasets/CBSD432/*.jpg")
    args = parser.parse_args(argv)
    paths = sorted(glob.glob(args.input))
    before = after = identical = 0
    for path in paths:
        with open(path, "rb") as handle:
            jpeg = handle.read()
        data, same = rate_distortion.jpeg_recompression(jpeg)
        before, after, identical = before + len(jpeg), after + len(data), identical + same
    results = {
        "files": len(paths),
        "pixels_identical": identical,
        "jpeg_bytes": before,
        "jpegxl_bytes": after,
        "ratio": round(after / before, 4) if before else None,
    }
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
