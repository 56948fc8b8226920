"""Prepare-stage throughput: patches/s on one worker and on two, same corpus, same command.

    python -m benchmarks.prepare_throughput [--images N] [--patches-per-image K]

Corpus: the first N images of ../shared/datasets/CBSD432 when present, else the embedded
sample photographs.  Wall time includes pipeline start-up (each multi-process worker imports
TensorFlow), as a user experiences it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from pipelines import prepare
from transforms import records

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "CBSD432"

MODES = {
    "1 worker (in-process)": ["--runner=DirectRunner", "--direct_num_workers=1"],
    "2 workers (multi-process)": [
        "--runner=DirectRunner",
        "--direct_num_workers=2",
        "--direct_running_mode=multi_processing",
    ],
}


def corpus(images: int, scratch: str) -> str:
    folder = os.path.join(scratch, "corpus")
    os.makedirs(folder)
    if SHARED.is_dir():
        sources = sorted(SHARED.glob("*.jpg"))[:images]
    else:
        from latentpress.samples import sample_paths

        sources = [Path(p) for p in sample_paths()]
    for source in sources:
        shutil.copy(source, folder)
    return folder


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--patches-per-image", type=int, default=16)
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        folder = corpus(args.images, scratch)
        for name, runner_args in MODES.items():
            output = os.path.join(scratch, name.split()[0])
            start = time.perf_counter()
            prepare.run(
                [
                    f"--input={folder}/*",
                    f"--output={output}",
                    "--noise=gaussian:0-55",
                    f"--patches-per-image={args.patches_per_image}",
                    *runner_args,
                ]
            )
            seconds = time.perf_counter() - start
            summary = records.read_json(os.path.join(output, records.SUMMARY_FILE))
            patches = sum(summary["patches"].values())
            results[name] = {
                "images": summary["decoded"],
                "patches": patches,
                "seconds": round(seconds, 2),
                "patches_per_s": round(patches / seconds, 1),
            }
    one, two = (results[name]["patches_per_s"] for name in MODES)
    results["two_over_one"] = round(two / one, 2)
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
