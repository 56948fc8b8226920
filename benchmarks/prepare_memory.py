"""Peak resident memory of the prepare stage against the size of what it writes.

    python -m benchmarks.prepare_memory [--images 432] [--patches-per-image 2,8]
        [--patch-size 320]

Each run is a fresh ``latentpress prepare`` process on the local runner (in-process, one
worker) over the same images (the first N of ../shared/datasets/CBSD432 when present, else
the embedded sample photographs), with more patches per image each time; its peak resident
set comes from the kernel (``benchmarks.memory.peak_rss_mb``).  The first run is the baseline:
the JSON gives each run's output size and peak, the peak's ratio to the baseline's and the
memory added per megabyte of output added (0 when memory does not grow with the output; about
5 when every record was held, as before records went through the shards' GroupByKey as keys).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from benchmarks.memory import peak_rss_mb
from benchmarks.prepare_throughput import corpus


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def run(images: int, patches_per_image: list[int], patch_size: int, scratch: str) -> dict:
    inputs = f"{corpus(images, scratch)}/*"
    rows = []
    for count in patches_per_image:
        output = Path(scratch) / f"prepared-{count}"
        command = [sys.executable, "-m", "latentpress.cli", "prepare", "--input", inputs]
        command += ["--output", str(output), f"--patch-size={patch_size}"]
        command += [f"--patches-per-image={count}", "--runner=DirectRunner"]
        peak, seconds, status = peak_rss_mb(command)
        if status:
            raise SystemExit(f"prepare exited {status} at {count} patches per image")
        rows.append(
            {
                "patches_per_image": count,
                "output_mb": round(folder_mb(output), 1),
                "peak_rss_mb": round(peak, 1),
                "seconds": round(seconds, 1),
            }
        )
    baseline = rows[0]
    for row in rows[1:]:
        row["peak_over_baseline"] = round(row["peak_rss_mb"] / baseline["peak_rss_mb"], 3)
        added_output = row["output_mb"] - baseline["output_mb"]
        added_peak = row["peak_rss_mb"] - baseline["peak_rss_mb"]
        row["mb_per_output_mb"] = round(added_peak / added_output, 3) if added_output else None
    return {"images": images, "patch_size": patch_size, "runs": rows}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=432)
    parser.add_argument(
        "--patches-per-image", default="2,8", help="Comma-separated; first is the baseline."
    )
    parser.add_argument("--patch-size", type=int, default=320)
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.patches_per_image.split(",") if c]
    with tempfile.TemporaryDirectory() as scratch:
        results = run(args.images, counts, args.patch_size, scratch)
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
