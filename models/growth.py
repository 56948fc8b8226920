"""Weight surgery: warm-starting a model from an exported one, growing it wider or deeper
(Net2Net) and reviving latent channels that code nothing.  It depends on the layer layout of
``models.codec`` and ``models.denoiser``: a change to those transforms is made here too.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace

import numpy as np
import tensorflow as tf
import tf_keras as keras

from models import registry
from models.codec import QUALITY_MAX, CodecConfig, ScaleHyperprior, pad_to_multiple
from models.denoiser import DenoiserConfig, DnCNN
from models.export import load_model_card
from models.layers import GDN, softplus_inverse

LOG = logging.getLogger(__name__)


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
    if card.get("decode_only"):
        raise ValueError(f"{name_or_path} is a decode-only copy (no encoder): start from another")
    source = model
    narrowing = False
    if isinstance(model, ScaleHyperprior):
        recorded = CodecConfig.from_card(card)
        sizes = {
            "num_filters": recorded.num_filters,
            "latent_filters": recorded.latent_filters,
            "hyper_filters": recorded.side_filters,
            "mean_scale": recorded.mean_scale,
            "slices": recorded.slices,
            "checkerboard": recorded.checkerboard,
            "level_scale_offsets": recorded.level_scale_offsets,
            "coarse_kernel_size": recorded.latent_kernel_size,
            "fine_kernel_size": recorded.image_kernel_size,
            "hyper_signs": recorded.hyper_signs,
            "analysis_entry_filters": recorded.entry_filters,
            "analysis_tail_filters": recorded.analysis_tail_filters,
        }
        source_lmbdas = recorded.lmbdas
        new_levels = (
            len(source_lmbdas) > 1
            and model.config.variable_rate
            and source_lmbdas != tuple(model.config.lmbdas)
        )
        if recorded.kernel_size != model.config.kernel_size:
            raise ValueError(
                f"--init-from {name_or_path}: its transforms have {recorded.kernel_size}x"
                f"{recorded.kernel_size} kernels, this codec's {model.config.kernel_size}x"
                f"{model.config.kernel_size}: train it fresh"
            )
        if sizes["slices"] not in (0, model.config.slices):
            raise ValueError(
                f"--init-from {name_or_path}: its latents are coded in {sizes['slices']} "
                f"slices, this codec's in {model.config.slices}"
            )
        target = replace(
            model.config,
            hyper_filters=model.config.side_filters,
            coarse_kernel_size=model.config.latent_kernel_size,
            fine_kernel_size=model.config.image_kernel_size,
            analysis_entry_filters=model.config.entry_filters,
        )
        # g_a's first stage is the one part that may shrink (an encoder made cheaper), when
        # asked for by name and alone: the rest must then be the source as it is.
        narrowing = bool(model.config.analysis_entry_filters) and (
            sizes["analysis_entry_filters"] > target.analysis_entry_filters
        )
        entry = "analysis_entry_filters"
        others_differ = any(size != getattr(target, k) for k, size in sizes.items() if k != entry)
        if narrowing and (new_levels or others_differ):
            raise ValueError(
                f"--init-from {name_or_path}: narrowing the analysis entry "
                f"({recorded.entry_filters} -> {target.analysis_entry_filters} channels) needs "
                "the rest of the codec as it is there"
            )
        grows = {k: v for k, v in sizes.items() if k != entry or not narrowing}
        if any(size > getattr(target, name) for name, size in grows.items()):
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
        (recorded := DenoiserConfig.from_card(card)).depth < model.config.depth
        or recorded.filters < model.config.filters
    ):
        source = DnCNN(replace(model.config, depth=recorded.depth, filters=recorded.filters))
        source.build_for_images()
    _read_exported_weights(source, model_dir, name_or_path)
    if source is model:
        return card
    if isinstance(model, ScaleHyperprior) and narrowing:
        kept = narrow_analysis_entry(source, model, sample_batch())
        LOG.info(
            "narrowed the analysis entry from %d to %d channels (kept %s...)",
            source.config.entry_filters,
            model.config.entry_filters,
            kept[:8].tolist(),
        )
    elif isinstance(model, ScaleHyperprior):
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


def exported_codec(name_or_path: str) -> ScaleHyperprior:
    """The Keras codec of a shipped or exported codec, its weights read from the export."""
    model = ScaleHyperprior(CodecConfig.from_card(load_model_card(registry.resolve(name_or_path))))
    model.build_for_images()
    load_exported_weights(model, name_or_path)
    return model


def _codec_size(codec: ScaleHyperprior) -> str:
    config = codec.config
    size = f"N={config.num_filters} M={config.latent_filters} hyper={config.side_filters}"
    size += f" {config.kernel_size}x{config.kernel_size}"
    if config.latent_kernel_size != config.kernel_size:
        size += f" ({config.latent_kernel_size}x{config.latent_kernel_size} next to the latents)"
    if config.image_kernel_size != config.kernel_size:
        size += f" ({config.image_kernel_size}x{config.image_kernel_size} next to the image)"
    size += " mean-scale" if config.mean_scale else ""
    size += " (signs to the hyperprior)" if config.hyper_signs else ""
    size += f" {config.slices} slices" if config.slices else ""
    size += " checkerboard" if config.checkerboard else ""
    size += " level scale offsets" if config.level_scale_offsets else ""
    tail = config.analysis_tail_filters
    return size + (f" (analysis tail of {tail} channels)" if tail else "")


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
    """Copies ``source`` into ``wider`` (more channels N, M or hyper, or larger kernels next
    to the latents or the image), so ``wider`` decodes the same image from the same code at first
    (Net2Net-style growth, Chen et al. 2016).

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
    without channel slices grown into one with them codes the same integers at first, and
    so does one without an analysis tail grown into one with it.
    """
    hyper_output = wider.hyper_synthesis_transform.layers[-1]
    hyper_input = wider.hyper_analysis_transform.layers[1]  # after |y| (and y)
    stage_gains = wider.log_stage_gains + wider.log_synthesis_gains  # features, not steps
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
    # A source without channel context (or without an analysis tail) leaves the new networks
    # as initialized: their last layers zero, they change nothing yet.
    fresh = set()
    if wider.config.slices and not source.config.slices:
        fresh |= {
            id(w) for layer in wider.slice_entropy + wider.slice_residual for w in layer.weights
        }
    if wider.config.checkerboard and not source.config.checkerboard:
        fresh |= {id(w) for w in wider.checkerboard_entropy.weights}
    if wider.config.level_scale_offsets and not source.config.level_scale_offsets:
        fresh.add(id(wider.scale_offsets))  # 0: the scales as they were
    if wider.analysis_tail is not None and source.analysis_tail is None:
        fresh |= {id(w) for w in wider.analysis_tail.weights}
    wider_weights = [w for w in wider.weights if id(w) not in fresh]
    for old, new in zip(source.weights, wider_weights, strict=True):
        other_levels = "gain" in new.name and source.config.lmbdas != wider.config.lmbdas
        if old.shape == new.shape and not other_levels:
            new.assign(old)
            continue
        zero_axis, blind_axis = rules.get(id(new), (None, None))
        if wider.config.mean_scale and any(new is w for w in hyper_output.weights):
            new.assign(_embed_scales_and_means(source, old.numpy(), new.numpy(), blind_axis))
            continue
        if wider.config.hyper_signs and new is hyper_input.kernel:
            new.assign(_embed_magnitudes_and_signs(source, old.numpy(), new.numpy()))
            continue
        values = _embed(old.numpy(), new.numpy(), blind_axis)
        if zero_axis is not None:
            added = [slice(None)] * values.ndim
            added[zero_axis] = slice(old.shape[zero_axis], None)
            values[tuple(added)] = 0.0
        if "gain" in new.name:
            old_gains = old.numpy()
            levels = (source.config.lmbdas, wider.config.lmbdas)
            if other_levels and any(new is w for w in stage_gains):
                old_gains = level_gains(old_gains, *levels, slope=0.0)
            elif other_levels:  # an inverse gain is the negative log of a gain
                sign = -1.0 if "inverse" in new.name else 1.0
                old_gains = sign * level_gains(sign * old_gains, *levels)
            values = new.numpy().copy()
            values[:, : old_gains.shape[1]] = old_gains
            values[:, old_gains.shape[1] :] = old_gains.mean(axis=1, keepdims=True)
        new.assign(values)
    start_latents_at_zero(wider, range(source.config.latent_filters, wider.config.latent_filters))


def sample_batch(side: int = 256) -> tf.Tensor:
    """Centre crops of the embedded sample photographs, [B, side, side, 3] in [0, 1]: what
    weight surgery that needs activations (``narrow_analysis_entry``) looks at."""
    from PIL import Image

    from latentpress.samples import sample_paths

    crops = []
    for path in sample_paths():
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), np.float32) / 255.0
        top, left = (pixels.shape[0] - side) // 2, (pixels.shape[1] - side) // 2
        crops.append(pixels[top : top + side, left : left + side])
    return tf.constant(np.stack(crops))


def narrow_analysis_entry(source: ScaleHyperprior, narrow: ScaleHyperprior, images) -> np.ndarray:
    """Copies ``source`` into ``narrow``, whose g_a first stage (convolution and GDN) keeps
    fewer channels: those the next layer depends on most on ``images``, i.e. the largest
    RMS of a channel's GDN output times the norm of the weights reading it.  What a dropped
    channel added to the kept ones' GDN norms (gamma_jc * E[x_j^2]) moves into their beta, so
    they are normalized as before on average.  Returns the kept channels, in order.

    The result is an approximation of ``source``'s encoder (the decoder is exact: it is
    copied); ``--train-only encoder`` then trains the narrowed encoder for that decoder."""
    conv, gdn, reader = source.analysis_transform.layers[:3]
    features = conv(images)
    normalized = gdn(features).numpy()
    rms = np.sqrt(np.mean(np.square(normalized), axis=(0, 1, 2)))
    reads = np.sqrt(np.sum(np.square(reader.kernel.numpy()), axis=(0, 1, 3)))
    width = narrow.config.entry_filters
    kept = np.sort(np.argsort(-rms * reads, kind="stable")[:width])
    dropped = np.setdiff1d(np.arange(rms.size), kept)
    energy = np.mean(np.square(features.numpy()), axis=(0, 1, 2))
    gamma = tf.nn.softplus(gdn.gamma_raw).numpy()
    beta = tf.nn.softplus(gdn.beta_raw).numpy() + gdn.beta_min
    beta = beta[kept] + energy[dropped] @ gamma[np.ix_(dropped, kept)]
    narrowed = {
        id(conv.kernel): conv.kernel.numpy()[..., kept],
        id(conv.bias): conv.bias.numpy()[kept],
        id(gdn.beta_raw): softplus_inverse(beta - gdn.beta_min),
        id(gdn.gamma_raw): gdn.gamma_raw.numpy()[np.ix_(kept, kept)],
        id(reader.kernel): reader.kernel.numpy()[:, :, kept],
    }
    if source.log_stage_gains:  # the first stage's per-level gains, one per channel
        first_gains = source.log_stage_gains[0]
        narrowed[id(first_gains)] = first_gains.numpy()[:, kept]
    for old, new in zip(source.weights, narrow.weights, strict=True):
        new.assign(narrowed.get(id(old), old))
    return kept


def level_gains(log_gains: np.ndarray, lmbdas, new_lmbdas, slope: float = 0.5) -> np.ndarray:
    """Log gains [levels, M] of a codec's rate levels ``lmbdas`` carried to ``new_lmbdas``:
    a level it had keeps its row, one between two is interpolated in log lambda, one beyond
    the ends continues from the nearest end at ``slope`` per log lambda: the latents' gains
    at the high-rate slope (quantization step ~ lmbda^-1/2, so 0.5; inverse gains take the
    negative), the transforms' stage gains (features, not steps) at 0, the end's row."""
    log_lmbdas = np.log(np.asarray(lmbdas, np.float64))
    rows = []
    for log_lmbda in np.log(np.asarray(new_lmbdas, np.float64)):
        if log_lmbda <= log_lmbdas[0] or log_lmbda >= log_lmbdas[-1]:
            end = 0 if log_lmbda <= log_lmbdas[0] else -1
            rows.append(log_gains[end] + slope * (log_lmbda - log_lmbdas[end]))
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


def calibrate_scale_offsets(model: ScaleHyperprior, images, steps=(1.0, 0.25)) -> np.ndarray:
    """Sets each rate level's scale offset (``level_scale_offsets``) to what codes
    ``images`` ([B, H, W, 3] in [0, 1]) in the fewest bits at that level's quality, from
    the offsets as they are: a grid search of each step size in turn (coarse, then fine
    around the best).  Returns the offsets.  Only the rate moves with them (the decoded
    latents do not, without context), so this is the rate-distortion optimum too."""
    levels = len(model.config.lmbdas)
    x = pad_to_multiple(images)
    offsets = model.scale_offsets.numpy().copy()

    def bits(level: int, value: float) -> float:
        offsets[level] = value
        model.scale_offsets.assign(offsets)
        quality = tf.fill([tf.shape(x)[0]], QUALITY_MAX * level / (levels - 1))
        return float(model(x, training=False, quality=quality)[0])

    for level in range(levels):
        best = float(offsets[level])
        for step in steps:
            candidates = [best + step * k for k in range(-4, 5)]
            best = min(candidates, key=lambda value: bits(level, value))
        offsets[level] = best
    model.scale_offsets.assign(offsets)
    return offsets


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
    hyper_input = model.hyper_analysis_transform.layers[1]  # after |y| (and y): [k, k, M, S]
    for offset in (0, latents) if model.config.hyper_signs else (0,):
        _set_slices(hyper_input.kernel, (slice(None), slice(None), dead + offset), 0.0)
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


def _embed_magnitudes_and_signs(source, old, new):
    """h_a's first kernel [k, k, 2M, S] (inputs: M magnitudes, then M signed latents) from
    ``source``'s: each half to its own; a source that read no signs gives zero weights from
    them, so z is the same at first."""
    old_latents = source.config.latent_filters
    new_latents = new.shape[2] // 2
    magnitudes = _embed(old[:, :, :old_latents], new[:, :, :new_latents], 2)
    signed = np.zeros_like(new[:, :, new_latents:])
    if source.config.hyper_signs:
        signed = _embed(old[:, :, old_latents:], signed, 2)
    return np.concatenate([magnitudes, signed], axis=2)


def _embed(old: np.ndarray, new: np.ndarray, input_axis: int | None) -> np.ndarray:
    """``new`` (a larger weight) with ``old`` in its leading corner and, along ``input_axis``,
    zero weights from the input channels ``old`` lacks, so the layer starts blind to them.

    A kernel of a larger side ([k, k, ...]) takes ``old``'s in its centre, zeros around it:
    for the codec's stride-2 'same' convolutions, plain and transposed, a 3x3 kernel at
    offset 1 of a 5x5 computes exactly what it did (any other offset shifts the image)."""
    values = new.copy()
    border = (new.shape[0] - old.shape[0]) // 2 if new.ndim == 4 else 0
    if border:
        ring = np.ones(new.shape[:2], bool)
        ring[border:-border, border:-border] = False
        values[ring] = 0.0
    values[
        tuple(
            slice(border, border + size) if axis < 2 else slice(0, size)
            for axis, size in enumerate(old.shape)
        )
    ] = old
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
