"""Peak resident memory of compress, decompress and apply against image size.

    python -m benchmarks.memory [--megapixels 1,12,48] [--stages compress,decompress,apply]
        [--work-dir DIR] [--denoiser D] [--model codec] [--refine-steps N]

Each stage runs as a fresh ``latentpress`` process on a photograph of each size (an embedded
sample photograph scaled up, with seeded sensor-like noise so it codes like a real one, saved
as PNG); its peak resident set size comes from the kernel's accounting of that child
(``os.wait4``, the figure ``/usr/bin/time -v`` prints as "Maximum resident set size").  The
1-megapixel run is the baseline of the same command: the JSON gives each size's peak and its
ratio to it, so a busy machine's noise shows as noise, not as growth.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

STAGES = ("compress", "decompress", "apply")


def photograph(megapixels: float, path: Path) -> Path:
    """A 4:3 photograph of about ``megapixels`` (cached at ``path``)."""
    if path.exists():
        return path
    from latentpress.samples import sample_paths

    source = next(p for p in sample_paths() if p.endswith("astronaut.png"))
    width = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    height = int(round(width * 3 / 4))
    image = Image.open(source).convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    pixels = np.asarray(image).astype(np.int16)
    noise = np.random.default_rng(0).normal(0.0, 3.0, pixels.shape).round().astype(np.int16)
    Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8)).save(path, compress_level=1)
    return path


def peak_rss_mb(command: list[str]) -> tuple[float, float, int]:
    """(peak resident MB, wall seconds, exit status) of one child process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        sys.stderr.write(process.stderr.read().decode()[-2000:])
    return usage.ru_maxrss / 1024.0, time.perf_counter() - start, process.returncode


def run(
    megapixels: list[float],
    stages: list[str],
    work_dir: Path,
    denoiser: str = "",
    model: str = "codec",
    refine_steps: int = 0,
) -> dict:
    cli = [sys.executable, "-m", "latentpress.cli"]
    encoder = ["--model", model, "--refine-steps", str(refine_steps)]
    rows = []
    for size in megapixels:
        image = work_dir / f"photo-{size:g}mp.png"
        # made in a child of its own: this process stays small, as a forked child's peak
        # starts from its parent's pages
        subprocess.run(
            [
                sys.executable,
                "-c",
                f"from benchmarks.memory import photograph as p; "
                f"from pathlib import Path; p({size}, Path({str(image)!r}))",
            ],
            check=True,
        )
        codes = work_dir / f"codes-{size:g}"
        commands = {
            "compress": [
                *cli,
                "compress",
                str(image),
                "-o",
                str(codes),
                "--overwrite",
                *encoder,
            ],
            "decompress": [
                *cli,
                "decompress",
                str(codes / (image.name + ".lpc")),
                "-o",
                str(work_dir / f"decoded-{size:g}"),
                "--overwrite",
            ],
            "apply": [
                *cli,
                "apply",
                "--input",
                str(image),
                "-o",
                str(work_dir / f"applied-{size:g}"),
                "--overwrite",
                *encoder,
                *(
                    ["--mode", "both", "--denoiser", denoiser]
                    if denoiser
                    else ["--mode", "compress"]
                ),
            ],
        }
        row = {"megapixels": size}
        for stage in stages:
            peak, seconds, status = peak_rss_mb(commands[stage])
            row[stage] = {"peak_mb": round(peak), "seconds": round(seconds, 1), "exit": status}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    base = rows[0]
    for row in rows:
        for stage in stages:
            row[stage]["ratio_to_first"] = round(row[stage]["peak_mb"] / base[stage]["peak_mb"], 2)
    return {"stages": stages, "runs": rows}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--megapixels", default="1,12,48", help="Image sizes, first is the baseline."
    )
    parser.add_argument("--stages", default=",".join(STAGES), help="Of " + ", ".join(STAGES) + ".")
    parser.add_argument(
        "--work-dir", help="Keep the images and outputs here (default: a temp dir)."
    )
    parser.add_argument(
        "--denoiser",
        default="",
        help="apply runs --mode both with this denoiser (default: compress).",
    )
    parser.add_argument("--model", default="codec", help="The codec (a shipped name or a path).")
    parser.add_argument(
        "--refine-steps", type=int, default=0, help="compress and apply refine their latents."
    )
    args = parser.parse_args(argv)
    sizes = [float(v) for v in args.megapixels.split(",")]
    stages = [s for s in args.stages.split(",") if s]
    if args.work_dir:
        Path(args.work_dir).mkdir(parents=True, exist_ok=True)
        results = run(
            sizes, stages, Path(args.work_dir), args.denoiser, args.model, args.refine_steps
        )
    else:
        with tempfile.TemporaryDirectory() as scratch:
            results = run(
                sizes, stages, Path(scratch), args.denoiser, args.model, args.refine_steps
            )
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
