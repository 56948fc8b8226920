"""Convergence: quality against training steps and CPU time, per training recipe.

    python -m benchmarks.convergence --task codec --data PREPARED \
        --recipe 'shipped=--learning-rate=3e-4 --clip-norm=0 --synthesis-quantizer=noise' \
        --recipe 'clipped=--learning-rate=1e-3' --steps 3000 --eval-every 500
    python -m benchmarks.convergence --task denoise --data PREPARED \
        --recipe 'dncnn=--depth=10 --filters=48' \
        --recipe 'unshuffle=--depth=12 --filters=96 --unshuffle=2' --cpu-seconds 900
    python -m benchmarks.convergence --task codec \
        --recipe 'cbsd432=--data=PREPARED_A' --recipe 'more=--data=PREPARED_B' --steps 3000

Each recipe is a set of ``latentpress train`` flags, trained from scratch (or from
``--init-from`` if a recipe says so) in this process with one TensorFlow thread
(``--threads``), on ``--data`` or on the recipe's own ``--data`` (to compare training sets
at equal steps), and evaluated at fixed intervals on centre crops of CBSD68 (``--images``):
PSNR with real rounding and bpp for the codec; PSNR on the crops with seeded 8-bit Gaussian
noise (``--sigma``) for the denoiser.  CPU time is the process's own
(``time.process_time``), so a machine shared with other work still gives comparable figures.
Prints a Markdown table per recipe and writes ``--out`` (JSON) with every point.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shlex
import tempfile
import time

import numpy as np
import tensorflow as tf
from PIL import Image

from models import growth
from models import trainer as trainers
from models.codec import pad_to_multiple
from pipelines import train
from transforms import features, statistics, training_data
from transforms.noise import gaussian

DEFAULT_IMAGES = os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "datasets", "CBSD68", "*.png"
)


def eval_crops(pattern: str, size: int) -> np.ndarray:
    """Centre crops ``size``x``size`` of every image matching ``pattern``: uint8 [N, s, s, 3]."""
    paths = sorted(glob.glob(pattern))
    if not paths:
        raise SystemExit(f"no evaluation images match {pattern}")
    crops = []
    for path in paths:
        pixels = np.asarray(Image.open(path).convert("RGB"))
        if min(pixels.shape[:2]) < size:
            raise SystemExit(f"{path} is {pixels.shape[1]}x{pixels.shape[0]}: under --crop {size}")
        top, left = (pixels.shape[0] - size) // 2, (pixels.shape[1] - size) // 2
        crops.append(pixels[top : top + size, left : left + size])
    return np.stack(crops)


def noisy_crops(crops: np.ndarray, sigma: float) -> np.ndarray:
    rng = np.random.default_rng([25, int(sigma)])
    return np.clip(np.rint(gaussian(crops, sigma, rng)), 0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def evaluate(trainer: trainers.Trainer, crops: np.ndarray, noisy: np.ndarray) -> dict:
    """Mean PSNR over the crops (and codec bpp), one image at a time as served (the moving
    average of the weights for a recipe with --ema-decay)."""
    with trainer.averaged():
        return _evaluate(trainer.model, trainer.args.task, crops, noisy)


def _evaluate(model, task: str, crops: np.ndarray, noisy: np.ndarray) -> dict:
    psnrs, bpps = [], []
    for clean, corrupted in zip(crops, noisy, strict=True):
        if task == "codec":
            x = pad_to_multiple(tf.constant(clean[np.newaxis], tf.float32) / 255.0)
            _, bpp, _, x_hat = model(x, training=False)
            bpps.append(float(bpp))
            output = x_hat[0, : clean.shape[0], : clean.shape[1]]
        else:
            output = model(tf.constant(corrupted[np.newaxis], tf.float32) / 255.0)[0]
        decoded = np.clip(np.rint(output.numpy() * 255.0), 0, 255).astype(np.uint8)
        psnrs.append(psnr(decoded, clean))
    point = {"psnr": round(float(np.mean(psnrs)), 3)}
    if bpps:
        point["bpp"] = round(float(np.mean(bpps)), 4)
    return point


def run_recipe(name: str, flags: list[str], args, crops, noisy) -> list[dict]:
    with tempfile.TemporaryDirectory() as model_dir:
        default_data = [f"--data={args.data}"] if args.data else []
        train_args = train.build_parser().parse_args(
            [*default_data, f"--model-dir={model_dir}", f"--task={args.task}", *flags]
        )
        stats = statistics.read_stats(os.path.join(train_args.data, features.TRANSFORM_DIR))
        trainer = trainers.Trainer(
            train_args, tf.distribute.get_strategy(), lambda: train.build_model(train_args, stats)
        )
        if train_args.init_from:
            growth.load_exported_weights(trainer.model, train_args.init_from)
            trainer.restart_average()
        dataset = training_data.make_dataset(
            train_args.data,
            features.TRAIN_DIR,
            train_args.batch_size,
            True,
            train_args.crop,
            train_args.seed,
            train_args.train_noise if args.task == "denoise" else None,
        )
        batches = iter(dataset)
        cpu = 0.0
        points = [{"step": 0, "cpu_seconds": 0.0, **evaluate(trainer, crops, noisy)}]
        print(f"{name}: {points[-1]}", flush=True)
        while (not args.steps or trainer.step < args.steps) and (
            not args.cpu_seconds or cpu < args.cpu_seconds
        ):
            start = time.process_time()
            for _ in range(args.eval_every):
                metrics = trainer.train_step(next(batches))
            cpu += time.process_time() - start
            point = {"step": trainer.step, "cpu_seconds": round(cpu, 1)}
            point["train_loss"] = round(float(metrics["loss"]), 5)
            points.append({**point, **evaluate(trainer, crops, noisy)})
            print(f"{name}: {points[-1]}", flush=True)
    return points


def table(name: str, flags: list[str], points: list[dict]) -> str:
    columns = [c for c in ("step", "cpu_seconds", "psnr", "bpp") if c in points[-1]]
    lines = [
        f"**{name}** `{shlex.join(flags)}`",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(str(p.get(c, "")) for c in columns) + " |" for p in points]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["codec", "denoise"], required=True)
    parser.add_argument(
        "--data",
        default=None,
        help="A prepare-stage output directory: every recipe's training data unless the "
        "recipe gives its own --data.",
    )
    parser.add_argument(
        "--recipe",
        action="append",
        required=True,
        help="NAME=FLAGS: latentpress train flags of one recipe (repeatable).",
    )
    parser.add_argument("--steps", type=int, default=0, help="Step budget per recipe.")
    parser.add_argument("--cpu-seconds", type=float, default=0, help="CPU budget per recipe.")
    parser.add_argument("--eval-every", type=int, default=500, help="Steps between points.")
    parser.add_argument("--images", default=DEFAULT_IMAGES, help="Evaluation images (glob).")
    parser.add_argument("--crop", type=int, default=256, help="Evaluation centre-crop side.")
    parser.add_argument("--sigma", type=float, default=25.0, help="Denoiser evaluation noise.")
    parser.add_argument("--out", default="convergence.json", help="JSON with every point.")
    parser.add_argument(
        "--threads", type=int, default=1, help="TensorFlow threads (0: TensorFlow's choice)."
    )
    args = parser.parse_args(argv)
    if not (args.steps or args.cpu_seconds):
        parser.error("give --steps or --cpu-seconds (or both)")
    if args.threads:  # before TensorFlow starts; 0 leaves it as it is (e.g. in a test process)
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    crops = eval_crops(args.images, args.crop)
    noisy = noisy_crops(crops, args.sigma)
    results = {}
    for recipe in args.recipe:
        name, _, text = recipe.partition("=")
        flags = shlex.split(text)
        tf.keras.utils.set_random_seed(0)
        points = run_recipe(name, flags, args, crops, noisy)
        results[name] = {"flags": flags, "points": points}
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump({"task": args.task, "images": args.images, "results": results}, handle, indent=2)
    for name, result in results.items():
        print(table(name, result["flags"], result["points"]))
    return results


if __name__ == "__main__":
    main()
