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
import logging
import os
import shlex
import sys
import time

import tensorflow as tf
import tf_keras as keras

from models.codec import CodecConfig, ScaleHyperprior
from models.denoiser import DenoiserConfig, DnCNN
from models.export import CODEC, DENOISER, export_model
from transforms import features, records, statistics

LOG = logging.getLogger(__name__)
TASKS = {"codec": CODEC, "denoise": DENOISER}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latentpress train", description="Train the codec or the denoiser, then export it."
    )
    parser.add_argument("--data", required=True, help="Output directory of the prepare stage.")
    parser.add_argument(
        "--model-dir", required=True, help="Checkpoints, TensorBoard logs and the export."
    )
    parser.add_argument("--task", choices=sorted(TASKS), required=True, help="What to train.")
    parser.add_argument("--steps", type=int, default=20000, help="Total optimizer steps.")
    parser.add_argument("--batch-size", type=int, default=8, help="Global batch size.")
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="Adam learning rate.")
    parser.add_argument(
        "--lmbda",
        type=float,
        default=0.01,
        help="Codec rate-distortion trade-off: loss = bpp + lmbda * MSE (8-bit scale).",
    )
    parser.add_argument("--num-filters", type=int, default=64, help="Codec N.")
    parser.add_argument("--latent-filters", type=int, default=96, help="Codec M.")
    parser.add_argument("--depth", type=int, default=10, help="Denoiser convolution layers.")
    parser.add_argument("--filters", type=int, default=48, help="Denoiser channels.")
    parser.add_argument("--crop", type=int, default=0, help="Random crop of each patch (0: none).")
    parser.add_argument(
        "--checkpoint-every", type=int, default=200, help="Save a checkpoint every N steps."
    )
    parser.add_argument("--eval-every", type=int, default=500, help="Evaluate every N steps.")
    parser.add_argument("--eval-batches", type=int, default=20, help="Batches per evaluation.")
    parser.add_argument(
        "--cpu-replicas",
        type=int,
        default=0,
        help="Split the CPU into N logical devices under MirroredStrategy (testing the "
        "multi-device path without GPUs).",
    )
    parser.add_argument("--no-progress", action="store_true", help="Log lines, not a bar.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of initialization and shuffle.")
    return parser


# --- data --------------------------------------------------------------------------------


def _augment(pair: tuple[tf.Tensor, tf.Tensor], crop: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Same random flip, quarter turn and crop for the noisy and the clean patch."""
    both = tf.concat(pair, axis=-1)
    both = tf.image.rot90(both, tf.random.uniform([], 0, 4, tf.int32))
    both = tf.image.random_flip_left_right(both)
    if crop:
        both = tf.image.random_crop(both, [crop, crop, 2 * features.CHANNELS])
    return both[..., : features.CHANNELS], both[..., features.CHANNELS :]


def make_dataset(
    data_dir: str, split: str, batch_size: int, training: bool, crop: int = 0, seed: int = 0
) -> tf.data.Dataset:
    """(noisy, clean) float [0, 1] batches: interleaved reads, shuffle, parallel map, prefetch."""
    pattern = features.shard_glob(data_dir, split)
    if not tf.io.gfile.glob(pattern):
        raise FileNotFoundError(f"no {split} shards match {pattern}")
    files = tf.data.Dataset.list_files(pattern, shuffle=training, seed=seed)
    dataset = files.interleave(
        tf.data.TFRecordDataset,
        cycle_length=tf.data.AUTOTUNE,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=not training,
    )
    if training:
        dataset = dataset.shuffle(2048, seed=seed).repeat()

    def to_pair(serialized):
        example = features.parse_examples(serialized)
        noisy = tf.cast(example[features.NOISY], tf.float32) / 255.0
        clean = tf.cast(example[features.CLEAN], tf.float32) / 255.0
        return noisy, clean

    dataset = dataset.map(to_pair, num_parallel_calls=tf.data.AUTOTUNE)
    if training:
        dataset = dataset.map(lambda n, c: _augment((n, c), crop), tf.data.AUTOTUNE)
    return dataset.batch(batch_size, drop_remainder=training).prefetch(tf.data.AUTOTUNE)


# --- devices -----------------------------------------------------------------------------


def choose_strategy(cpu_replicas: int = 0) -> tf.distribute.Strategy:
    gpus = tf.config.list_physical_devices("GPU")
    if cpu_replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(cpu_replicas)]
        )
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def use_mixed_precision() -> bool:
    """float16 compute on GPU (its tensor cores); on CPU it is slower, so float32 there."""
    if tf.config.list_physical_devices("GPU"):
        keras.mixed_precision.set_global_policy("mixed_float16")
        return True
    keras.mixed_precision.set_global_policy("float32")
    return False


# --- models ------------------------------------------------------------------------------


def build_model(args: argparse.Namespace, stats: dict):
    if args.task == "codec":
        config = CodecConfig(args.num_filters, args.latent_filters, args.lmbda)
        model = ScaleHyperprior(config)
    else:
        config = DenoiserConfig(
            args.depth,
            args.filters,
            tuple(stats[statistics.CHANNEL_MEAN]),
            tuple(stats[statistics.CHANNEL_STD]),
        )
        model = DnCNN(config)
    model.build_for_images()
    return model


def task_losses(model, noisy, clean, training: bool) -> dict[str, tf.Tensor]:
    """The objective and the metrics of one batch (codec ignores ``noisy``)."""
    if isinstance(model, ScaleHyperprior):
        loss, bpp, mse, _ = model(clean, training=training)
        psnr = 10.0 * tf.math.log(255.0**2 / mse) / tf.math.log(10.0)
        return {"loss": loss, "bpp": bpp, "mse": mse, "psnr": psnr}
    x_hat = model(noisy)
    mse = tf.reduce_mean(tf.square(x_hat - clean))
    # PSNR of the batch's mean error: a patch drawn with sigma 0 has no error, and its
    # infinite per-patch PSNR would swamp a mean of PSNRs.
    clipped_mse = tf.reduce_mean(tf.square(tf.clip_by_value(x_hat, 0.0, 1.0) - clean))
    noisy_mse = tf.reduce_mean(tf.square(noisy - clean))
    return {
        "loss": mse,
        "mse": mse * 255.0**2,
        "psnr": _psnr(clipped_mse),
        "noisy_psnr": _psnr(noisy_mse),
    }


def _psnr(mse_unit: tf.Tensor) -> tf.Tensor:
    return -10.0 * tf.math.log(tf.maximum(mse_unit, 1e-10)) / tf.math.log(10.0)


class Trainer:
    """Owns the model, optimizer, checkpoint and the distributed train step."""

    def __init__(self, args: argparse.Namespace, strategy: tf.distribute.Strategy, stats: dict):
        self.args = args
        self.strategy = strategy
        self.mixed = use_mixed_precision()
        with strategy.scope():
            self.model = build_model(args, stats)
            schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
                [int(0.8 * args.steps)], [args.learning_rate, args.learning_rate / 10]
            )
            optimizer = keras.optimizers.Adam(schedule)
            if self.mixed:
                optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
            # Create Adam's moments now, so a restore fills them instead of deferring.
            optimizer.build(self.model.trainable_variables)
            self.optimizer = optimizer
            self.train_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, train_seconds=self.train_seconds
        )
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(args.model_dir, "checkpoints"), max_to_keep=3
        )

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def restore(self) -> int:
        if self.manager.latest_checkpoint:
            self.checkpoint.restore(self.manager.latest_checkpoint).assert_consumed()
            LOG.info("resumed from %s at step %d", self.manager.latest_checkpoint, self.step)
        return self.step

    def save(self) -> str:
        return self.manager.save(checkpoint_number=self.step)

    @tf.function
    def train_step(self, batch):
        def replica_step(noisy, clean):
            with tf.GradientTape() as tape:
                metrics = task_losses(self.model, noisy, clean, training=True)
                loss = metrics["loss"] / self.strategy.num_replicas_in_sync
                if self.mixed:
                    loss = self.optimizer.get_scaled_loss(loss)
            variables = self.model.trainable_variables
            gradients = tape.gradient(loss, variables)
            if self.mixed:
                gradients = self.optimizer.get_unscaled_gradients(gradients)
            self.optimizer.apply_gradients(zip(gradients, variables, strict=True))
            return metrics

        per_replica = self.strategy.run(replica_step, args=batch)
        return {
            name: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
            for name, value in per_replica.items()
        }

    def evaluate(self, dataset: tf.data.Dataset, batches: int) -> dict[str, float]:
        totals: dict[str, float] = {}
        count = 0
        for noisy, clean in dataset.take(batches):
            for name, value in task_losses(self.model, noisy, clean, training=False).items():
                totals[name] = totals.get(name, 0.0) + float(value)
            count += 1
        return {name: total / count for name, total in totals.items()} if count else {}


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


def run(argv=None) -> dict:
    """Trains to ``--steps`` (resuming if checkpoints exist), exports, returns the model card."""
    args = build_parser().parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    strategy = choose_strategy(args.cpu_replicas)
    data_dir = records.local_copy(args.data)  # TensorFlow reads local files only here
    stats = statistics.read_stats(os.path.join(data_dir, features.TRANSFORM_DIR))
    trainer = Trainer(args, strategy, stats)
    start = trainer.restore()

    train_data = make_dataset(
        data_dir, features.TRAIN_DIR, args.batch_size, True, args.crop, args.seed + start
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
    clock = time.monotonic()

    def account_time():
        nonlocal clock
        now = time.monotonic()
        trainer.train_seconds.assign_add(now - clock)
        clock = now

    try:
        while trainer.step < args.steps:
            metrics = {k: float(v) for k, v in trainer.train_step(next(batches)).items()}
            step = trainer.step
            progress.update(step, metrics)
            with writer.as_default(step=step):
                for name, value in metrics.items():
                    tf.summary.scalar(f"train/{name}", value)
            if step % args.eval_every == 0 or step == args.steps:
                eval_metrics = trainer.evaluate(eval_data, args.eval_batches)
                with writer.as_default(step=step):
                    for name, value in eval_metrics.items():
                        tf.summary.scalar(f"eval/{name}", value)
                LOG.info("eval at step %d: %s", step, eval_metrics)
            if step % args.checkpoint_every == 0 or step == args.steps:
                account_time()
                trainer.save()
    except KeyboardInterrupt:
        account_time()
        LOG.warning("interrupted: saved %s", trainer.save())
        raise
    finally:
        progress.close()

    if not eval_metrics:
        eval_metrics = trainer.evaluate(eval_data, args.eval_batches)
    card = {
        "name": os.path.basename(os.path.normpath(args.model_dir)),
        "architecture": type(trainer.model).__name__,
        "config": trainer.model.config.as_dict(),
        "lmbda": args.lmbda if args.task == "codec" else None,
        "training_data": _training_data_summary(data_dir),
        "steps": trainer.step,
        "batch_size": args.batch_size,
        "train_seconds": round(float(trainer.train_seconds.numpy()), 1),
        "replicas": strategy.num_replicas_in_sync,
        "eval": {k: round(v, 4) for k, v in eval_metrics.items()},
        "command": "latentpress train " + shlex.join(argv if argv is not None else sys.argv[1:]),
    }
    model = trainer.model
    if trainer.mixed:
        # Serve in float32: decoding must not depend on the training device's precision.
        keras.mixed_precision.set_global_policy("float32")
        model = build_model(args, stats)
        model.set_weights(trainer.model.get_weights())
    export_dir = os.path.join(args.model_dir, "export")
    card = export_model(model, TASKS[args.task], export_dir, card)
    LOG.info("exported %s (fingerprint %s) to %s", args.task, card["fingerprint"], export_dir)
    return card


def main(argv=None):
    from pipelines.options import configure_logging

    configure_logging()
    run(argv)


if __name__ == "__main__":
    main()
