"""Apply-stage throughput: the Beam pipeline on 1 and 2 workers against a bare Python loop.

    python -m benchmarks.apply_throughput [--mode both] [--threads 1] [--images N] [--corpus DIR]

The bare loop does the same per-image work as the pipeline (read, decode, denoise and/or
compress, write the outputs) with the same code, in one process.  Each variant runs in a fresh
process so all pay the same start-up, and every process limits TensorFlow to ``--threads``
threads: with one worker per core, that is how Beam scales (Dataflow runs one SDK process per
vCPU).  Images: the first N of --corpus, by default ../shared/datasets/CBSD68 when present,
else the embedded samples.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "CBSD68"


def corpus_pattern(images: int, scratch: str, corpus: Path | None = None) -> str:
    import shutil

    corpus = corpus or (SHARED if SHARED.is_dir() else None)
    if corpus:
        sources = sorted(p for p in corpus.iterdir() if p.is_file())[:images]
    else:
        from latentpress.samples import sample_paths

        sources = [Path(p) for p in sample_paths()]
    folder = os.path.join(scratch, "corpus")
    os.makedirs(folder)
    for source in sources:
        shutil.copy(source, folder)
    return f"{folder}/*"


def bare_loop(pattern: str, output: str, mode: str, threads: int) -> int:
    """What one worker does, without Beam: the same functions, image after image."""
    import hashlib

    from transforms import decode
    from transforms.apply_models import LatentpressModelHandler, WriteOutputs
    from transforms.read_images import DecodedImage, matched_root, relative_key

    handler = LatentpressModelHandler(mode, "codec", "denoiser", threads)
    models = handler.load_model()
    writer = WriteOutputs(output, mode, "", "")
    root = matched_root(pattern)
    count = 0
    for path in sorted(glob.glob(pattern)):
        with open(path, "rb") as handle:
            data = handle.read()
        pixels, source_mode = decode.decode_with_mode(data)
        image = DecodedImage(
            path,
            relative_key(path, root),
            root,
            pixels,
            len(data),
            hashlib.sha256(data).hexdigest(),
            source_mode,
        )
        (processed,) = handler.run_inference([image], models)
        list(writer.process(processed))
        count += 1
    return count


def run_variant(variant: str, pattern: str, output: str, mode: str, threads: int) -> None:
    if variant == "bare":
        bare_loop(pattern, output, mode, threads)
        return
    from pipelines import apply

    workers = int(variant)
    apply.run(
        [
            f"--input={pattern}",
            f"--output={output}",
            f"--mode={mode}",
            f"--inference-threads={threads}",
            "--runner=DirectRunner",
            f"--direct_num_workers={workers}",
            "--direct_running_mode=multi_processing",
        ]
    )


def measure(variant: str, pattern: str, mode: str, threads: int) -> float:
    """Wall seconds of one variant in a fresh process, start-up included."""
    with tempfile.TemporaryDirectory() as output:
        code = (
            "import sys; from benchmarks.apply_throughput import run_variant; "
            "run_variant(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))"
        )
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", code, variant, pattern, output, mode, str(threads)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        return time.perf_counter() - start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="both", choices=["compress", "denoise", "both"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=68)
    parser.add_argument("--corpus", type=Path, help="A folder of images to use instead.")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        pattern = corpus_pattern(args.images, scratch, args.corpus)
        images = len(glob.glob(pattern))
        from PIL import Image

        megapixels = (
            sum(Image.open(p).size[0] * Image.open(p).size[1] for p in glob.glob(pattern)) / 1e6
        )
        seconds = {
            name: measure(variant, pattern, args.mode, args.threads)
            for name, variant in (
                ("bare_loop", "bare"),
                ("pipeline_1_worker", "1"),
                ("pipeline_2_workers", "2"),
            )
        }
    results = {
        "images": images,
        "megapixels": round(megapixels, 3),
        "mode": args.mode,
        "tf_threads_per_process": args.threads,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "images_per_s": {k: round(images / v, 3) for k, v in seconds.items()},
        "megapixels_per_s": {k: round(megapixels / v, 3) for k, v in seconds.items()},
        "pipeline_1_over_bare": round(seconds["bare_loop"] / seconds["pipeline_1_worker"], 2),
        "two_workers_over_one": round(
            seconds["pipeline_1_worker"] / seconds["pipeline_2_workers"], 2
        ),
    }
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
