"""What the encoder's coding search saves and costs: the same codec encoding the same images
with nothing chosen (every scale offset 0, the codec's Gaussian: format 4's coding), with the
image scale offset chosen (format 5's) and with offset and coding shape chosen (format 6's),
alternately in one process, so the ratios hold on a busy machine.

    python -m benchmarks.coding_search [--model codec-high-rate] [--images N]
        [--qualities 0,50,100] [--repeats R]

Images as ``benchmarks.codec_speed``'s (CBSD68 when present).  Per quality: each search's
bytes and encode time (fastest repeat of each image) over those of no search (the pixels are
the same), format 6's bytes over format 5's, and the offsets (quarter steps of the scale
table) and shapes (``models.exact.SHAPE_DEGREES``; 0 the Gaussian) chosen.
"""

from __future__ import annotations

import argparse
import json
import time

from benchmarks.codec_speed import load_images
from models import exact
from models.compressor import Compressor

# setting -> (search the scale offset, coding shapes weighed)
SETTINGS = {
    "none": (False, (0,)),
    "offset": (True, (0,)),
    "offset_and_shape": (True, (0, *exact.SHAPE_DEGREES)),
}


def measure(compressor: Compressor, images, quality: float, repeats: int) -> dict:
    size = dict.fromkeys(SETTINGS, 0)
    seconds = dict.fromkeys(SETTINGS, 0.0)
    chosen = []
    for x in images:
        fastest = dict.fromkeys(SETTINGS, float("inf"))
        for repeat in range(repeats):
            for name, (search, shapes) in SETTINGS.items():
                compressor.search_scale_offset, compressor.coding_shapes = search, shapes
                start = time.perf_counter()
                data = compressor.compress(x, quality=quality)
                fastest[name] = min(fastest[name], time.perf_counter() - start)
                if repeat == 0:
                    size[name] += len(data)
                    if name == "offset_and_shape":
                        code = compressor.parse(data)
                        chosen.append((code.coding_shape, code.scale_offset))
        for name in SETTINGS:
            seconds[name] += fastest[name]
    compressor.search_scale_offset, compressor.coding_shapes = SETTINGS["offset_and_shape"]
    return {
        **{
            f"{name}_bytes_ratio": round(size[name] / size["none"], 4)
            for name in ("offset", "offset_and_shape")
        },
        "shape_over_offset_bytes_ratio": round(size["offset_and_shape"] / size["offset"], 4),
        **{
            f"{name}_encode_time_ratio": round(seconds[name] / seconds["none"], 3)
            for name in ("offset", "offset_and_shape")
        },
        "shapes": sorted(shape for shape, _ in chosen),
        "offsets": sorted(offset for _, offset in chosen),
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
