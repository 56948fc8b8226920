"""What code-file format 5's image scale offset saves and costs: the same codec encoding the
same images with the encoder's offset search and without it (every offset 0, format 4's
scales), alternately in one process, so the ratios hold on a busy machine.

    python -m benchmarks.scale_offset [--model codec-high-rate] [--images N]
        [--qualities 0,50,100] [--repeats R]

Images as ``benchmarks.codec_speed``'s (CBSD68 when present).  Per quality: the bytes with
the search over those without (the pixels are the same), the encode time's ratio (fastest
repeat of each), and the offsets chosen (quarter steps of the scale table).
"""

from __future__ import annotations

import argparse
import json
import time

from benchmarks.codec_speed import load_images
from models.compressor import Compressor


def measure(compressor: Compressor, images, quality: float, repeats: int) -> dict:
    size = {True: 0, False: 0}
    seconds = {True: 0.0, False: 0.0}
    offsets = []
    for x in images:
        fastest = {True: float("inf"), False: float("inf")}
        for repeat in range(repeats):
            for search in (True, False):
                compressor.search_scale_offset = search
                start = time.perf_counter()
                data = compressor.compress(x, quality=quality)
                fastest[search] = min(fastest[search], time.perf_counter() - start)
                if repeat == 0:
                    size[search] += len(data)
                    if search:
                        offsets.append(compressor.parse(data).scale_offset)
        for search in (True, False):
            seconds[search] += fastest[search]
    compressor.search_scale_offset = True
    return {
        "bytes_ratio": round(size[True] / size[False], 4),
        "encode_time_ratio": round(seconds[True] / seconds[False], 3),
        "offsets": sorted(offsets),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="codec-high-rate")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--qualities", default="0,50,100")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    compressor = Compressor(args.model)
    images = load_images(args.images)
    results = {
        f"q{quality:g}": measure(compressor, images, quality, args.repeats)
        for quality in (float(q) for q in args.qualities.split(","))
    }
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
