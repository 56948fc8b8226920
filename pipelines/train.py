"""Training stage: fit the codec or the denoiser on the prepare stage's TFRecords, then export.

Usage::

    latentpress train --data out/prepared --model-dir ~/runs/codec --task codec \
        --steps 20000 --lmbda 0.01
    latentpress train --data out/prepared --model-dir ~/runs/denoiser --task denoise

Under ``--model-dir``: ``checkpoints/`` (every ``--checkpoint-every`` steps; a re-run resumes
from the latest, optimizer state included), ``logs/`` (TensorBoard), ``export/`` (SavedModel and
model_card.json, see ``models.export``).  ``--data`` may be on gs://: shards are copied to local
disk first, because TensorFlow's own gs:// client bypasses Beam's filesystems.

Devices: several GPUs -> MirroredStrategy, mixed precision on GPU; otherwise the default
strategy.  ``--cpu-replicas N`` splits the CPU into N logical devices under MirroredStrategy,
which exercises the multi-device path on a machine without GPUs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sys
import threading
import time

import numpy as np
import tensorflow as tf
import tf_keras as keras

from models.codec import CodecConfig, ScaleHyperprior
from models.denoiser import DenoiserConfig, build_denoiser
from models.export import export_model
from models.growth import (
    calibrate_scale_offsets,
    latent_usage,
    load_exported_weights,
    split_latents,
)
from models.trainer import Trainer, choose_strategy
from pipelines.train_flags import TASKS, build_parser
from transforms import features, noise, records, statistics
from transforms.training_data import make_dataset

LOG = logging.getLogger(__name__)


def _stop_on_signals():
    """Makes SIGTERM and SIGINT stop the training loop as Ctrl-C does (a checkpoint, then the
    exit), also where SIGINT was ignored: a shell starts background jobs (`nohup ... &`) with
    SIGINT ignored, and schedulers and preemptible VMs stop with SIGTERM.  Returns a function
    that puts the previous handlers back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # signal handlers can only be set from the main thread

    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore():
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


# --- models ------------------------------------------------------------------------------


def build_model(args: argparse.Namespace, stats: dict):
    if args.task == "codec":
        lmbdas = tuple(float(v) for v in args.lmbdas.split(",")) if args.lmbdas else ()
        config = CodecConfig(
            args.num_filters,
            args.latent_filters,
            args.lmbda,
            lmbdas,
            args.hyper_filters,
            args.mean_scale,
            args.slices,
            args.kernel_size,
            args.coarse_kernel_size,
            args.hyper_signs,
            args.analysis_entry_filters,
            args.analysis_level_gains,
            args.analysis_tail_filters,
            args.synthesis_level_gains,
            fine_kernel_size=args.fine_kernel_size,
            checkerboard=args.checkerboard,
            level_scale_offsets=args.level_scale_offsets,
        )
        model = ScaleHyperprior(config)
        model.synthesis_quantizer = args.synthesis_quantizer
        model.rate_shapes = args.rate_shapes
    else:
        config = DenoiserConfig(
            args.depth,
            args.filters,
            tuple(stats[statistics.CHANNEL_MEAN]),
            tuple(stats[statistics.CHANNEL_STD]),
            args.unshuffle,
            args.architecture,
            args.levels,
            args.blocks,
        )
        model = build_denoiser(config)
    model.build_for_images()
    return model


# --- the run -----------------------------------------------------------------------------


class _Progress:
    """A tqdm bar on a terminal, periodic log lines otherwise."""

    def __init__(self, start: int, total: int, bar: bool):
        self.bar = None
        if bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)
        self.last_log = time.monotonic()

    def update(self, step: int, metrics: dict[str, float]):
        text = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        if self.bar is not None:
            self.bar.update(1)
            if step % 10 == 0:
                self.bar.set_postfix_str(text)
        elif time.monotonic() - self.last_log > 30:
            LOG.info("step %d: %s", step, text)
            self.last_log = time.monotonic()

    def close(self):
        if self.bar is not None:
            self.bar.close()


# A codec trained on smaller crops than this sees side information maps of 2x2 (128²): its
# hyperprior then learns mostly the crops' borders.  Measured (issue 13): from the same start
# and at the same pixels per step, 4,500 steps on 256² crops gave 11% fewer bits at equal
# PSNR on whole CBSD68 photographs than on 128² crops (1.2%).
MIN_CODEC_CROP = 256


def warn_about_small_codec_crops(args: argparse.Namespace, patch_size: int | None) -> bool:
    """Logs a warning (and returns True) when a codec would train on crops below
    MIN_CODEC_CROP."""
    side = args.crop or patch_size
    if args.task != "codec" or not side or side >= MIN_CODEC_CROP:
        return False
    LOG.warning(
        "the codec trains on %dx%d crops: its hyperprior then sees %dx%d side maps, and crops "
        "of %d or more code whole photographs with ~10%% fewer bits at equal PSNR (prepare "
        "with --patch-size 320, train with --crop 256 --batch-size 2)",
        side,
        side,
        max(1, side // 64),
        max(1, side // 64),
        MIN_CODEC_CROP,
    )
    return True


def _training_data_summary(data_dir: str) -> dict:
    path = os.path.join(data_dir, records.SUMMARY_FILE)
    if not os.path.exists(path):
        return {"dir": data_dir}
    summary = records.read_json(path)
    config = summary.get("config", {})
    return {
        "dir": data_dir,
        "inputs": config.get("inputs"),
        "noise": config.get("noise"),
        "patch_size": config.get("patch_size"),
        "images": summary.get("images"),
        "patches": summary.get("patches"),
    }


LINEAGE_FILE = "lineage.json"  # under --model-dir: what a warm start began from
COMMANDS_FILE = "commands.jsonl"  # under --model-dir: every invocation, with its start step


def _start_lineage(trainer: Trainer, args: argparse.Namespace, data_dir: str) -> dict:
    """Warm-starts a fresh run from --init-from and records where it began; a resumed run
    (or one without --init-from) reads what was recorded."""
    path = os.path.join(args.model_dir, LINEAGE_FILE)
    if os.path.exists(path):
        return records.read_json(path)
    lineage = {"steps": 0, "cpu_seconds": 0.0, "commands": []}
    if args.init_from and trainer.step == 0:
        source = load_exported_weights(trainer.model, args.init_from)
        revived, pairs = [], []
        if args.revive_latents:
            batches = make_dataset(data_dir, features.TRAIN_DIR, 8, False).take(16)
            pairs = split_latents(trainer.model, latent_usage(trainer.model, batches), args.seed)
            revived = [dead for dead, _ in pairs]
            LOG.info("revived %d latent channels that coded nothing by splitting", len(pairs))
        calibrated = {}
        model = trainer.model
        grown_offsets = isinstance(model, ScaleHyperprior) and model.config.level_scale_offsets
        if grown_offsets and not CodecConfig.from_card(source).level_scale_offsets:
            _, images = next(iter(make_dataset(data_dir, features.TRAIN_DIR, 16, False)))
            offsets = calibrate_scale_offsets(model, images)
            calibrated = {"calibrated_scale_offsets": [float(v) for v in offsets]}
            LOG.info("scale offsets per level, calibrated: %s", np.round(offsets, 2).tolist())
        trainer.restart_average()
        lineage = {
            "init_from": args.init_from,
            "init_fingerprint": source.get("fingerprint"),
            "steps": source.get("cumulative_steps", source.get("steps", 0)),
            # Older cards only know wall-clock seconds: the best estimate of their CPU time.
            "cpu_seconds": source.get("cumulative_cpu_hours", 0.0) * 3600.0
            or source.get("train_seconds", 0.0),
            "commands": source.get("commands") or [source.get("command")],
            **_grown_latents(source, trainer.model),
            **calibrated,
            **({"revived_latents": [int(c) for c in revived]} if args.revive_latents else {}),
            **({"split_from": [int(live) for _, live in pairs]} if args.revive_latents else {}),
        }
        LOG.info("warm start from %s (%s steps before)", args.init_from, lineage["steps"])
    os.makedirs(args.model_dir, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(lineage, handle, indent=2)
    return lineage


def _grown_latents(source_card: dict, model) -> dict:
    """The latent channels a warm start added to its source codec ({} if none)."""
    if not isinstance(model, ScaleHyperprior):
        return {}
    before = CodecConfig.from_card(source_card).latent_filters
    after = model.config.latent_filters
    return {"new_latents": [before, after]} if 0 < before < after else {}


def _record_command(args: argparse.Namespace, command: str, step: int) -> list[str]:
    """Appends this invocation to the run's command log; returns every distinct command."""
    path = os.path.join(args.model_dir, COMMANDS_FILE)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"start_step": step, "command": command}) + "\n")
    commands = [entry["command"] for entry in records.read_json_lines(path)]
    return list(dict.fromkeys(commands))


def run(argv=None) -> dict:
    """Trains to ``--steps`` (resuming if checkpoints exist), exports, returns the model card."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.train_noise:
        noise.parse_spec(args.train_noise)  # a bad SPEC fails here, not inside tf.data
    if not 0.0 <= args.train_float_noise <= 1.0:
        parser.error("--train-float-noise must be a share in [0, 1]")
    if args.train_float_noise and not args.train_noise:
        parser.error("--train-float-noise needs --train-noise")
    if args.revive_latents and not (args.init_from and args.task == "codec"):
        parser.error("--revive-latents needs --task codec and --init-from")
    if args.train_only and not (args.init_from and args.task == "codec"):
        parser.error("--train-only encoder needs --task codec and --init-from (a decoder to keep)")
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(args.seed)
    strategy = choose_strategy(args.cpu_replicas)
    data_dir = records.local_copy(args.data)  # TensorFlow reads local files only here
    stats = statistics.read_stats(os.path.join(data_dir, features.TRANSFORM_DIR))
    trainer = Trainer(args, strategy, lambda: build_model(args, stats))
    start = trainer.restore()
    lineage = _start_lineage(trainer, args, data_dir)
    if args.ramp_new_latents:
        if "new_latents" not in lineage:
            raise ValueError(
                "--ramp-new-latents: this run did not grow latents (it needs --init-from a "
                "codec with fewer latents than --latent-filters, from its first step)"
            )
        trainer.ramp_in_latents(lineage["new_latents"][0], args.ramp_new_latents)
    warn_about_small_codec_crops(args, _training_data_summary(data_dir).get("patch_size"))
    command = "latentpress train " + shlex.join(argv if argv is not None else sys.argv[1:])
    if args.export_only:
        if not trainer.manager.latest_checkpoint:
            raise FileNotFoundError(f"--export-only: no checkpoint under {args.model_dir}")
        path = os.path.join(args.model_dir, COMMANDS_FILE)
        commands = list(dict.fromkeys(e["command"] for e in records.read_json_lines(path)))
        args.steps = start  # nothing to train
    else:
        commands = _record_command(args, command, start)
    if not trainer.manager.latest_checkpoint:
        trainer.save()  # a roll-back always has somewhere to go

    train_data = make_dataset(
        data_dir,
        features.TRAIN_DIR,
        args.batch_size,
        True,
        args.crop,
        args.seed + start,
        args.train_noise if args.task == "denoise" else None,
        first_example=start * args.batch_size,
        float_noise_share=args.train_float_noise,
    )
    try:
        eval_data = make_dataset(data_dir, features.EVAL_DIR, args.batch_size, False)
    except FileNotFoundError:
        LOG.warning("no eval split under %s: evaluating on train batches", data_dir)
        eval_data = make_dataset(data_dir, features.TRAIN_DIR, args.batch_size, False)
    batches = iter(strategy.experimental_distribute_dataset(train_data))
    writer = tf.summary.create_file_writer(os.path.join(args.model_dir, "logs"))
    progress = _Progress(start, args.steps, bar=not args.no_progress and sys.stderr.isatty())
    eval_metrics: dict[str, float] = {}
    clock, cpu_clock = time.monotonic(), time.process_time()

    def account_time():
        nonlocal clock, cpu_clock
        now, cpu_now = time.monotonic(), time.process_time()
        trainer.train_seconds.assign_add(now - clock)
        trainer.cpu_seconds.assign_add(cpu_now - cpu_clock)
        clock, cpu_clock = now, cpu_now

    def checkpoint():
        account_time()
        if trainer.weights_are_finite():
            trainer.save()
        else:
            trainer.roll_back()

    served = None  # a mixed-precision run's float32 model for evaluations, built once

    def evaluate_served() -> dict[str, float]:
        """The eval metrics of what the export will serve: the moving average where there is
        one, in float32 (a bfloat16 run's curve then compares with a float32 run's)."""
        nonlocal served
        if not trainer.mixed:
            with trainer.averaged():
                return trainer.evaluate(eval_data, args.eval_batches)
        served = served_model(trainer, args, stats, served)
        return trainer.evaluate(eval_data, args.eval_batches, served)

    restore_signals = _stop_on_signals()
    try:
        while trainer.step < args.steps:
            metrics = trainer.step_or_roll_back(next(batches))
            if metrics is None:
                continue
            step = trainer.step
            progress.update(step, metrics)
            with writer.as_default(step=step):
                for name, value in metrics.items():
                    tf.summary.scalar(f"train/{name}", value)
                tf.summary.scalar("train/learning_rate", float(trainer.learning_rate.numpy()))
            if step % args.eval_every == 0 or step == args.steps:
                eval_metrics = evaluate_served()
                trainer.after_evaluation(eval_metrics.get("loss", np.nan))
                with writer.as_default(step=step):
                    for name, value in eval_metrics.items():
                        tf.summary.scalar(f"eval/{name}", value)
                LOG.info("eval at step %d: %s", step, eval_metrics)
            if step % args.checkpoint_every == 0 or step == args.steps:
                checkpoint()
    except KeyboardInterrupt:
        checkpoint()
        LOG.warning("interrupted: saved %s", trainer.manager.latest_checkpoint)
        raise
    finally:
        restore_signals()
        progress.close()

    if not eval_metrics:
        eval_metrics = evaluate_served()
    cpu_seconds = lineage["cpu_seconds"] + float(trainer.cpu_seconds.numpy())
    card = {
        "name": os.path.basename(os.path.normpath(args.model_dir)),
        "architecture": type(trainer.model).__name__,
        "config": trainer.model.config.as_dict(),
        "lmbda": args.lmbda if args.task == "codec" and not args.lmbdas else None,
        "training_data": _training_data_summary(data_dir),
        "steps": trainer.step,
        "cumulative_steps": lineage["steps"] + trainer.step,
        # to ~4 ms: a short run is not 0.0 hours (a warm start adds this up)
        "cumulative_cpu_hours": round(cpu_seconds / 3600.0, 6),
        "init_from": lineage.get("init_from"),
        # init_from names a path or a shipped name, whose meaning moves with each release:
        # the fingerprint and step count say which model it was.
        "init_fingerprint": lineage.get("init_fingerprint"),
        "init_steps": lineage["steps"] if lineage.get("init_from") else None,
        "batch_size": args.batch_size,
        "train_seconds": round(float(trainer.train_seconds.numpy()), 1),
        "replicas": strategy.num_replicas_in_sync,
        "precision": trainer.policy,
        "ema_decay": args.ema_decay or None,
        "eval": {k: round(v, 4) for k, v in eval_metrics.items()},
        "learning_rate": float(trainer.learning_rate.numpy()),
        "train_noise": args.train_noise if args.task == "denoise" else None,
        "train_float_noise": args.train_float_noise if args.task == "denoise" else None,
        "command": commands[-1],
        "commands": [c for c in lineage["commands"] if c] + commands,
    }
    model = served_model(trainer, args, stats)
    export_dir = os.path.join(args.model_dir, "export")
    card = export_model(model, TASKS[args.task], export_dir, card)
    LOG.info("exported %s (fingerprint %s) to %s", args.task, card["fingerprint"], export_dir)
    return card


def served_model(trainer, args: argparse.Namespace, stats: dict, model=None):
    """The model as its export serves it: the moving average of the weights where there is
    one, always in float32 (decoding must not depend on the training device's precision).
    ``model``: one this built before, refilled instead of building another."""
    with trainer.averaged():
        weights = trainer.model.get_weights()
    if model is None:
        policy = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy("float32")
        try:
            model = build_model(args, stats)
        finally:
            keras.mixed_precision.set_global_policy(policy)
    model.set_weights(weights)
    return model


def main(argv=None):
    from pipelines.options import configure_logging

    configure_logging()
    try:
        run(argv)
    except KeyboardInterrupt:
        # the checkpoint is saved and logged: a requested stop, not a crash (no traceback),
        # with the shell's exit status for an interrupted command
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
