"""Training throughput for the default configurations, against the input pipeline alone.

    python -m benchmarks.train_throughput [--data DIR] [--steps N] [--precisions float32,bfloat16]

Without --data it first prepares patches from the embedded sample photographs.

For each task: steps/s and images/s of real training (tf.data from the shards), steps/s on
one cached in-memory batch (pure compute), and batches/s of the input pipeline alone.  The
input pipeline is not the bottleneck when input/train is well above 1 and real training runs
at the in-memory rate.

With ``--precisions``, each task's in-memory step is also timed under each ``--precision`` in
this process, in CPU seconds (``time.process_time``, so other load on a shared machine does
not skew it), with its ratio to the first one.
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time

import tensorflow as tf

from models import trainer as trainers
from pipelines import train
from transforms import features, statistics, training_data

DEFAULTS = {
    "codec": ["--task=codec", "--batch-size=8"],
    "denoise": ["--task=denoise", "--batch-size=16", "--crop=48"],
}


def rate(step, count: int, clock=time.perf_counter) -> float:
    """Calls per second of ``clock`` (wall time, or ``time.process_time`` for CPU time)."""
    step()  # the first call traces and builds; not timed
    start = clock()
    for _ in range(count):
        step()
    return count / (clock() - start)


def make_trainer(flags: list[str], data: str, stats: dict, model_dir: str):
    """A fresh trainer of ``flags`` and its shuffled training batches."""
    train_args = train.build_parser().parse_args(
        [f"--data={data}", f"--model-dir={model_dir}", *flags]
    )
    trainer = trainers.Trainer(
        train_args, tf.distribute.get_strategy(), lambda: train.build_model(train_args, stats)
    )
    dataset = training_data.make_dataset(
        data, features.TRAIN_DIR, train_args.batch_size, True, train_args.crop
    )
    return train_args, trainer, iter(dataset)


def precision_rates(flags: list[str], data: str, stats: dict, steps: int, precisions) -> dict:
    rates = {}
    for precision in precisions:
        with tempfile.TemporaryDirectory() as model_dir:
            _, trainer, batches = make_trainer(
                [f"--precision={precision}", *flags], data, stats, model_dir
            )
            step = functools.partial(trainer.train_step, next(batches))
            rates[precision] = rate(step, steps, clock=time.process_time)
    first = rates[precisions[0]]
    return {
        f"{precision}_steps_per_cpu_s": round(value, 3) for precision, value in rates.items()
    } | {f"{precision}_over_{precisions[0]}": round(v / first, 2) for precision, v in rates.items()}


def measure(flags: list[str], data: str, stats: dict, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as model_dir:
        train_args, trainer, batches = make_trainer(flags, data, stats, model_dir)
        input_rate = rate(lambda: next(batches), steps * 10)
        fixed = next(batches)
        compute_rate = rate(lambda: trainer.train_step(fixed), steps)
        real_rate = rate(lambda: trainer.train_step(next(batches)), steps)
    return {
        "batch_size": train_args.batch_size,
        "train_steps_per_s": round(real_rate, 3),
        "train_images_per_s": round(real_rate * train_args.batch_size, 2),
        "in_memory_steps_per_s": round(compute_rate, 3),
        "input_batches_per_s": round(input_rate, 1),
        "input_over_train": round(input_rate / real_rate, 1),
        "real_over_in_memory": round(real_rate / compute_rate, 2),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="A prepare-stage output directory.")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument(
        "--precisions",
        default="",
        help="Comma-separated --precision values to compare (e.g. float32,bfloat16).",
    )
    parser.add_argument("--threads", type=int, default=0, help="TensorFlow threads (0: all).")
    args = parser.parse_args(argv)
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    if not args.data:
        from pipelines import prepare

        args.data = tempfile.mkdtemp(prefix="latentpress-bench-")
        prepare.run([f"--output={args.data}", "--eval-fraction=0.3", "--runner=DirectRunner"])
    stats = statistics.read_stats(f"{args.data}/{features.TRANSFORM_DIR}")
    results = {
        task: measure(flags, args.data, stats, args.steps) for task, flags in DEFAULTS.items()
    }
    precisions = [p for p in args.precisions.split(",") if p]
    if precisions:
        for task, flags in DEFAULTS.items():
            results[task] |= precision_rates(flags, args.data, stats, args.steps, precisions)
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
