"""What a night of the archive job costs on Dataflow: measured per-megapixel CPU, projected.

    python -m benchmarks.cost_model --images 100000000 --megapixels 12 \
        [--mode both|compress|denoise] [--new-fraction 0.02] [--workers 50] [price flags]

Measured here, in this process with one TensorFlow thread (as one Dataflow SDK process per
vCPU runs): CPU seconds per megapixel of every per-image step of the archive job (read, hash,
decode, the denoiser, the codec, writing the outputs) on ``--sample`` photographs (CBSD68 when
../shared is there, else the embedded samples), and the bytes written per megapixel.  CPU
time (``time.process_time``) is used, so other work on the machine does not inflate it.

Projected: vCPU-hours, wall time on ``--workers`` workers, money (Dataflow batch prices for
vCPU, memory and shuffle, Cloud Storage operations) for one night (the new fraction) and for
the backfill (every image once).  Every assumption is a flag and is printed with the result.
A GPU is not measured (this project has none): the output states the speed-up over one
worker's vCPUs a GPU worker must reach to be cheaper, for the network part of the work.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time

from benchmarks.apply_throughput import SHARED

# Dataflow batch, us-central1 (cloud.google.com/dataflow/pricing, 2026): per vCPU-hour, per
# GB-hour of worker memory, per GB through Dataflow Shuffle.  Cloud Storage Standard: class A
# (write, list) and class B (read) operations per 1,000.
PRICES = {
    "vcpu_hour": 0.056,
    "memory_gb_hour": 0.003557,
    "shuffle_gb": 0.011,
    "class_a_per_1000": 0.005,
    "class_b_per_1000": 0.0004,
}


def sample_images(count: int) -> list[str]:
    if SHARED.is_dir():
        return sorted(str(p) for p in SHARED.glob("*.png"))[:count]
    from latentpress.samples import sample_paths

    return sample_paths()[:count]


def measure(paths: list[str], mode: str, threads: int = 1) -> dict:
    """CPU seconds per megapixel of each step, and output bytes per megapixel, for ``mode``."""
    from transforms import decode
    from transforms.apply_models import LatentpressModelHandler, WriteOutputs
    from transforms.read_images import DecodedImage

    handler = LatentpressModelHandler(mode, "codec", "denoiser", threads)
    models = handler.load_model()
    cpu = {"read": 0.0, "hash": 0.0, "decode": 0.0, "models": 0.0, "write": 0.0}
    megapixels = code_bytes = clean_bytes = 0.0
    with tempfile.TemporaryDirectory(prefix="lp-cost-") as output:
        writer = WriteOutputs(output, mode, "", "")
        for index, path in enumerate([paths[0], *paths]):  # the first pass warms up
            warm_up = index == 0
            t0 = time.process_time()
            with open(path, "rb") as handle:
                data = handle.read()
            t1 = time.process_time()
            sha = hashlib.sha256(data).hexdigest()
            t2 = time.process_time()
            pixels, source_mode = decode.decode_with_mode(data)
            image = DecodedImage(
                path, f"{index}-{os.path.basename(path)}", "", pixels, len(data), sha, source_mode
            )
            t3 = time.process_time()
            (processed,) = handler.run_inference([image], models)
            t4 = time.process_time()
            (record,) = writer.process(processed)
            t5 = time.process_time()
            if warm_up:
                continue
            for step, seconds in zip(
                cpu, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True
            ):
                cpu[step] += seconds
            megapixels += pixels.shape[0] * pixels.shape[1] / 1e6
            code_bytes += record["code_bytes"]
            clean_bytes += record["clean_bytes"]
    return {
        "cpu_seconds_per_megapixel": {k: round(v / megapixels, 4) for k, v in cpu.items()},
        "total_cpu_seconds_per_megapixel": round(sum(cpu.values()) / megapixels, 4),
        "code_bytes_per_megapixel": round(code_bytes / megapixels),
        "clean_bytes_per_megapixel": round(clean_bytes / megapixels),
        "megapixels_measured": round(megapixels, 3),
    }


def project(measured: dict, args: argparse.Namespace, images: float) -> dict:
    """Cost of running ``images`` new images through the job, plus the nightly fixed part."""
    per_mp = measured["total_cpu_seconds_per_megapixel"] * args.pipeline_overhead
    cpu_seconds = images * args.megapixels * per_mp / args.vcpu_speed
    vcpu_hours = cpu_seconds / 3600
    worker_hours = vcpu_hours / args.vcpus_per_worker
    memory_gb_hours = worker_hours * args.memory_gb_per_worker
    # Every run lists and reads the whole manifest and shuffles its per-content state
    # (benchmarks.archive_scale measures the bytes per record).
    shuffle_gb = args.images * args.shuffle_bytes_per_record / 1e9
    outputs = {"both": 1, "compress": 1, "denoise": 1}[args.mode]  # both: the code of the cleaned
    class_a = args.images / 1000 + images * (2 * outputs + 1)  # list pages; write+rename each
    class_b = images * 2 + args.images * args.manifest_bytes_per_record / 8e6  # 8 MB reads
    money = {
        "vcpu": vcpu_hours * PRICES["vcpu_hour"] * args.price_scale,
        "memory": memory_gb_hours * PRICES["memory_gb_hour"] * args.price_scale,
        "shuffle": shuffle_gb * PRICES["shuffle_gb"] * args.price_scale,
        "storage_operations": (
            class_a / 1000 * PRICES["class_a_per_1000"]
            + class_b / 1000 * PRICES["class_b_per_1000"]
        ),
    }
    written_bytes = (
        images
        * args.megapixels
        * (
            (measured["code_bytes_per_megapixel"] if args.mode != "denoise" else 0)
            + (measured["clean_bytes_per_megapixel"] if args.mode != "compress" else 0)
        )
    )
    return {
        "new_images": int(images),
        "vcpu_hours": round(vcpu_hours, 1),
        "worker_hours": round(worker_hours, 1),
        "wall_hours_on_workers": round(worker_hours / args.workers, 2),
        "workers": args.workers,
        f"workers_to_finish_in_{args.night_hours:g}_hours": int(
            -(-worker_hours // args.night_hours)
        ),
        "shuffle_gb": round(shuffle_gb, 1),
        "bytes_written_tb": round(written_bytes / 1e12, 3),
        "usd": {k: round(v, 2) for k, v in money.items()},
        "usd_total": round(sum(money.values()), 2),
    }


def gpu_break_even(measured: dict, args: argparse.Namespace) -> dict:
    """Speed-up of the network steps a GPU worker needs over one CPU worker to cost less."""
    steps = measured["cpu_seconds_per_megapixel"]
    network_share = steps["models"] / measured["total_cpu_seconds_per_megapixel"]
    cpu_worker_price = args.vcpus_per_worker * PRICES["vcpu_hour"] + (
        args.memory_gb_per_worker * PRICES["memory_gb_hour"]
    )
    gpu_worker_price = cpu_worker_price + args.gpu_price_per_hour
    # A GPU worker does the network part s times faster and the rest as fast as the CPU
    # worker: throughput gain = 1 / ((1 - share) + share / s).  It pays when the gain
    # exceeds the price ratio.
    ratio = gpu_worker_price / cpu_worker_price
    if 1 - network_share >= 1 / ratio:
        needed = None  # even an infinitely fast GPU cannot pay: the CPU part dominates
    else:
        needed = network_share / (1 / ratio - (1 - network_share))
    return {
        "network_share_of_cpu": round(network_share, 3),
        "gpu_worker_price_ratio": round(ratio, 2),
        "break_even_network_speedup": None if needed is None else round(needed, 1),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=float, default=100e6, help="Images in the archive.")
    parser.add_argument("--megapixels", type=float, default=12.0, help="Mean megapixels.")
    parser.add_argument("--mode", default="both", choices=["both", "compress", "denoise"])
    parser.add_argument(
        "--new-fraction", type=float, default=0.02, help="Share of images new each night."
    )
    parser.add_argument("--workers", type=int, default=50, help="Dataflow workers.")
    parser.add_argument(
        "--night-hours", type=float, default=8.0, help="Window the nightly run must fit in."
    )
    parser.add_argument("--vcpus-per-worker", type=int, default=4, help="n2-standard-4: 4.")
    parser.add_argument("--memory-gb-per-worker", type=float, default=16.0)
    parser.add_argument(
        "--vcpu-speed",
        type=float,
        default=1.0,
        help="Speed of a worker vCPU relative to one core of this machine (assumed).",
    )
    parser.add_argument(
        "--pipeline-overhead",
        type=float,
        default=1.06,
        help="Pipeline time over the bare per-image work (benchmarks.apply_throughput: 0.94x).",
    )
    parser.add_argument("--price-scale", type=float, default=1.0, help="Regional multiplier.")
    parser.add_argument(
        "--gpu-price-per-hour",
        type=float,
        default=0.71,
        help="Price of the GPU on a GPU worker over the CPU worker (assumed: an L4).",
    )
    parser.add_argument(
        "--shuffle-bytes-per-record", type=float, default=229, help="benchmarks.archive_scale."
    )
    parser.add_argument(
        "--manifest-bytes-per-record", type=float, default=711, help="benchmarks.archive_scale."
    )
    parser.add_argument("--sample", type=int, default=12, help="Photographs to measure on.")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow threads.")
    return parser


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)

    paths = sample_images(args.sample)
    started = time.perf_counter()
    measured = measure(paths, args.mode, args.threads)
    if args.mode == "both":  # which network costs what
        measured["models_cpu_seconds_per_megapixel_alone"] = {
            mode: measure(paths, mode, args.threads)["cpu_seconds_per_megapixel"]["models"]
            for mode in ("denoise", "compress")
        }
    print(
        f"measured on {len(paths)} images in {time.perf_counter() - started:.0f} s", file=sys.stderr
    )
    result = {
        "measured_on_this_machine": measured,
        "assumptions": {k: v for k, v in vars(args).items() if k not in ("sample", "threads")}
        | {"prices_usd": PRICES},
        "night": project(measured, args, args.images * args.new_fraction),
        "backfill": project(measured, args, args.images),
        "gpu": gpu_break_even(measured, args),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
