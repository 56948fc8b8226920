"""The trainer: devices and precision, the model a run builds, the objective, and ``Trainer``
(optimizer, distributed step, checkpoints, roll-back on a non-finite loss, moving average,
evaluation).  ``pipelines.train`` drives it."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os

import numpy as np
import tensorflow as tf
import tf_keras as keras

from models.codec import (
    QUALITY_MAX,
    QUALITY_MIN,
    ScaleHyperprior,
    pad_to_multiple,
    training_qualities,
)
from models.growth import latent_usage

LOG = logging.getLogger(__name__)


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


PRECISIONS = {
    "float32": "float32",
    "bfloat16": "mixed_bfloat16",
    "float16": "mixed_float16",
}


def native_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU computes bfloat16 natively (None: its flags cannot be read)."""
    try:
        with open(cpuinfo) as handle:
            flags = {f for line in handle if line.startswith("flags") for f in line.split()}
    except OSError:
        return None
    if not flags:
        return None
    return not flags.isdisjoint({"avx512_bf16", "amx_bf16"})


def use_precision(precision: str = "auto") -> str:
    """Sets and returns the Keras dtype policy of ``--precision``.

    ``auto``: float16 compute on GPU (its tensor cores), float32 on CPU.  ``bfloat16`` pays on
    CPUs with native bfloat16 (AVX512_BF16, AMX): measured ~1.9x the steps per CPU-second of
    float32 for the denoiser on such a CPU.  Variables stay float32 under every policy, so a
    run may change precision when it resumes, and exports always serve in float32.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if precision == "auto":
        precision = "float16" if gpus else "float32"
    if precision == "bfloat16" and not gpus and native_bfloat16() is False:
        LOG.warning(
            "--precision bfloat16 on a CPU without native bfloat16 (no avx512_bf16 or amx_bf16 "
            "in /proc/cpuinfo): it is emulated, measured at 0.55x float32's steps/s; "
            "--precision float32 trains faster here"
        )
    policy = PRECISIONS[precision]
    keras.mixed_precision.set_global_policy(policy)
    return policy


class WarmupLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """A learning rate held in a variable (plateaus and roll-backs lower it, checkpoints keep
    it), ramped up linearly over the first ``warmup_steps`` steps."""

    def __init__(self, base: tf.Variable, warmup_steps: int, scale: float = 1.0):
        self.base = base
        self.warmup_steps = warmup_steps
        self.scale = scale  # a group of weights trained at a multiple of the base rate

    def __call__(self, step):
        ramp = tf.minimum(1.0, (tf.cast(step, tf.float32) + 1.0) / max(self.warmup_steps, 1))
        return self.base * (ramp * self.scale)

    def get_config(self):
        return {"warmup_steps": self.warmup_steps, "scale": self.scale}


def task_losses(
    model, noisy, clean, training: bool, quality=None, balance_levels=False, rate_weights=None
) -> dict[str, tf.Tensor]:
    """The objective and the metrics of one batch (codec ignores ``noisy``; ``quality``, one
    per image, is a variable-rate codec's rate; ``balance_levels`` and ``rate_weights``: see
    ScaleHyperprior.call)."""
    if isinstance(model, ScaleHyperprior):
        loss, bpp, mse, _ = model(
            clean,
            training=training,
            quality=quality,
            balance_levels=balance_levels,
            rate_weights=rate_weights,
        )
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


def transform_ceiling(model: ScaleHyperprior, clean: tf.Tensor) -> tf.Tensor:
    """PSNR of g_s(g_a(x)) without quantization (at the top rate): the most any rate can give,
    since finer steps only bring the decoded latents closer to g_a's.  Measured in issue 30:
    the shipped codec's is 30.5 dB on CBSD68 crops, which is why its quality 100 stops there."""
    x = pad_to_multiple(clean)
    top = tf.fill([tf.shape(x)[0]], QUALITY_MAX) if model.config.variable_rate else None
    x_hat = model.synthesize(model.analyze(x, top), top)[
        :, : tf.shape(clean)[1], : tf.shape(clean)[2]
    ]
    mse = tf.reduce_mean(tf.square(tf.clip_by_value(tf.cast(x_hat, tf.float32), 0.0, 1.0) - clean))
    return _psnr(mse)


def _psnr(mse_unit: tf.Tensor) -> tf.Tensor:
    return -10.0 * tf.math.log(tf.maximum(mse_unit, 1e-10)) / tf.math.log(10.0)


def trained_variables(model, train_only: str = "") -> list:
    """The weights a run trains: all, or (``"encoder"``, a codec) only those the encoder
    reads, so the decoder and its entropy model stay bit for bit those it started from."""
    if not train_only:
        return list(model.trainable_variables)
    if train_only != "encoder" or not isinstance(model, ScaleHyperprior):
        raise ValueError(f"--train-only {train_only}: only 'encoder', and only for a codec")
    encoder = {w.ref() for w in model.encoder_weights()}
    return [w for w in model.trainable_variables if w.ref() in encoder]


class Trainer:
    """Owns the model, optimizer, checkpoint and the distributed train step."""

    def __init__(self, args: argparse.Namespace, strategy: tf.distribute.Strategy, build_model):
        """``build_model()`` makes the model; it is called under the strategy's scope."""
        self.args = args
        self.strategy = strategy
        self.ramped_latents = None  # (first channel, steps): see ramp_in_latents
        self.policy = use_precision(args.precision)
        self.mixed = self.policy != "float32"
        # Only float16 needs loss scaling; bfloat16 has float32's exponent range.
        self.loss_scaled = self.policy == "mixed_float16"
        with strategy.scope():
            self.model = build_model()
            self.trained_variables = trained_variables(self.model, getattr(args, "train_only", ""))
            self.learning_rate = tf.Variable(args.learning_rate, trainable=False)
            optimizer = keras.optimizers.Adam(
                WarmupLearningRate(self.learning_rate, args.warmup_steps)
            )
            if self.loss_scaled:
                optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
            # The channel-context networks may train at a multiple of the rate, with their
            # own Adam (scaling their gradients would not do: Adam normalizes them away).
            scale = getattr(args, "context_learning_rate_scale", 1.0)
            context = {w.ref() for w in getattr(self.model, "context_weights", list)()}
            self.in_context_group = [w.ref() in context for w in self.trained_variables]
            self.context_optimizer = None
            if scale != 1.0 and not any(self.in_context_group):
                raise ValueError(
                    "--context-learning-rate-scale needs a codec with --slices or --checkerboard"
                )
            if scale != 1.0:
                if self.loss_scaled:
                    raise ValueError(
                        "--context-learning-rate-scale needs --precision float32 or bfloat16"
                    )
                self.context_optimizer = keras.optimizers.Adam(
                    WarmupLearningRate(self.learning_rate, args.warmup_steps, scale)
                )
            # Create Adam's moments now, so a restore fills them instead of deferring.
            optimizer.build(self._group(self.trained_variables, False))
            if self.context_optimizer:
                self.context_optimizer.build(self._group(self.trained_variables, True))
            self.optimizer = optimizer
            self.train_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False)
            self.cpu_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False)
            # Plateau detection: best eval loss so far and evaluations since.
            self.best_eval_loss = tf.Variable(np.inf, dtype=tf.float64, trainable=False)
            self.evals_since_best = tf.Variable(0, dtype=tf.int64, trainable=False)
            # The moving average of the trainable weights (--ema-decay), float32 like them;
            # every replica holds the same weights, so the first replica's update is the one.
            self.averages, self.average_steps = [], None
            if args.ema_decay:
                first = tf.VariableAggregation.ONLY_FIRST_REPLICA
                self.averages = [
                    tf.Variable(w.numpy(), trainable=False, aggregation=first)
                    for w in self.trained_variables
                ]
                self.average_steps = tf.Variable(0, dtype=tf.int64, aggregation=first)
        self.state = {
            "model": self.model,
            "optimizer": self.optimizer,
            "train_seconds": self.train_seconds,
            "cpu_seconds": self.cpu_seconds,
            "learning_rate": self.learning_rate,
            "best_eval_loss": self.best_eval_loss,
            "evals_since_best": self.evals_since_best,
        }
        if self.context_optimizer:
            self.state["context_optimizer"] = self.context_optimizer
        average = {"averages": self.averages, "average_steps": self.average_steps}
        self.checkpoint = tf.train.Checkpoint(**self.state, **(average if self.averages else {}))
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(args.model_dir, "checkpoints"), max_to_keep=3
        )
        # The state at the best eval loss so far, kept apart from the last three: a run that
        # collapses (a denoiser's ReLUs all dying: finite loss, output = input) returns to it.
        self.best = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(args.model_dir, "checkpoints", "best"), max_to_keep=1
        )

    def _group(self, items: list, context: bool) -> list:
        """The items (one per trainable weight) of the context group, or of the rest; the
        rest is everything unless the context networks have their own optimizer."""
        if not self.context_optimizer:
            return list(items) if not context else []
        return [x for x, c in zip(items, self.in_context_group, strict=True) if c == context]

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def _restore(self, path: str) -> None:
        """Restores a checkpoint, whether or not it holds a moving average: one written
        before --ema-decay was given starts the average at its weights; one written with it,
        resumed without, leaves its average unused."""
        saved = [name for name, _ in tf.train.list_variables(path)]
        saved_average = any(name.startswith("averages/") for name in saved)
        # Adam's moments are kept in the order its weights were given: a run cannot switch
        # its context networks to or from their own optimizer.
        if any(name.startswith("context_optimizer/") for name in saved) != bool(
            self.context_optimizer
        ):
            raise ValueError(
                f"{path} was trained with{'out' if not self.context_optimizer else ''} "
                "--context-learning-rate-scale; resume it as it was trained, or start a new "
                "run from its export (--init-from)"
            )
        if saved_average == bool(self.averages):
            self.checkpoint.restore(path).assert_consumed()
        elif saved_average:
            self.checkpoint.restore(path).assert_existing_objects_matched().expect_partial()
        else:
            tf.train.Checkpoint(**self.state).restore(path).assert_consumed()
            self.restart_average()

    def restart_average(self) -> None:
        """Starts the moving average (if any) at the current weights."""
        if not self.averages:
            return
        self.average_steps.assign(0)
        for average, weight in zip(self.averages, self.trained_variables, strict=True):
            average.assign(weight)
        LOG.info("moving average of the weights starts at step %d", self.step)

    @contextlib.contextmanager
    def averaged(self):
        """Within: the model holds its moving-average weights (if --ema-decay), e.g. to
        evaluate or export; after, the weights as trained again."""
        if not self.averages:
            yield
            return
        variables = self.trained_variables
        trained = [w.numpy() for w in variables]
        for weight, average in zip(variables, self.averages, strict=True):
            weight.assign(average)
        try:
            yield
        finally:
            for weight, value in zip(variables, trained, strict=True):
                weight.assign(value)

    def restore(self) -> int:
        if self.manager.latest_checkpoint:
            self._restore(self.manager.latest_checkpoint)
            LOG.info("resumed from %s at step %d", self.manager.latest_checkpoint, self.step)
            if self.args.reset_learning_rate:
                self.learning_rate.assign(self.args.reset_learning_rate)
                self.best_eval_loss.assign(np.inf)
                self.evals_since_best.assign(0)
                LOG.info("learning rate reset to %g", self.args.reset_learning_rate)
        return self.step

    def save(self) -> str:
        return self.manager.save(checkpoint_number=self.step)

    def weights_are_finite(self) -> bool:
        return all(bool(tf.reduce_all(tf.math.is_finite(w))) for w in self.model.weights)

    def roll_back(self, checkpoint: str | None = None, why: str = "non-finite loss") -> None:
        """Back to ``checkpoint`` (default the last one; all of them are finite) at a lower
        learning rate."""
        self._restore(checkpoint or self.manager.latest_checkpoint)
        lowered = float(self.learning_rate.numpy()) * self.args.plateau_factor
        if lowered < self.args.min_learning_rate:
            raise FloatingPointError(
                f"training keeps failing ({why}) at learning rate {lowered:.3g} "
                f"(below --min-learning-rate {self.args.min_learning_rate:g}); "
                f"last good checkpoint: {self.manager.latest_checkpoint}"
            )
        self.learning_rate.assign(lowered)
        LOG.warning(
            "%s: rolled back to step %d, learning rate now %.3g",
            why,
            self.step,
            lowered,
        )

    def step_or_roll_back(self, batch) -> dict[str, float] | None:
        """One training step; on a non-finite loss, a roll-back instead (returns None)."""
        metrics = {k: float(v) for k, v in self.train_step(batch).items()}
        if np.isfinite(metrics["loss"]) and np.isfinite(metrics.get("grad_norm", 0.0)):
            return metrics
        self.roll_back()
        return None

    def after_evaluation(self, eval_loss: float) -> None:
        """Lowers the learning rate after --plateau-patience evaluations without progress: an
        eval loss below the best by --plateau-threshold (relative), which becomes the best."""
        if not np.isfinite(eval_loss):
            return
        best = float(self.best_eval_loss.numpy())
        if eval_loss < best * (1.0 - self.args.plateau_threshold):
            self.best_eval_loss.assign(eval_loss)
            self.evals_since_best.assign(0)
            self.best.save(checkpoint_number=self.step)
            return
        factor = self.args.collapse_factor
        if factor and eval_loss > factor * best and self.best.latest_checkpoint:
            self.roll_back(
                self.best.latest_checkpoint,
                f"eval loss {eval_loss:.4g} is over {factor:g}x the best ({best:.4g})",
            )
            return
        self.evals_since_best.assign_add(1)
        patience = self.args.plateau_patience
        if patience and int(self.evals_since_best.numpy()) >= patience:
            lowered = max(
                float(self.learning_rate.numpy()) * self.args.plateau_factor,
                self.args.min_learning_rate,
            )
            self.learning_rate.assign(lowered)
            self.evals_since_best.assign(0)
            LOG.info("eval loss plateaued: learning rate now %.3g", lowered)

    def ramp_in_latents(self, first: int, steps: int) -> None:
        """Latent channels from ``first`` on (grown into a warm-started codec) have their bits
        weighed in the loss by step / ``steps`` until ``steps``, then fully.  Grown at zero,
        the rate silenced them before the decoder could use them (M=320: 64 of 64 still
        silent after 2,000 steps, 16 after 10,000); without the rate at first they learn
        to carry what the others cannot, and the ramp then prices it."""
        self.ramped_latents = (int(first), int(steps))

    def latent_rate_weights(self):
        """Each latent channel's weight on its bits in this step's loss (None: all 1)."""
        if not self.ramped_latents:
            return None
        first, steps = self.ramped_latents
        share = tf.minimum(1.0, tf.cast(self.optimizer.iterations, tf.float32) / steps)
        new = self.model.config.latent_filters - first
        return tf.concat([tf.ones([first]), tf.fill([new], share)], axis=0)

    def training_qualities(self, batch):
        """A variable-rate codec's qualities for one training batch (--quality-per-batch,
        --quality-range, --quality-power); None for other models, which take none."""
        model = self.model
        if not (isinstance(model, ScaleHyperprior) and model.config.variable_rate):
            return None
        low, high = self.args.quality_range
        return training_qualities(
            batch, self.args.quality_per_batch, low, high, self.args.quality_power
        )

    @tf.function
    def train_step(self, batch):
        def replica_step(noisy, clean):
            with tf.GradientTape() as tape:
                metrics = task_losses(
                    self.model,
                    noisy,
                    clean,
                    training=True,
                    quality=self.training_qualities(tf.shape(clean)[0]),
                    balance_levels=self.args.balance_levels,
                    rate_weights=self.latent_rate_weights(),
                )
                loss = metrics["loss"] / self.strategy.num_replicas_in_sync
                if self.loss_scaled:
                    loss = self.optimizer.get_scaled_loss(loss)
            variables = self.trained_variables
            gradients = tape.gradient(loss, variables)
            if self.loss_scaled:
                # The loss-scale optimizer skips steps with non-finite gradients itself.
                gradients = self.optimizer.get_unscaled_gradients(gradients)
            else:
                norm = tf.linalg.global_norm(gradients)
                metrics["grad_norm"] = norm
                if self.args.clip_norm:
                    gradients, _ = tf.clip_by_global_norm(gradients, self.args.clip_norm, norm)
                # A non-finite gradient must not reach the weights (Adam's momentum still
                # moves them a little); the caller then rolls the whole step back.
                finite = tf.math.is_finite(norm) & tf.math.is_finite(metrics["loss"])
                gradients = [tf.where(finite, g, tf.zeros_like(g)) for g in gradients]
            pairs = list(zip(gradients, variables, strict=True))
            if self.context_optimizer:
                self.context_optimizer.apply_gradients(self._group(pairs, True))
                self.optimizer.apply_gradients(self._group(pairs, False))
            else:
                self.optimizer.apply_gradients(pairs)
            if self.averages:
                self.average_steps.assign_add(1)
                # Warm-up as tf.train.ExponentialMovingAverage's num_updates: the first
                # steps' weights do not linger in the average of a fresh or restarted one.
                steps = tf.cast(self.average_steps, tf.float32)
                decay = tf.minimum(self.args.ema_decay, (1.0 + steps) / (10.0 + steps))
                for average, weight in zip(self.averages, variables, strict=True):
                    average.assign(decay * average + (1.0 - decay) * tf.cast(weight, tf.float32))
            return metrics

        per_replica = self.strategy.run(replica_step, args=batch)
        return {
            name: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
            for name, value in per_replica.items()
        }

    def eval_qualities(self) -> list[float]:
        """A variable-rate codec is evaluated at each of its levels on every eval batch, so the
        eval loss (and the plateau rule) sees every rate and the per-level figures form a
        rate-distortion curve on the same patches (one level per batch, as before 2026-12-05,
        made the curve non-monotonic: each level saw other patches)."""
        model = self.model
        if not (isinstance(model, ScaleHyperprior) and model.config.variable_rate):
            return []
        return list(np.linspace(QUALITY_MIN, QUALITY_MAX, len(model.config.lmbdas)))

    def evaluate(self, dataset: tf.data.Dataset, batches: int, model=None) -> dict[str, float]:
        """Mean metrics over ``batches`` eval batches; a variable-rate codec's also per level
        (``psnr_q0``, ``bpp_q0``, ...: its rate-distortion curve on the eval split).
        ``model``: another of the same architecture (e.g. the float32 one an export serves)."""
        model = self.model if model is None else model
        qualities = self.eval_qualities()
        totals: dict[str, float] = {}
        counts: dict[str, int] = {}

        def add(name: str, value: float) -> None:
            totals[name] = totals.get(name, 0.0) + value
            counts[name] = counts.get(name, 0) + 1

        usage = 0.0
        for noisy, clean in dataset.take(batches):
            for level in qualities or [None]:
                quality = None if level is None else tf.fill([tf.shape(clean)[0]], float(level))
                metrics = task_losses(model, noisy, clean, training=False, quality=quality)
                for name, value in metrics.items():
                    add(name, float(value))
                    if quality is not None and name in ("psnr", "bpp"):
                        add(f"{name}_q{level:g}", float(value))
            if isinstance(model, ScaleHyperprior):
                add("psnr_unquantized", float(transform_ceiling(model, clean)))
                # summed per batch: a channel is dead if its code is 0 on every eval patch
                usage = usage + latent_usage(model, [(noisy, clean)])
        results = {name: total / counts[name] for name, total in totals.items()}
        if isinstance(model, ScaleHyperprior):
            results["dead_latents"] = int((usage == 0).sum())  # at the top rate (issue 30)
            if model.rate_shapes:  # its bits are the cheapest coding shape's, not the Gaussian's
                results["rate_shapes"] = 1.0
        return results
