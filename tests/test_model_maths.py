"""The codec's maths, tested as tensorflow/compression tests its own layers: GDN, the bounds'
gradients, the entropy models' probabilities, the geometry, and the code-file bytes of the
shipped model pinned per fingerprint (as CompressAI pins bitstream checksums)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from models import codec, codefile, entropy_models, exact, registry
from models.codec import CodecConfig, ScaleHyperprior, training_qualities
from models.codefile import CodeFile
from models.compressor import Compressor
from models.layers import GDN

GOLDEN = Path(__file__).parent / "golden" / "code_files.json"
GOLDEN_QUALITIES = (0.0, 50.0, 100.0)
# Code files of the golden image written by each shipped codec, and the SHA-256 of the pixels
# each decodes to: what a replaced codec's decode-only copy must still give.
GOLDEN_FILES = GOLDEN.parent / "code_files"
GOLDEN_DECODED = GOLDEN.parent / "decoded_pixels.json"


def _gdn(inverse: bool, channels: int = 4) -> GDN:
    layer = GDN(inverse=inverse)
    layer.build([None, None, None, channels])
    return layer


def test_gdn_is_the_documented_formula_and_igdn_its_approximate_inverse():
    rng = np.random.default_rng(0)
    gdn, igdn = _gdn(False), _gdn(True)
    gamma_raw = rng.normal(-4.0, 1.0, (4, 4)).astype(np.float32)
    for layer in (gdn, igdn):
        layer.gamma_raw.assign(gamma_raw)
    x = rng.normal(0.0, 0.5, (2, 3, 5, 4)).astype(np.float32)
    beta = np.log1p(np.exp(gdn.beta_raw.numpy())) + gdn.beta_min
    gamma = np.log1p(np.exp(gamma_raw))
    expected = x / np.sqrt(beta + np.tensordot(x**2, gamma, [[3], [0]]))
    np.testing.assert_allclose(gdn(x).numpy(), expected, rtol=1e-5)
    # Normalisation with small gamma is nearly undone by the inverse with the same parameters.
    np.testing.assert_allclose(igdn(gdn(x)).numpy(), x, atol=0.02)


def test_gdn_parameters_stay_positive_whatever_the_raw_weights():
    layer = _gdn(False)
    layer.beta_raw.assign(tf.fill([4], -50.0))
    layer.gamma_raw.assign(tf.fill([4, 4], -50.0))
    y = layer(tf.ones([1, 2, 2, 4])).numpy()
    assert np.all(np.isfinite(y))
    assert np.all(y > 0)  # beta >= beta_min > 0: no division by zero, no sign flip


def test_lower_bound_passes_the_gradient_only_towards_the_bound():
    x = tf.constant([-2.0, -2.0, 3.0, 3.0])
    direction = tf.constant([1.0, -1.0, 1.0, -1.0])  # d loss / d output
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = entropy_models.lower_bound(x, 0.0)
        loss = tf.reduce_sum(direction * y)
    np.testing.assert_array_equal(y.numpy(), [0.0, 0.0, 3.0, 3.0])
    # Below the bound, a step that would lower x further is stopped; one that raises it passes.
    np.testing.assert_array_equal(tape.gradient(loss, x).numpy(), [0.0, -1.0, 1.0, -1.0])


def test_gaussian_conditional_probabilities_sum_to_one_over_the_coded_range():
    support = tf.range(-entropy_models.Y_RANGE, entropy_models.Y_RANGE + 1, dtype=tf.float32)
    for scale in entropy_models.scale_table()[:: len(entropy_models.scale_table()) // 8]:
        likelihood = entropy_models.GaussianConditional()(support, tf.fill(support.shape, scale))
        assert float(tf.reduce_sum(likelihood)) == pytest.approx(1.0, abs=1e-3), scale


def test_factorized_prior_probabilities_sum_to_one_untrained_and_shipped():
    # a density of spread ~2 has next to no mass beyond the coded +-Z_RANGE (spread 10 has 0.3%)
    prior = entropy_models.FactorizedPrior(init_scale=2.0)
    prior.build([None, None, None, 8])
    np.testing.assert_allclose(prior.pmf_table().numpy().sum(axis=1), 1.0, atol=1e-3)
    shipped = Compressor().z_pmf  # the trained density of the shipped codec
    np.testing.assert_allclose(shipped.sum(axis=1), 1.0, atol=1e-3)


def test_latent_and_side_shapes_follow_the_models_strides():
    model = ScaleHyperprior(CodecConfig(num_filters=8, latent_filters=12))
    height, width = 100, 130  # padded to 128 x 192
    x = codec.pad_to_multiple(tf.zeros([1, height, width, 3]))
    y = model.analysis_transform(x)
    z = model.hyper_analysis_transform(y)
    assert x.shape[1:3] == (codec.padded_side(height), codec.padded_side(width)) == (128, 192)
    assert y.shape[1:] == (128 // codec.LATENT_STRIDE, 192 // codec.LATENT_STRIDE, 12)
    assert tuple(z.shape[1:]) == codec.side_shape(height, width, 8) == (2, 3, 8)
    assert model.synthesis_transform(y).shape == x.shape


def test_the_padding_repeats_the_blurred_edges_and_tiles_pad_as_the_whole_image():
    """pad_to_multiple (the model's) and the Compressor's tile windows (NumPy) pad alike: the
    image untouched, rows below the box-blurred last row, columns right the blurred last
    column; a tile window is the same cut of it (to the uint8 rounding the analysis reads)."""
    from scipy.ndimage import uniform_filter1d

    from models.compressor import _edge_padded

    pixels = np.random.default_rng(7).integers(0, 256, (61, 97, 3)).astype(np.uint8)
    whole = codec.pad_to_multiple(tf.constant(pixels[np.newaxis], tf.float32))[0].numpy()
    assert whole.shape == (64, 128, 3)
    np.testing.assert_array_equal(whole[:61, :97], pixels)
    last_row = uniform_filter1d(pixels[-1].astype(np.float32), codec.EDGE_BLUR, 0, mode="nearest")
    np.testing.assert_allclose(whole[61:, :97], np.broadcast_to(last_row, (3, 97, 3)), atol=1e-3)
    # smoother than the edge it repeats: what makes the border's latents cheaper
    assert (
        np.abs(np.diff(last_row, axis=0)).mean()
        < np.abs(np.diff(pixels[-1].astype(int), axis=0)).mean() / 3
    )
    edges = codec.padding_edges(pixels)
    tiled = _edge_padded(pixels, (0, 64), (0, 128), edges).astype(np.float32)
    assert np.abs(tiled - whole).max() <= 0.5
    window = _edge_padded(pixels, (16, 64), (48, 128), edges)
    np.testing.assert_array_equal(window, tiled[16:, 48:])


@pytest.mark.parametrize(
    ("kernel", "latent_kernel", "image_kernel", "reach"),
    [(3, 5, None, 8), (5, None, None, 15), (3, 3, None, 0), (3, 5, 5, 9)],
)
def test_synthesis_reach_is_how_far_back_a_latent_moves_the_image(
    kernel, latent_kernel, image_kernel, reach
):
    """synthesis_reach, which decides the latents a code file codes, is what TensorFlow's
    transposed convolutions do: a latent's change moves pixels from ``reach`` above its own
    16-pixel block (and left of it) on, none before."""
    synthesis = codec.SynthesisTransform(8, kernel, latent_kernel, image_kernel)
    assert codec.synthesis_reach(synthesis) == reach
    y = tf.random.stateless_normal([1, 6, 6, 4], [1, 2])
    moved = tf.tensor_scatter_nd_add(y, [[0, 3, 3]], [tf.fill([4], 5.0)])
    changed = np.abs((synthesis(moved) - synthesis(y)).numpy()).max(axis=(0, 3)) > 0
    rows, cols = np.nonzero(changed)
    block = 3 * codec.LATENT_STRIDE
    assert rows.min() == cols.min() == block - reach
    # a 100 x 130 image (padded to 128 x 192: 8 x 12 latents) with reach 8 needs
    # ceil(108 / 16) = 7 rows and ceil(138 / 16) = 9 columns
    assert codec.coded_latents(100, 130, 8) == (7, 9)
    assert codec.coded_latents(100, 130, 0) == (7, 9)
    assert codec.coded_latents(96, 128, 8) == (7, 8)  # the padded grid bounds it
    assert codec.coded_latents(128, 192, 0) == (8, 12)


def test_a_codec_built_for_images_has_every_layer_built():
    """build_for_images runs the inference path, whose synthesis calls its layers one by
    one; its Sequential must count as built too, or SavedModel leaves its Keras metadata out
    (with a warning) of every export that was not trained in the same process."""
    model = ScaleHyperprior(CodecConfig(num_filters=8, latent_filters=12, mean_scale=True))
    model.build_for_images()
    layers = [m for m in model.submodules if isinstance(m, keras.layers.Layer)]
    assert any(layer.name == "synthesis" for layer in layers)
    assert [layer.name for layer in layers if not layer.built] == []


def test_under_bfloat16_the_codec_reads_and_writes_latents_and_pixels_in_float32():
    """bfloat16 keeps 8 bits of mantissa: a latent of 100 would reach the decoder up to 0.25
    off (a quarter of a quantization step) and pixels near white ~1/512 off.  The layers at
    the edges compute in float32, so a bfloat16 run trains on the latents, means and pixels
    its float32 export codes; the layers between stay 16-bit (the speed)."""
    config = CodecConfig(num_filters=8, latent_filters=12, mean_scale=True)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        mixed = ScaleHyperprior(config)
        mixed.build_for_images()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    exact = ScaleHyperprior(config)
    exact.build_for_images()
    exact.set_weights(mixed.get_weights())
    rng = np.random.default_rng(5)
    latents = tf.constant(rng.normal(0.0, 100.0, (1, 4, 4, 12)), tf.float32)
    features = tf.constant(rng.normal(0.0, 1.0, (1, 16, 16, 8)), tf.float32)
    side = tf.constant(rng.integers(-3, 4, (1, 1, 1, 8)), tf.float32)
    pairs = [
        (mixed.synthesis_transform.layers[0], exact.synthesis_transform.layers[0], latents),
        (mixed.analysis_transform.layers[-1], exact.analysis_transform.layers[-1], features),
        (mixed.synthesis_transform.layers[-1], exact.synthesis_transform.layers[-1], features),
        (mixed.hyper_analysis_transform, exact.hyper_analysis_transform, latents),
        (mixed.hyper_synthesis_transform, exact.hyper_synthesis_transform, side),
    ]
    for edge, reference, inputs in pairs:
        out = edge(inputs)
        assert out.dtype == tf.float32, edge.name
        np.testing.assert_allclose(out, reference(inputs), rtol=1e-4, atol=1e-4)
    middle = mixed.synthesis_transform.layers[2]
    assert middle.compute_dtype == "bfloat16"


def _golden_image() -> np.ndarray:
    """A fixed 48 x 80 RGB image (smooth ramps, an edge and seeded texture)."""
    rows, cols = np.mgrid[0:48, 0:80]
    texture = np.random.default_rng(2026).integers(0, 40, (48, 80, 3))
    image = np.stack([rows * 5, cols * 3, (rows + cols) * 2], axis=-1) + texture
    image[:, 40:] = 255 - image[:, 40:]
    return np.clip(image, 0, 255).astype(np.uint8)


def _code_file_digests(compressor: Compressor) -> dict[str, str]:
    image = _golden_image()
    qualities = GOLDEN_QUALITIES if compressor.variable_rate else (None,)
    return {
        f"q{quality:g}" if quality is not None else "one-rate": hashlib.sha256(
            compressor.compress(image, quality=quality)
        ).hexdigest()
        for quality in qualities
    }


def _golden_key(compressor: Compressor) -> str:
    """Bytes are pinned per model, exact entropy model and format (earlier keys: a bare
    fingerprint for format 2, fingerprint/exact model for format 3)."""
    return f"{compressor.fingerprint}/{compressor.exact.identity}/format{codefile.VERSION}"


def _golden_name(compressor: Compressor, quality: float | None) -> str:
    """A golden code file's name (format 3's had no format suffix)."""
    setting = "one-rate" if quality is None else f"q{quality:g}"
    return f"{compressor.fingerprint}-{setting}-format{codefile.VERSION}.lpc"


def _shipped_codecs(decode_only: bool = False) -> list[str]:
    """Every codec in the package that writes format 3 (``codec``, ``codec-high-rate``, ...),
    or with ``decode_only`` the replaced ones kept to decode their files (``models.release``)."""
    cards = {name: registry.card(name) for name in registry.available()}
    return [
        name
        for name, card in cards.items()
        if card.get("task") == "codec"
        and card.get("exact_identity")
        and bool(card.get("decode_only")) == decode_only
    ]


def _golden_files(compressor: Compressor) -> dict[Path, str]:
    """The codec's golden code files -> the SHA-256 of the pixels they decode to."""
    pinned = json.loads(GOLDEN_DECODED.read_text()) if GOLDEN_DECODED.exists() else {}
    return {
        GOLDEN_FILES / name: digest
        for name, digest in pinned.items()
        if name.startswith(f"{compressor.fingerprint}-")
    }


def _record_golden_files(compressor: Compressor) -> None:
    """Writes the codec's code files of the golden image, and what they decode to, so that
    once it is replaced its decode-only copy is checked against them."""
    pinned = json.loads(GOLDEN_DECODED.read_text()) if GOLDEN_DECODED.exists() else {}
    GOLDEN_FILES.mkdir(parents=True, exist_ok=True)
    for quality in GOLDEN_QUALITIES if compressor.variable_rate else (None,):
        data = compressor.compress(_golden_image(), quality=quality)
        name = _golden_name(compressor, quality)
        (GOLDEN_FILES / name).write_bytes(data)
        pinned[name] = hashlib.sha256(compressor.decompress(data).tobytes()).hexdigest()
    GOLDEN_DECODED.write_text(json.dumps(pinned, indent=2, sort_keys=True) + "\n")


@pytest.mark.parametrize("name", _shipped_codecs())
def test_code_file_bytes_of_the_shipped_codecs_are_pinned(name):
    """A changed coder, dependency or model maths that changes the bytes is caught here.

    After shipping a codec, record its bytes with ``python -m tests.test_model_maths``."""
    compressor = Compressor(name)
    pinned = json.loads(GOLDEN.read_text())
    assert _golden_key(compressor) in pinned, (
        f"no pinned code-file bytes for the shipped codec {name} {_golden_key(compressor)}: "
        "run python -m tests.test_model_maths and commit tests/golden/code_files.json"
    )
    assert _code_file_digests(compressor) == pinned[_golden_key(compressor)]
    image = _golden_image()
    decoded = compressor.decompress(compressor.compress(image, quality=50.0))
    assert decoded.shape == image.shape


def _assert_golden_files_decode(compressor: Compressor) -> None:
    """Every golden code file of the codec (recorded by ``python -m tests.test_model_maths``
    while it shipped) decodes to the pixels it decoded to then."""
    golden = _golden_files(compressor)
    assert golden, f"no golden code files of {compressor.model_dir}: record them while it ships"
    for path, digest in golden.items():
        decoded = compressor.decompress(path.read_bytes())
        assert hashlib.sha256(decoded.tobytes()).hexdigest() == digest, path.name


@pytest.mark.parametrize("name", _shipped_codecs())
def test_a_shipped_codec_decodes_its_files_of_every_format_to_the_same_pixels(name):
    """Files written before format 4 (every latent of the padded image coded) still decode
    to the pixels they did; and format 4, which codes only the latents that reach the image,
    gives the same pixels from the same latents in fewer bytes."""
    compressor = Compressor(name)
    _assert_golden_files_decode(compressor)
    image = _golden_image()  # 48 x 80: padded to 64 x 128, its last 2 latent columns unread
    height, width = image.shape[:2]
    padded = (codec.padded_side(height), codec.padded_side(width))
    for quality in GOLDEN_QUALITIES:
        y = compressor.latents(image, quality)
        z_hat = compressor.side_information(y)
        only_reaching = compressor.code_latents(y, z_hat, (height, width), quality)
        every = compressor.code_latents(y, z_hat, padded, quality)  # what format 3 coded
        assert only_reaching.coded[1] < every.coded[1]
        np.testing.assert_array_equal(
            compressor.synthesize(only_reaching, height, width, quality),
            compressor.synthesize(every, height, width, quality),
        )
        data = compressor.encode(only_reaching, height, width, 3, quality)
        assert CodeFile.from_bytes(data).version == codefile.VERSION
        # the padded image's file codes every latent; its header is the same size
        assert len(data) < len(compressor.encode(every, *padded, 3, quality)), quality


@pytest.mark.parametrize("name", _shipped_codecs(decode_only=True))
def test_a_kept_decode_only_codec_decodes_the_files_it_wrote_to_the_same_pixels(name):
    """A replaced codec kept without its encoder: the files it wrote while shipped (golden
    files recorded then) decode to the pixels they decoded to then."""
    compressor = Compressor(name)
    _assert_golden_files_decode(compressor)
    with pytest.raises(ValueError, match="decode-only"):
        compressor.compress(_golden_image(), quality=50.0)


if __name__ == "__main__":
    # Records every shipped codec's golden bytes (kept for earlier fingerprints too), and its
    # golden code files for the day it is replaced and kept decode-only.
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    for shipped in map(Compressor, _shipped_codecs()):
        golden[_golden_key(shipped)] = _code_file_digests(shipped)
        _record_golden_files(shipped)
        print(f"pinned {_golden_key(shipped)}: {golden[_golden_key(shipped)]}", file=sys.stderr)
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(golden, indent=2, sort_keys=True) + "\n")


def test_a_model_card_has_one_reader_that_fills_what_older_cards_lack():
    """CodecConfig.from_card / DenoiserConfig.from_card: what a card records comes back as
    exported; a card older than hyper_filters, mean_scale, slices, lmbdas or unshuffle means
    what it meant then (hyper = N, scale-only, no slices, one rate, no unshuffle)."""
    from models.denoiser import DenoiserConfig

    config = CodecConfig(128, 320, 0.01, (0.0025, 0.04), 64, True, 4)
    assert CodecConfig.from_card(json.loads(json.dumps({"config": config.as_dict()}))) == config
    old = CodecConfig.from_card({"config": {"num_filters": 64, "latent_filters": 96}})
    assert (old.side_filters, old.mean_scale, old.slices, old.variable_rate) == (
        64,
        False,
        0,
        False,
    )
    shipped = Compressor()
    assert shipped.config == CodecConfig.from_card(shipped.card) and shipped.config.variable_rate
    denoiser = DenoiserConfig(16, 64, (0.4, 0.5, 0.6), (0.2, 0.2, 0.2), 2)
    as_card = json.loads(json.dumps({"config": denoiser.as_dict()}))
    assert DenoiserConfig.from_card(as_card) == denoiser
    old_denoiser = DenoiserConfig.from_card({"config": {"depth": 17, "filters": 64}})
    assert old_denoiser.unshuffle == 1 and old_denoiser.receptive_radius == 18
    assert old_denoiser.architecture == "dncnn" and old_denoiser.align == 1
    unet = DenoiserConfig(filters=48, architecture="unet", levels=3, blocks=2, unshuffle=2)
    assert DenoiserConfig.from_card(json.loads(json.dumps({"config": unet.as_dict()}))) == unet
    with pytest.raises(ValueError, match="architecture"):
        DenoiserConfig.from_card({"config": {"architecture": "transformer"}})
    with pytest.raises(ValueError, match="levels and blocks"):
        DenoiserConfig(architecture="unet", levels=0)


def test_one_quality_per_batch_puts_every_image_of_a_step_at_one_rate():
    """--quality-per-batch: all images of a batch share one quality, and the draws still
    cover the whole range; the default draws one per image."""
    shared = np.array([training_qualities(4, per_batch=True).numpy() for _ in range(300)])
    assert np.all(shared == shared[:, :1])
    assert shared.min() < 5 and shared.max() > 95
    mixed = training_qualities(4).numpy()
    assert len(set(mixed.tolist())) == 4
    ranged = np.concatenate([training_qualities(8, low=10.0, high=30.0).numpy() for _ in range(50)])
    assert ranged.min() >= 10.0 and ranged.max() <= 30.0 and ranged.max() - ranged.min() > 15


def test_a_quality_power_above_one_draws_the_low_rates_more_often():
    """--quality-power P draws LOW + (HIGH - LOW) * u**P: the share of draws below quality 30
    is 0.3**(1/P) (0.30 uniform, 0.55 for P=2, 0.67 for P=3), still within [LOW, HIGH]."""
    tf.random.set_seed(11)

    def share_below_30(power, low=0.0, high=100.0):
        drawn = training_qualities(20000, low=low, high=high, power=power).numpy()
        assert drawn.min() >= low and drawn.max() <= high
        return float(np.mean(drawn < 30.0))

    assert share_below_30(1.0) == pytest.approx(0.30, abs=0.015)
    assert share_below_30(2.0) == pytest.approx(0.3**0.5, abs=0.015)
    assert share_below_30(3.0) == pytest.approx(0.3 ** (1 / 3), abs=0.015)
    assert share_below_30(2.0, low=20.0, high=60.0) == pytest.approx(0.25**0.5, abs=0.015)
    shared = training_qualities(4, per_batch=True, power=2.0).numpy()
    assert np.all(shared == shared[0])


def test_balanced_levels_weigh_each_images_gradient_by_its_own_loss():
    """--balance-levels: the loss's value is the plain mean, but each image's gradient is
    divided by its own loss, so the bottom rate's image (loss ~1) is not swamped by the top
    rate's (loss ~30) in a mixed batch.  Deterministic (rounding) so images can be compared
    one by one with the batch."""
    model = ScaleHyperprior(CodecConfig(16, 24, lmbdas=(0.0025, 0.64), mean_scale=True))
    model.build_for_images()
    x = tf.random.stateless_uniform([1, 64, 64, 3], seed=(3, 4))
    weights = model.synthesis_transform.trainable_variables

    def loss_and_gradient(images, qualities, balance):
        with tf.GradientTape() as tape:
            loss = model(images, quality=tf.constant(qualities), balance_levels=balance)[0]
        return float(loss), tape.gradient(loss, weights)

    low, low_gradient = loss_and_gradient(x, [0.0], False)
    high, high_gradient = loss_and_gradient(x, [100.0], False)
    assert high > 5 * low  # what the balancing is for

    pair = tf.concat([x, x], axis=0)
    plain, plain_gradient = loss_and_gradient(pair, [0.0, 100.0], False)
    balanced, balanced_gradient = loss_and_gradient(pair, [0.0, 100.0], True)
    np.testing.assert_allclose(balanced, plain, rtol=1e-5)
    mean = (low + high) / 2
    for g, g_plain, g_low, g_high in zip(
        balanced_gradient, plain_gradient, low_gradient, high_gradient, strict=True
    ):
        np.testing.assert_allclose(g_plain, (g_low + g_high) / 2, rtol=1e-3, atol=1e-6)
        expected = (mean / low * g_low + mean / high * g_high) / 2
        np.testing.assert_allclose(g, expected, rtol=1e-3, atol=1e-6)


def test_rate_weights_price_each_latent_channels_bits_in_the_loss_not_in_the_rate():
    """A channel's rate weight scales its bits in the loss (what --ramp-new-latents lowers
    for grown latents) while bpp stays the real estimate; weights of 1 change nothing."""
    keras.utils.set_random_seed(7)
    model = ScaleHyperprior(CodecConfig(16, 24, lmbdas=(0.0025, 0.64), mean_scale=True))
    model.build_for_images()
    x = tf.random.stateless_uniform([2, 64, 64, 3], seed=(5, 6))
    quality = tf.constant([100.0, 100.0])
    loss, bpp, mse, _ = model(x, quality=quality)
    ones = model(x, quality=quality, rate_weights=tf.ones([24]))
    np.testing.assert_allclose(float(ones[0]), float(loss), rtol=1e-6)

    half = tf.concat([tf.ones([12]), tf.zeros([12])], axis=0)
    weighted_loss, weighted_bpp, weighted_mse, _ = model(x, quality=quality, rate_weights=half)
    np.testing.assert_allclose(float(weighted_bpp), float(bpp), rtol=1e-6)
    np.testing.assert_allclose(float(weighted_mse), float(mse), rtol=1e-6)
    # the loss dropped by exactly the silenced channels' bits: their share of the y bits
    y = model.analyze(x, quality)
    index, mean = model.hyperprior(model.quantize_z(model.hyper_analysis_transform(y)))
    code = model.quantize_y(y - mean)
    position = tf.cast(entropy_models.quantize_index(index), tf.float32)
    sigma = entropy_models.scale_from_index(position)
    bits = -tf.math.log(model.gaussian_conditional(code, sigma)) / tf.math.log(2.0)
    dropped = float(tf.reduce_sum(bits[..., 12:])) / (64 * 64) / 2  # per pixel, mean of 2
    assert dropped > 0.01  # the test means something: those channels code bits
    # an untrained codec's loss at the top rate is ~14,000 (lambda * MSE) in float32: the
    # difference of two is good to a few units in their last place (~0.001 each)
    precision = 8 * float(np.spacing(np.float32(loss)))
    np.testing.assert_allclose(float(loss) - float(weighted_loss), dropped, atol=precision)


@pytest.mark.parametrize("shape", sorted(exact.SHAPE_DEGREES))
def test_the_training_rates_student_t_is_the_code_files_coding_shape(shape):
    """--rate-shapes trains on the t a code file codes with: its bin masses at the table's
    scales are the integer tables' frequencies (scale and variance alike), summing to 1."""
    degrees = exact.SHAPE_DEGREES[shape]
    tables = exact.student_t_tables(entropy_models.NUM_SCALES, 2048, degrees)
    symbols = tf.range(-2048, 2049, dtype=tf.float32)
    for i in (0, 20, 40, 63):
        scale = entropy_models.scale_table()[i]
        mass = entropy_models.student_t_likelihood(symbols, tf.fill([4097], scale), degrees)
        assert float(tf.reduce_sum(mass)) == pytest.approx(1.0, abs=1e-3)
        counts = tables[i].astype(np.float64)
        held = counts > 1e4  # away from the tables' +1 floor and folded tails
        np.testing.assert_allclose(mass.numpy()[held], counts[held] / 2**24, rtol=1e-3)


def test_rate_shapes_price_each_image_in_its_cheapest_coding_shape():
    """Each image's latents cost what the shape the encoder would pick codes them in: the
    Gaussian for Gaussian latents, a heavy-tailed t for heavy-tailed ones; the model's rate
    with rate shapes is never above the Gaussian's, and its gradient is finite."""
    model = ScaleHyperprior(CodecConfig(16, 24, lmbdas=(0.0025, 0.64), mean_scale=True))
    model.build_for_images()
    rng = np.random.default_rng(3)
    sigma = tf.fill([2, 16, 16, 24], 2.0)
    residual = np.stack(
        [rng.normal(0, 2.0, [16, 16, 24]), rng.standard_t(4, [16, 16, 24]) * 2.0 / np.sqrt(2)]
    )
    residual = tf.constant(np.round(residual), tf.float32)
    nats = tf.reduce_sum(model.cheapest_shape_nats(residual, sigma), axis=[1, 2, 3]).numpy()

    def shape_nats(likelihood):
        return tf.reduce_sum(-tf.math.log(likelihood), axis=[1, 2, 3]).numpy()

    gaussian = shape_nats(model.gaussian_conditional(residual, sigma))
    heavy = shape_nats(entropy_models.student_t_likelihood(residual, sigma, 4))
    assert gaussian[0] < heavy[0] and heavy[1] < gaussian[1]  # the test tells them apart
    np.testing.assert_allclose(nats, [gaussian[0], heavy[1]], rtol=1e-6)

    x = tf.random.stateless_uniform([2, 64, 64, 3], seed=(8, 9))
    quality = tf.constant([0.0, 100.0])
    bpp = float(model(x, quality=quality)[1])
    model.rate_shapes = True
    with tf.GradientTape() as tape:
        loss, shaped_bpp, _, _ = model(x, quality=quality)
    assert shaped_bpp <= bpp
    gradients = tape.gradient(loss, model.trainable_variables)
    assert all(bool(tf.reduce_all(tf.math.is_finite(g))) for g in gradients if g is not None)

    sliced = ScaleHyperprior(CodecConfig(16, 24, lmbdas=(0.0025, 0.64), mean_scale=True, slices=2))
    with pytest.raises(ValueError, match="without context"):
        sliced.cheapest_shape_nats(residual, sigma)
