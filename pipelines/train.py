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
import contextlib
import json
import logging
import os
import shlex
import signal
import sys
import threading
import time
from dataclasses import replace

import numpy as np
import tensorflow as tf
import tf_keras as keras

from models import registry
from models.codec import QUALITY_MAX, QUALITY_MIN, CodecConfig, ScaleHyperprior, pad_to_multiple
from models.denoiser import DenoiserConfig, DnCNN
from models.export import CODEC, DENOISER, export_model, load_model_card
from models.layers import GDN
from pipelines.options import stage_parser
from transforms import features, noise, records, statistics

LOG = logging.getLogger(__name__)
TASKS = {"codec": CODEC, "denoise": DENOISER}


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


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("latentpress train", "Train the codec or the denoiser, then export it.")
    parser.add_argument("--data", required=True, help="Output directory of the prepare stage.")
    parser.add_argument(
        "--model-dir", required=True, help="Checkpoints, TensorBoard logs and the export."
    )
    parser.add_argument("--task", choices=sorted(TASKS), required=True, help="What to train.")
    parser.add_argument("--steps", type=int, default=20000, help="Total optimizer steps.")
    parser.add_argument("--batch-size", type=int, default=8, help="Global batch size.")
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=1e-3,
        help="Adam learning rate at the start of a run (a resumed run keeps its own, which "
        "plateaus and non-finite losses may have lowered).",
    )
    parser.add_argument(
        "--warmup-steps",
        type=int,
        default=200,
        help="Linear learning-rate warm-up over the first N steps of a fresh run.",
    )
    parser.add_argument(
        "--clip-norm",
        type=float,
        default=1.0,
        help="Clip each step's gradients to this global norm (0: no clipping).",
    )
    parser.add_argument(
        "--plateau-patience",
        type=int,
        default=6,
        help="Multiply the learning rate by --plateau-factor after N evaluations without a "
        "better eval loss (0: never).  Needs no final step count, so a resumed, extended "
        "run finds its learning rate where the curve left it.",
    )
    parser.add_argument("--plateau-factor", type=float, default=0.5, help="See above.")
    parser.add_argument(
        "--ema-decay",
        type=float,
        default=0.0,
        help="Evaluate and export an exponential moving average of the weights with this "
        "decay (e.g. 0.999: about the last 1,000 steps), which smooths out the noise of the "
        "last steps; 0: the weights as trained.  May be switched on when resuming.",
    )
    parser.add_argument(
        "--min-learning-rate",
        type=float,
        default=1e-5,
        help="Floor for plateau cuts; a run that keeps turning non-finite below it stops.",
    )
    parser.add_argument(
        "--reset-learning-rate",
        type=float,
        default=None,
        help="On resuming, set the learning rate to this and forget the plateau state (best "
        "eval loss, evaluations since): for a run whose eval changed or whose rate was cut "
        "too early.  No effect on a fresh run (use --learning-rate).",
    )
    parser.add_argument(
        "--init-from",
        default=None,
        help="Warm start: copy the weights of a shipped model (name) or an exported model "
        "directory into a fresh run (the optimizer starts anew).  Ignored when the run "
        "resumes from its own checkpoints.  The model card adds up steps and CPU hours.",
    )
    parser.add_argument(
        "--train-noise",
        default=None,
        help="Denoiser: draw fresh noise on the clean patches at every step from this noise "
        "SPEC (e.g. gaussian:0-55), seeded from (--seed, example index); the stored noisy "
        "patches remain the eval set.  Default: train on the stored noisy patches.",
    )
    parser.add_argument(
        "--train-float-noise",
        type=float,
        default=0.0,
        help="Denoiser, with --train-noise: the share (0-1) of training patches whose noise is "
        "left unrounded and unclipped, the float noise published results use (evaluate "
        "--float-noise); the rest is rounded to 8 bits, as saved photographs are.",
    )
    parser.add_argument(
        "--synthesis-quantizer",
        choices=["straight-through", "noise"],
        default="straight-through",
        help="Codec training: the synthesis decodes rounded latents with a straight-through "
        "gradient, or the noisy latents the rate is measured on.",
    )
    parser.add_argument(
        "--lmbda",
        type=float,
        default=0.01,
        help="Codec rate-distortion trade-off: loss = bpp + lmbda * MSE (8-bit scale).",
    )
    parser.add_argument(
        "--lmbdas",
        default=None,
        help="Variable-rate codec: comma-separated trade-offs of its rate levels, lowest "
        "first (e.g. 0.0025,0.005,0.01,0.02,0.04); --quality 0-100 then spans them.  "
        "Training draws a quality per image.  Overrides --lmbda.",
    )
    parser.add_argument(
        "--num-filters", type=int, default=64, help="Codec N (analysis and synthesis)."
    )
    parser.add_argument("--latent-filters", type=int, default=96, help="Codec M.")
    parser.add_argument(
        "--mean-scale",
        action="store_true",
        help="The codec's hyperprior predicts the latents' means too (Minnen et al. 2018); "
        "with --init-from a scale-only codec, the means start at zero.",
    )
    parser.add_argument(
        "--revive-latents",
        action="store_true",
        help="With --init-from a codec: latent channels that code nothing (0 on every "
        "training patch at the top rate) are revived by splitting the busiest live ones "
        "into them (a copy of the encoder's filter, each read with half the decoder's "
        "weights: nearly the same image, more bits at first, and a gradient through both).",
    )
    parser.add_argument(
        "--slices",
        type=int,
        default=0,
        help="Channel context (Minnen & Singh 2020): code the latents in this many slices, "
        "each slice's means and scales refined from the slices before it, plus a latent "
        "residual prediction.  Needs --mean-scale; 0: off.  With --init-from a codec "
        "without slices, the context starts refining nothing (same code, same image).",
    )
    parser.add_argument(
        "--hyper-filters",
        type=int,
        default=0,
        help="Channels of the codec's hyper transforms and side information (default: N).",
    )
    parser.add_argument("--depth", type=int, default=10, help="Denoiser convolution layers.")
    parser.add_argument("--filters", type=int, default=48, help="Denoiser channels.")
    parser.add_argument(
        "--unshuffle",
        type=int,
        default=1,
        help="Denoiser: pixel-unshuffle factor (2: FFDNet-style, at half resolution).",
    )
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
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="TensorFlow threads for the model's ops (0: all cores).  One process per core "
        "with --threads 1 trains more steps per CPU-second than one process on all.",
    )
    parser.add_argument(
        "--precision",
        choices=["auto", *PRECISIONS],
        default="auto",
        help="Compute precision: auto (mixed float16 on GPU, float32 on CPU), float32, or "
        "mixed bfloat16/float16 (float32 variables; exports serve in float32).  bfloat16 "
        "trains ~1.9x faster on CPUs with AVX512_BF16 or AMX.",
    )
    parser.add_argument("--no-progress", action="store_true", help="Log lines, not a bar.")
    parser.add_argument(
        "--export-only",
        action="store_true",
        help="Export the latest checkpoint without training (e.g. while the run goes on in "
        "another process, to evaluate or ship it).",
    )
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


def fresh_noise(spec_text: str, seed: int, float_share: float = 0.0):
    """A tf.data map (index, clean uint8) -> noisy float32 (0-255 scale) from the noise SPEC.

    Each example's noise is seeded from (seed, index), so a run is reproducible and a resumed
    run (which starts counting at the examples already used) does not repeat earlier draws.
    A ``float_share`` of the examples keep their noise unrounded and unclipped.
    """
    spec = noise.parse_spec(spec_text)

    def draw(index, clean):
        rng = np.random.default_rng([seed, int(index)])
        # no extra draw when every patch is rounded: such runs keep their noise stream
        rounded = float_share <= 0 or rng.random() >= float_share
        return spec.apply(clean, rng, rounded=rounded)[0].astype(np.float32)

    def add_noise(index, clean):
        noisy = tf.numpy_function(draw, [index, clean], tf.float32, stateful=False)
        return tf.ensure_shape(noisy, clean.shape)

    return add_noise


def make_dataset(
    data_dir: str,
    split: str,
    batch_size: int,
    training: bool,
    crop: int = 0,
    seed: int = 0,
    train_noise: str | None = None,
    first_example: int = 0,
    float_noise_share: float = 0.0,
) -> tf.data.Dataset:
    """(noisy, clean) float [0, 1] batches: interleaved reads, shuffle, parallel map, prefetch.

    With ``train_noise`` (training only) the stored noisy patch is replaced by fresh noise on
    the augmented clean patch; ``first_example`` numbers the examples for its seeds.
    """
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
        return example[features.NOISY], example[features.CLEAN]

    dataset = dataset.map(to_pair, num_parallel_calls=tf.data.AUTOTUNE)
    if training:
        dataset = dataset.map(lambda n, c: _augment((n, c), crop), tf.data.AUTOTUNE)
        if train_noise:
            add_noise = fresh_noise(train_noise, seed, float_noise_share)
            dataset = dataset.enumerate(first_example).map(
                lambda i, pair: (add_noise(i, pair[1]), pair[1]), tf.data.AUTOTUNE
            )

    def to_unit(noisy, clean):
        return tf.cast(noisy, tf.float32) / 255.0, tf.cast(clean, tf.float32) / 255.0

    dataset = dataset.map(to_unit, num_parallel_calls=tf.data.AUTOTUNE)
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


PRECISIONS = {
    "float32": "float32",
    "bfloat16": "mixed_bfloat16",
    "float16": "mixed_float16",
}


def use_precision(precision: str = "auto") -> str:
    """Sets and returns the Keras dtype policy of ``--precision``.

    ``auto``: float16 compute on GPU (its tensor cores), float32 on CPU.  ``bfloat16`` pays on
    CPUs with native bfloat16 (AVX512_BF16, AMX): measured ~1.9x the steps per CPU-second of
    float32 for the denoiser on such a CPU.  Variables stay float32 under every policy, so a
    run may change precision when it resumes, and exports always serve in float32.
    """
    if precision == "auto":
        precision = "float16" if tf.config.list_physical_devices("GPU") else "float32"
    policy = PRECISIONS[precision]
    keras.mixed_precision.set_global_policy(policy)
    return policy


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
        )
        model = ScaleHyperprior(config)
        model.synthesis_quantizer = args.synthesis_quantizer
    else:
        config = DenoiserConfig(
            args.depth,
            args.filters,
            tuple(stats[statistics.CHANNEL_MEAN]),
            tuple(stats[statistics.CHANNEL_STD]),
            args.unshuffle,
        )
        model = DnCNN(config)
    model.build_for_images()
    return model


def load_exported_weights(model, name_or_path: str) -> dict:
    """Copies an exported model's weights into ``model`` (same architecture); returns its card.

    The exported tf.Module holds the Keras model as ``model``, so its variables read straight
    into a checkpoint of the same structure.  Every weight of ``model`` must be found, except
    the gains of a variable-rate codec started from a one-rate codec (they keep their
    initialization, which makes the middle level the source model).  A larger model than the
    source (a codec with more N, M or hyper channels; a deeper or wider denoiser) starts as
    the source grown (``widen_codec``, ``grow_denoiser``).
    """
    model_dir = registry.resolve(name_or_path)
    card = load_model_card(model_dir)
    source_config = card.get("config", {})
    source = model
    if isinstance(model, ScaleHyperprior):
        sizes = {
            "num_filters": int(source_config.get("num_filters", model.config.num_filters)),
            "latent_filters": int(source_config.get("latent_filters", model.config.latent_filters)),
        }
        # a card without hyper_filters (older than it) had hyper transforms of N channels
        sizes["hyper_filters"] = int(source_config.get("hyper_filters") or sizes["num_filters"])
        sizes["mean_scale"] = bool(source_config.get("mean_scale", False))
        sizes["slices"] = int(source_config.get("slices") or 0)
        source_lmbdas = tuple(float(v) for v in source_config.get("lmbdas") or ())
        new_levels = (
            len(source_lmbdas) > 1
            and model.config.variable_rate
            and source_lmbdas != tuple(model.config.lmbdas)
        )
        if sizes["slices"] not in (0, model.config.slices):
            raise ValueError(
                f"--init-from {name_or_path}: its latents are coded in {sizes['slices']} "
                f"slices, this codec's in {model.config.slices}"
            )
        target = replace(model.config, hyper_filters=model.config.side_filters)
        if any(size > getattr(target, name) for name, size in sizes.items()):
            raise ValueError(
                f"--init-from {name_or_path}: not the same architecture and size, and larger "
                f"than this codec ({sizes}); a codec can only grow"
            )
        smaller = replace(target, **sizes)
        if new_levels:
            smaller = replace(smaller, lmbdas=source_lmbdas)
        if smaller != target:
            source = ScaleHyperprior(smaller)
            source.build_for_images()
    elif isinstance(model, DnCNN) and (
        source_config.get("depth", model.config.depth) < model.config.depth
        or source_config.get("filters", model.config.filters) < model.config.filters
    ):
        source = DnCNN(
            replace(
                model.config,
                depth=int(source_config["depth"]),
                filters=int(source_config["filters"]),
            )
        )
        source.build_for_images()
    _read_exported_weights(source, model_dir, name_or_path)
    if source is model:
        return card
    if isinstance(model, ScaleHyperprior):
        widen_codec(source, model)
        LOG.info("widened the codec from %s to %s", _codec_size(source), _codec_size(model))
        if new_levels:
            LOG.info("rate levels %s -> %s", source_lmbdas, model.config.lmbdas)
    else:
        grow_denoiser(source, model)
        LOG.info(
            "grew the denoiser from %dx%d to %dx%d",
            source.config.depth,
            source.config.filters,
            model.config.depth,
            model.config.filters,
        )
    return card


def _codec_size(codec: ScaleHyperprior) -> str:
    config = codec.config
    size = f"N={config.num_filters} M={config.latent_filters} hyper={config.side_filters}"
    size += " mean-scale" if config.mean_scale else ""
    return size + (f" {config.slices} slices" if config.slices else "")


def grow_denoiser(source: DnCNN, bigger: DnCNN) -> None:
    """Copies ``source`` into ``bigger`` (more layers and/or channels) so that ``bigger``
    denoises exactly as ``source`` does at first (Net2Net-style growth, Chen et al. 2016).

    Wider: the new channels of each layer keep their fresh initialization (features to
    learn) and the next layer starts blind to them (zero weights from them).  Deeper: the new
    layers go before the residual layer as identity convolutions; their inputs come out of a
    ReLU, so ReLU(identity(x)) = x.
    """
    if source.config.unshuffle != bigger.config.unshuffle:
        raise ValueError("--init-from: a denoiser grows in depth and width, not in unshuffle")
    old_layers = source.noise_estimator.layers
    new_layers = bigger.noise_estimator.layers
    inserted = len(new_layers) - len(old_layers)
    pairs = list(zip(old_layers[:-1], new_layers[: len(old_layers) - 1], strict=True))
    pairs.append((old_layers[-1], new_layers[-1]))  # the residual layer
    for old, new in pairs:
        for old_weight, new_weight, input_axis in zip(
            old.weights, new.weights, (2, None), strict=True
        ):
            new_weight.assign(_embed(old_weight.numpy(), new_weight.numpy(), input_axis))
    for layer in new_layers[len(old_layers) - 1 : len(old_layers) - 1 + inserted]:
        kernel, bias = (np.zeros_like(w.numpy()) for w in layer.weights)
        kernel[1, 1] = np.eye(kernel.shape[2], kernel.shape[3])
        layer.set_weights([kernel, bias])


def widen_codec(source: ScaleHyperprior, wider: ScaleHyperprior) -> None:
    """Copies ``source`` into ``wider`` (more channels N, M or hyper), so ``wider`` decodes the
    same image from the same code at first (Net2Net-style growth, Chen et al. 2016).

    A new channel must not change what the old ones compute, and must still learn:
    - new channels going into a GDN start at zero (zero kernel and bias: the GDN couples
      channels, so a non-zero one would change the others' normalization); the layer after
      the GDN starts with fresh weights from them, which is what gives them a gradient;
    - new latents of y start at zero (``start_latents_at_zero``): read by fresh synthesis
      weights, which is their gradient, and coded at the smallest scale (no bits).  Fresh
      latents read by a blind synthesis (the rule before) never learn: the rate drives them
      to zero before the synthesis can use them, and a latent that is always 0 gives its
      synthesis weights no gradient (measured: 96 latents added so stayed 0 on every image);
    - every other new channel (ReLU features of the hyper transforms) keeps its fresh
      initialization, and the layer reading it starts blind to it (zero weights from it);
      the new latents' gains start at each level's mean gain.
    Only the side information's rate moves: new channels of z are coded by a fresh prior.
    A scale-only source grown into a mean-scale codec predicts means of zero at first; one
    without channel slices grown into one with them codes the same integers at first.
    """
    hyper_output = wider.hyper_synthesis_transform.layers[-1]
    rules = {}  # id(weight) -> (output axis to zero or None, input axis to blind or None)
    for transform in (
        wider.analysis_transform,
        wider.synthesis_transform,
        wider.hyper_analysis_transform,
        wider.hyper_synthesis_transform,
    ):
        layers = transform.layers
        for i, layer in enumerate(layers):
            if not isinstance(layer, keras.layers.Conv2D):
                continue
            # kernels are [k, k, in, out]; a transposed convolution's [k, k, out, in]
            transposed = isinstance(layer, keras.layers.Conv2DTranspose)
            input_axis, output_axis = (3, 2) if transposed else (2, 3)
            feeds_gdn = i + 1 < len(layers) and isinstance(layers[i + 1], GDN)
            reads_gdn = i > 0 and isinstance(layers[i - 1], GDN)
            rules[id(layer.kernel)] = (
                output_axis if feeds_gdn else None,
                None if reads_gdn else input_axis,
            )
            rules[id(layer.bias)] = (0 if feeds_gdn else None, None)
    # A source without channel context leaves the new context networks as initialized (their
    # last layers zero: they refine nothing yet).
    context = {id(w) for w in wider.context_weights()} if not source.config.slices else set()
    wider_weights = [w for w in wider.weights if id(w) not in context]
    for old, new in zip(source.weights, wider_weights, strict=True):
        other_levels = "gain" in new.name and source.config.lmbdas != wider.config.lmbdas
        if old.shape == new.shape and not other_levels:
            new.assign(old)
            continue
        zero_axis, blind_axis = rules.get(id(new), (None, None))
        if wider.config.mean_scale and any(new is w for w in hyper_output.weights):
            new.assign(_embed_scales_and_means(source, old.numpy(), new.numpy(), blind_axis))
            continue
        values = _embed(old.numpy(), new.numpy(), blind_axis)
        if zero_axis is not None:
            added = [slice(None)] * values.ndim
            added[zero_axis] = slice(old.shape[zero_axis], None)
            values[tuple(added)] = 0.0
        if "gain" in new.name:
            old_gains = old.numpy()
            if other_levels:  # an inverse gain is the negative log of a gain
                sign = -1.0 if "inverse" in new.name else 1.0
                levels = (source.config.lmbdas, wider.config.lmbdas)
                old_gains = sign * level_gains(sign * old_gains, *levels)
            values = new.numpy().copy()
            values[:, : old_gains.shape[1]] = old_gains
            values[:, old_gains.shape[1] :] = old_gains.mean(axis=1, keepdims=True)
        new.assign(values)
    start_latents_at_zero(wider, range(source.config.latent_filters, wider.config.latent_filters))


def level_gains(log_gains: np.ndarray, lmbdas, new_lmbdas) -> np.ndarray:
    """Log gains [levels, M] of a codec's rate levels ``lmbdas`` carried to ``new_lmbdas``:
    a level it had keeps its row, one between two is interpolated in log lambda, one beyond
    the ends continues from the nearest end at the high-rate slope (quantization step
    ~ lmbda^-1/2, so log gain + 0.5 * log-lambda distance; inverse gains take the negative)."""
    log_lmbdas = np.log(np.asarray(lmbdas, np.float64))
    rows = []
    for log_lmbda in np.log(np.asarray(new_lmbdas, np.float64)):
        if log_lmbda <= log_lmbdas[0] or log_lmbda >= log_lmbdas[-1]:
            end = 0 if log_lmbda <= log_lmbdas[0] else -1
            rows.append(log_gains[end] + 0.5 * (log_lmbda - log_lmbdas[end]))
            continue
        upper = int(np.searchsorted(log_lmbdas, log_lmbda))
        weight = (log_lmbda - log_lmbdas[upper - 1]) / (log_lmbdas[upper] - log_lmbdas[upper - 1])
        rows.append((1 - weight) * log_gains[upper - 1] + weight * log_gains[upper])
    return np.stack(rows).astype(log_gains.dtype)


def start_latents_at_zero(model: ScaleHyperprior, channels) -> None:
    """Latent channels ``channels`` of y start as unused ones that can learn: g_a outputs 0
    for them (so their code is 0 and the decoded image does not change), h_s gives them the
    smallest scale and a mean of 0 (so they cost no bits), and g_s reads them with fresh
    weights (so the distortion's gradient reaches g_a through them)."""
    channels = np.asarray(list(channels), dtype=int)
    if not channels.size:
        return
    latents = model.config.latent_filters
    producer = model.analysis_transform.layers[-1]  # kernel [k, k, N, M]
    _set_slices(producer.kernel, (..., channels), 0.0)
    _set_slices(producer.bias, (channels,), 0.0)
    reader = model.synthesis_transform.layers[0]  # transposed: kernel [k, k, N, M]
    fresh = keras.initializers.GlorotUniform()(reader.kernel.shape).numpy()  # as Keras starts it
    _set_slices(reader.kernel, (..., channels), fresh[..., channels])
    outputs = [channels, channels + latents] if model.config.mean_scale else [channels]
    hyper_output = model.hyper_synthesis_transform.layers[-1]  # scale positions, then means
    for columns in outputs:
        _set_slices(hyper_output.kernel, (..., columns), 0.0)
        _set_slices(hyper_output.bias, (columns,), 0.0)


def _set_slices(weight: tf.Variable, index: tuple, values) -> None:
    array = weight.numpy()
    array[index] = values
    weight.assign(array)


def latent_usage(model: ScaleHyperprior, batches) -> np.ndarray:
    """Mean |code| of each latent channel over ``batches`` at the top rate (0: the channel
    carries nothing at any rate, since a lower rate quantizes more coarsely)."""
    total = np.zeros(model.config.latent_filters, np.float64)
    count = 0
    for _, clean in batches:
        x = pad_to_multiple(clean)
        quality = tf.fill([tf.shape(x)[0]], QUALITY_MAX) if model.config.variable_rate else None
        y = model.analyze(x, quality)
        z_hat = model.quantize_z(model.hyper_analysis_transform(y))
        mean = model.means(z_hat)[:, : tf.shape(y)[1], : tf.shape(y)[2]]
        code = model.quantize_y(y - mean)
        total += np.asarray(tf.reduce_sum(tf.abs(code), axis=[0, 1, 2]), np.float64)
        count += int(np.prod(code.shape[:3]))
    return total / max(count, 1)


def dead_latents(model: ScaleHyperprior, batches) -> np.ndarray:
    """Latent channels whose code is 0 on every image of ``batches`` at the top rate."""
    return np.flatnonzero(latent_usage(model, batches) == 0)


def split_latents(model: ScaleHyperprior, usage: np.ndarray, seed: int = 0) -> list[tuple]:
    """Revives the dead latents (``usage`` 0) by splitting the busiest live ones into them
    (Net2Net, Chen et al. 2016): dead channel d becomes a copy of live channel l (g_a's
    filter with 1% noise, l's gains, h_s's scale and mean), and g_s reads each of the two
    with half of l's weights, so the decoded image stays nearly the same.  Unlike a channel
    restarted at zero, both are non-zero from the first step, so g_s and g_a get a gradient
    through each (restarted channels measured: 96 stayed 0 for 15,000 steps); the rate then
    pushes the pair apart or one of them back to 0.  h_a starts blind to d (same z).
    Returns the (dead, live) pairs."""
    if model.config.slices:
        raise ValueError("--revive-latents: a codec with channel slices is not supported")
    dead = np.flatnonzero(usage == 0)
    live = np.argsort(-usage, kind="stable")[: len(dead)]
    live = live[usage[live] > 0]
    dead = dead[: len(live)]
    if not dead.size:
        return []
    rng = np.random.default_rng(seed)
    producer = model.analysis_transform.layers[-1]  # kernel [k, k, N, M]
    kernel = producer.kernel.numpy()
    noise = rng.normal(0.0, 0.01, kernel[..., live].shape) * np.abs(kernel[..., live]).mean()
    _set_slices(producer.kernel, (..., dead), kernel[..., live] + noise)
    _set_slices(producer.bias, (dead,), producer.bias.numpy()[live])
    reader = model.synthesis_transform.layers[0]  # transposed: kernel [k, k, N, M]
    halves = reader.kernel.numpy()[..., live] / 2.0
    _set_slices(reader.kernel, (..., live), halves)
    _set_slices(reader.kernel, (..., dead), halves)
    if model.config.variable_rate:
        for gains in (model.log_gain, model.log_inverse_gain):
            _set_slices(gains, (slice(None), dead), gains.numpy()[:, live])
    latents = model.config.latent_filters
    hyper_output = model.hyper_synthesis_transform.layers[-1]  # scale positions, then means
    offsets = [0, latents] if model.config.mean_scale else [0]
    for offset in offsets:
        for weight, index in ((hyper_output.kernel, ...), (hyper_output.bias, None)):
            values = weight.numpy()
            if index is None:
                values[dead + offset] = values[live + offset]
            else:
                values[..., dead + offset] = values[..., live + offset]
            weight.assign(values)
    hyper_input = model.hyper_analysis_transform.layers[1]  # after |y|: kernel [k, k, M, S]
    _set_slices(hyper_input.kernel, (slice(None), slice(None), dead), 0.0)
    return [(int(d), int(source)) for d, source in zip(dead, live, strict=True)]


def _embed_scales_and_means(source, old, new, input_axis):
    """The last layer of a mean-scale h_s (outputs: M scale positions, then M means) from
    ``source``'s: its scales and means each go to their own half; means it lacks are 0."""
    old_latents = source.config.latent_filters
    new_latents = new.shape[-1] // 2
    scales = _embed(old[..., :old_latents], new[..., :new_latents], input_axis)
    means = np.zeros_like(new[..., new_latents:])
    if source.config.mean_scale:
        means = _embed(old[..., old_latents:], means, input_axis)
    return np.concatenate([scales, means], axis=-1)


def _embed(old: np.ndarray, new: np.ndarray, input_axis: int | None) -> np.ndarray:
    """``new`` (a larger weight) with ``old`` in its leading corner and, along ``input_axis``,
    zero weights from the input channels ``old`` lacks, so the layer starts blind to them."""
    values = new.copy()
    values[tuple(slice(0, size) for size in old.shape)] = old
    if input_axis is not None and new.shape[input_axis] > old.shape[input_axis]:
        added = [slice(None)] * new.ndim
        added[input_axis] = slice(old.shape[input_axis], None)
        values[tuple(added)] = 0.0
    return values


def _read_exported_weights(model, model_dir: str, name_or_path: str) -> None:
    variables = os.path.join(model_dir, "saved_model", "variables", "variables")
    initial = {id(w): w.numpy() for w in model.weights}
    for weight in model.weights:  # whatever the source lacks stays NaN and is caught below
        weight.assign(tf.fill(weight.shape, np.nan))
    try:
        tf.train.Checkpoint(model=model).read(variables).expect_partial()
    except (ValueError, tf.errors.InvalidArgumentError) as e:
        raise ValueError(
            f"--init-from {name_or_path}: weights of another shape there (is it the same "
            f"architecture and size?): {str(e).splitlines()[0]}"
        ) from e
    missing = []
    for weight in model.weights:
        if not np.isnan(weight.numpy()).any():
            continue
        weight.assign(initial[id(weight)])
        if "gain" not in weight.name:
            missing.append(weight.name)
    if missing:
        raise ValueError(
            f"--init-from {name_or_path}: weights not found there: {', '.join(missing[:5])} "
            "(is it the same architecture and size?)"
        )


class WarmupLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """A learning rate held in a variable (plateaus and roll-backs lower it, checkpoints keep
    it), ramped up linearly over the first ``warmup_steps`` steps."""

    def __init__(self, base: tf.Variable, warmup_steps: int):
        self.base = base
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        ramp = tf.minimum(1.0, (tf.cast(step, tf.float32) + 1.0) / max(self.warmup_steps, 1))
        return self.base * ramp

    def get_config(self):
        return {"warmup_steps": self.warmup_steps}


def task_losses(model, noisy, clean, training: bool, quality=None) -> dict[str, tf.Tensor]:
    """The objective and the metrics of one batch (codec ignores ``noisy``; ``quality``, one
    per image, is a variable-rate codec's rate)."""
    if isinstance(model, ScaleHyperprior):
        loss, bpp, mse, _ = model(clean, training=training, quality=quality)
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


class Trainer:
    """Owns the model, optimizer, checkpoint and the distributed train step."""

    def __init__(self, args: argparse.Namespace, strategy: tf.distribute.Strategy, stats: dict):
        self.args = args
        self.strategy = strategy
        self.policy = use_precision(args.precision)
        self.mixed = self.policy != "float32"
        # Only float16 needs loss scaling; bfloat16 has float32's exponent range.
        self.loss_scaled = self.policy == "mixed_float16"
        with strategy.scope():
            self.model = build_model(args, stats)
            self.learning_rate = tf.Variable(args.learning_rate, trainable=False)
            optimizer = keras.optimizers.Adam(
                WarmupLearningRate(self.learning_rate, args.warmup_steps)
            )
            if self.loss_scaled:
                optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
            # Create Adam's moments now, so a restore fills them instead of deferring.
            optimizer.build(self.model.trainable_variables)
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
                    for w in self.model.trainable_variables
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
        average = {"averages": self.averages, "average_steps": self.average_steps}
        self.checkpoint = tf.train.Checkpoint(**self.state, **(average if self.averages else {}))
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(args.model_dir, "checkpoints"), max_to_keep=3
        )

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def _restore(self, path: str) -> None:
        """Restores a checkpoint, whether or not it holds a moving average: one written
        before --ema-decay was given starts the average at its weights; one written with it,
        resumed without, leaves its average unused."""
        saved_average = any(
            name.startswith("averages/") for name, _ in tf.train.list_variables(path)
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
        for average, weight in zip(self.averages, self.model.trainable_variables, strict=True):
            average.assign(weight)
        LOG.info("moving average of the weights starts at step %d", self.step)

    @contextlib.contextmanager
    def averaged(self):
        """Within: the model holds its moving-average weights (if --ema-decay), e.g. to
        evaluate or export; after, the weights as trained again."""
        if not self.averages:
            yield
            return
        variables = self.model.trainable_variables
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

    def roll_back(self) -> None:
        """Back to the last checkpoint (all of it are finite) at a lower learning rate."""
        self._restore(self.manager.latest_checkpoint)
        lowered = float(self.learning_rate.numpy()) * self.args.plateau_factor
        if lowered < self.args.min_learning_rate:
            raise FloatingPointError(
                f"training keeps turning non-finite at learning rate {lowered:.3g} "
                f"(below --min-learning-rate {self.args.min_learning_rate:g}); "
                f"last good checkpoint: {self.manager.latest_checkpoint}"
            )
        self.learning_rate.assign(lowered)
        LOG.warning(
            "non-finite loss: rolled back to step %d, learning rate now %.3g",
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
        """Lowers the learning rate after --plateau-patience evaluations without progress."""
        if not np.isfinite(eval_loss):
            return
        if eval_loss < float(self.best_eval_loss.numpy()):
            self.best_eval_loss.assign(eval_loss)
            self.evals_since_best.assign(0)
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

    @tf.function
    def train_step(self, batch):
        def replica_step(noisy, clean):
            with tf.GradientTape() as tape:
                metrics = task_losses(self.model, noisy, clean, training=True)
                loss = metrics["loss"] / self.strategy.num_replicas_in_sync
                if self.loss_scaled:
                    loss = self.optimizer.get_scaled_loss(loss)
            variables = self.model.trainable_variables
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
            self.optimizer.apply_gradients(zip(gradients, variables, strict=True))
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

    def evaluate(self, dataset: tf.data.Dataset, batches: int) -> dict[str, float]:
        """Mean metrics over ``batches`` eval batches; a variable-rate codec's also per level
        (``psnr_q0``, ``bpp_q0``, ...: its rate-distortion curve on the eval split)."""
        qualities = self.eval_qualities()
        totals: dict[str, float] = {}
        counts: dict[str, int] = {}

        def add(name: str, value: float) -> None:
            totals[name] = totals.get(name, 0.0) + value
            counts[name] = counts.get(name, 0) + 1

        for noisy, clean in dataset.take(batches):
            for level in qualities or [None]:
                quality = None if level is None else tf.fill([tf.shape(clean)[0]], float(level))
                metrics = task_losses(self.model, noisy, clean, training=False, quality=quality)
                for name, value in metrics.items():
                    add(name, float(value))
                    if quality is not None and name in ("psnr", "bpp"):
                        add(f"{name}_q{level:g}", float(value))
            if isinstance(self.model, ScaleHyperprior):
                add("psnr_unquantized", float(transform_ceiling(self.model, clean)))
        return {name: total / counts[name] for name, total in totals.items()}


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
        trainer.restart_average()
        lineage = {
            "init_from": args.init_from,
            "init_fingerprint": source.get("fingerprint"),
            "steps": source.get("cumulative_steps", source.get("steps", 0)),
            # Older cards only know wall-clock seconds: the best estimate of their CPU time.
            "cpu_seconds": source.get("cumulative_cpu_hours", 0.0) * 3600.0
            or source.get("train_seconds", 0.0),
            "commands": source.get("commands") or [source.get("command")],
            **({"revived_latents": [int(c) for c in revived]} if args.revive_latents else {}),
            **({"split_from": [int(live) for _, live in pairs]} if args.revive_latents else {}),
        }
        LOG.info("warm start from %s (%s steps before)", args.init_from, lineage["steps"])
    os.makedirs(args.model_dir, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(lineage, handle, indent=2)
    return lineage


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
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(args.seed)
    strategy = choose_strategy(args.cpu_replicas)
    data_dir = records.local_copy(args.data)  # TensorFlow reads local files only here
    stats = statistics.read_stats(os.path.join(data_dir, features.TRANSFORM_DIR))
    trainer = Trainer(args, strategy, stats)
    start = trainer.restore()
    lineage = _start_lineage(trainer, args, data_dir)
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
                with trainer.averaged():
                    eval_metrics = trainer.evaluate(eval_data, args.eval_batches)
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
        with trainer.averaged():
            eval_metrics = trainer.evaluate(eval_data, args.eval_batches)
    cpu_seconds = lineage["cpu_seconds"] + float(trainer.cpu_seconds.numpy())
    card = {
        "name": os.path.basename(os.path.normpath(args.model_dir)),
        "architecture": type(trainer.model).__name__,
        "config": trainer.model.config.as_dict(),
        "lmbda": args.lmbda if args.task == "codec" and not args.lmbdas else None,
        "training_data": _training_data_summary(data_dir),
        "steps": trainer.step,
        "cumulative_steps": lineage["steps"] + trainer.step,
        "cumulative_cpu_hours": round(cpu_seconds / 3600.0, 3),
        "init_from": lineage.get("init_from"),
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
    # What is served: the moving average where there is one, always in float32 (decoding
    # must not depend on the training device's precision).
    with trainer.averaged():
        weights = trainer.model.get_weights()
    keras.mixed_precision.set_global_policy("float32")
    model = build_model(args, stats)
    model.set_weights(weights)
    export_dir = os.path.join(args.model_dir, "export")
    card = export_model(model, TASKS[args.task], export_dir, card)
    LOG.info("exported %s (fingerprint %s) to %s", args.task, card["fingerprint"], export_dir)
    return card


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
