"""Do code files decode on other machines?  Encode here, decode with other kernels and devices.

    python -m benchmarks.portability [--model codec] [--images 68] [--large-megapixels 12]
        [--qualities 0,50,100] [--work-dir DIR]

Images: ../shared/datasets/CBSD68 when present (else the embedded samples), plus one large
photograph (``benchmarks.memory.photograph``).  Each is compressed at each quality in this
process, with TensorFlow's default CPU kernels (oneDNN), and decoded here: the reference.
Then fresh processes decode every file with TensorFlow's plain kernels
(``TF_ENABLE_ONEDNN_OPTS=0``) on one and on two threads, and on a GPU when the machine has
one (reported as skipped otherwise): what another CPU family, a GPU or a TensorFlow upgrade
computes differently.  The JSON gives, per configuration, the files decoded, the failures
with their messages, and the lowest PSNR against the reference decode (identical latents
leave only the synthesis's float rounding).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CONFIGURATIONS = {
    "plain kernels, 1 thread": ({"TF_ENABLE_ONEDNN_OPTS": "0", "CUDA_VISIBLE_DEVICES": ""}, 1),
    "plain kernels, 2 threads": ({"TF_ENABLE_ONEDNN_OPTS": "0", "CUDA_VISIBLE_DEVICES": ""}, 2),
    "GPU": ({}, 0),
}


def decode_all(folder: Path, out: Path, threads: int, model: str) -> dict:
    """Decodes every .lpc file of ``folder`` into ``out`` (.npy); {name: error} of failures."""
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    from models.codefile import CodeFileError
    from models.compressor import Compressor

    compressor = Compressor(model)
    failures = {}
    for path in sorted(folder.glob("*.lpc")):
        try:
            np.save(out / (path.stem + ".npy"), compressor.decompress(path.read_bytes()))
        except CodeFileError as e:
            failures[path.name] = str(e)
    return {"failures": failures, "gpus": len(tf.config.list_physical_devices("GPU"))}


def encode_all(
    images: dict, qualities: list[float], folder: Path, reference: Path, model: str
) -> None:
    from models.compressor import Compressor

    compressor = Compressor(model)
    for name, pixels in images.items():
        for quality in qualities:
            stem = f"{name}-q{quality:g}"
            data = compressor.compress(pixels, quality=quality)
            (folder / f"{stem}.lpc").write_bytes(data)
            np.save(reference / f"{stem}.npy", compressor.decompress(data))


def load_images(count: int, large_megapixels: float, work: Path) -> dict:
    from PIL import Image

    from benchmarks.codec_speed import load_images as photographs
    from benchmarks.memory import photograph

    images = {f"photo{i:02d}": x for i, x in enumerate(photographs(count))}
    if large_megapixels:
        path = photograph(large_megapixels, work / f"large-{large_megapixels:g}mp.png")
        images[f"large{large_megapixels:g}mp"] = np.asarray(Image.open(path).convert("RGB"))
    return images


def run(args, work: Path) -> dict:
    from models.inference import psnr

    folder, reference = work / "codes", work / "reference"
    folder.mkdir(exist_ok=True)
    reference.mkdir(exist_ok=True)
    qualities = [float(q) for q in args.qualities.split(",")]
    images = load_images(args.images, args.large_megapixels, work)
    encode_all(images, qualities, folder, reference, args.model)
    files = sorted(folder.glob("*.lpc"))
    results = {
        "model": args.model,
        "files": len(files),
        "qualities": qualities,
        "configurations": {},
    }
    for name, (env, threads) in CONFIGURATIONS.items():
        out = work / name.replace(" ", "_").replace(",", "")
        out.mkdir(exist_ok=True)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.portability",
                "--decode",
                str(folder),
                str(out),
                str(threads),
                args.model,
            ],
            capture_output=True,
            text=True,
            env={**os.environ, **env, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        if done.returncode:
            results["configurations"][name] = {"error": done.stderr[-1000:]}
            continue
        report = json.loads(done.stdout.strip().splitlines()[-1])
        if name == "GPU" and not report["gpus"]:
            results["configurations"][name] = {"skipped": "no GPU on this machine"}
            continue
        psnrs = [
            psnr(np.load(reference / (f.stem + ".npy")), np.load(out / (f.stem + ".npy")))
            for f in files
            if f.name not in report["failures"]
        ]
        results["configurations"][name] = {
            "decoded": len(psnrs),
            "failed": len(report["failures"]),
            "failures": report["failures"],
            "lowest_psnr_vs_reference_db": min(psnrs) if psnrs else None,
            "identical_images": sum(p >= 100.0 for p in psnrs),
        }
    return results


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--decode"]:  # the child: decode a folder with this process's kernels
        print(json.dumps(decode_all(Path(argv[1]), Path(argv[2]), int(argv[3]), argv[4])))
        return {}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="codec", help="A shipped codec's name or a path.")
    parser.add_argument("--images", type=int, default=68)
    parser.add_argument("--large-megapixels", type=float, default=12.0, help="0: none.")
    parser.add_argument("--qualities", default="0,50,100")
    parser.add_argument("--work-dir", help="Keep the files here (default: a temp dir).")
    args = parser.parse_args(argv)
    if args.work_dir:
        Path(args.work_dir).mkdir(parents=True, exist_ok=True)
        results = run(args, Path(args.work_dir))
    else:
        with tempfile.TemporaryDirectory() as scratch:
            results = run(args, Path(scratch))
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
