"""compress/decompress with the default model: real images, real bitstreams, real errors."""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from PIL import Image

from latentpress.samples import sample_paths
from models import exact
from models.codefile import CodeFile, CodeFileError, bits_per_pixel
from models.compressor import Compressor
from models.inference import psnr
from tests.conftest import export_untrained_codec, latentpress_process
from tests.legacy_files import legacy_code_file

ODD_SIZES = [(321, 481), (375, 500), (61, 97)]  # (height, width)


def sample_crop(name: str, height: int, width: int) -> np.ndarray:
    path = next(p for p in sample_paths() if os.path.basename(p) == name)
    image = np.asarray(Image.open(path).convert("RGB"))
    return np.ascontiguousarray(image[:height, :width])


@pytest.fixture(scope="module")
def compressor():
    return Compressor()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """Real photographs at odd sizes (one portrait), plus a grayscale one."""
    folder = tmp_path_factory.mktemp("images")
    paths = {}
    names = ["astronaut.png", "coffee.png", "chelsea.png"]
    for (height, width), name in zip(ODD_SIZES, names, strict=True):
        path = folder / f"{name[:-4]}_{width}x{height}.png"
        Image.fromarray(sample_crop(name, height, width)).save(path)
        paths[path.name] = path
    portrait = folder / "rocket_portrait.png"
    Image.fromarray(sample_crop("rocket.jpg", 427, 300)).save(portrait)
    paths[portrait.name] = portrait
    gray = folder / "camera_gray.png"
    Image.open(next(p for p in sample_paths() if p.endswith("camera.png"))).crop(
        (0, 0, 203, 117)
    ).save(gray)
    paths[gray.name] = gray
    return paths


@pytest.mark.parametrize(("height", "width"), ODD_SIZES + [(481, 321), (7, 5)])
def test_decompress_of_compress_equals_the_models_quantized_reconstruction(
    compressor, height, width
):
    x = sample_crop("astronaut.png", height, width)
    data = compressor.compress(x)
    decoded = compressor.decompress(data)
    reference = compressor.reconstruct(x)
    assert decoded.shape == x.shape
    assert np.abs(decoded.astype(int) - reference.astype(int)).max() <= 1


def test_cli_round_trip_reports_the_file_size_as_bpp(latentpress, images, tmp_path):
    sources = [str(p) for name, p in images.items() if "gray" not in name]
    done = latentpress("compress", *sources, "-o", str(tmp_path / "codes"))
    assert done.returncode == 0, done.stderr
    for line in done.stdout.strip().splitlines():
        path, rest = line.split(": ")
        size = os.path.getsize(path)
        assert path.endswith(".png.lpc")  # the one naming rule: extension kept, .lpc added
        with Image.open(images[Path(path).stem]) as source:
            width, height = source.size
        assert rest.startswith(f"{size} bytes")
        assert f"{bits_per_pixel(size, height * width):.4f} bpp" in rest
    codes = sorted(str(p) for p in (tmp_path / "codes").glob("*.lpc"))
    assert len(codes) == len(sources)
    done = latentpress("decompress", *codes, "-o", str(tmp_path / "decoded"))
    assert done.returncode == 0, done.stderr
    for code in codes:
        with Image.open(tmp_path / "decoded" / Path(code).stem) as decoded:  # x.png.lpc -> x.png
            with Image.open(images[Path(code).stem]) as source:
                assert decoded.size == source.size and decoded.mode == "RGB"


def test_decoding_is_identical_in_another_process_and_batch(compressor, images, tmp_path):
    """In-process decode == a fresh process decoding the file alone == one in a batch of 4."""
    sources = [p for name, p in images.items() if "gray" not in name]
    codes = tmp_path / "codes"
    codes.mkdir()
    for source in sources:
        x = np.asarray(Image.open(source).convert("RGB"))
        (codes / (source.stem + ".lpc")).write_bytes(compressor.compress(x))
    target = codes / (sources[0].stem + ".lpc")
    here = compressor.decompress(target.read_bytes())
    alone = latentpress_process("decompress", str(target), "-o", str(tmp_path / "alone"))
    batch = latentpress_process(
        "decompress", *sorted(str(p) for p in codes.iterdir()), "-o", str(tmp_path / "batch")
    )
    assert alone.returncode == 0 and batch.returncode == 0, alone.stderr + batch.stderr
    name = sources[0].stem + ".png"
    assert (tmp_path / "alone" / name).read_bytes() == (tmp_path / "batch" / name).read_bytes()
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "alone" / name)), here)


def test_grayscale_source_decodes_to_grayscale_of_the_same_shape(latentpress, images, tmp_path):
    gray = images["camera_gray.png"]
    assert latentpress("compress", str(gray), "-o", str(tmp_path)).returncode == 0
    done = latentpress("decompress", str(tmp_path / "camera_gray.png.lpc"), "-o", str(tmp_path))
    assert done.returncode == 0, done.stderr
    with Image.open(tmp_path / "camera_gray.png") as decoded, Image.open(gray) as source:
        assert decoded.mode == "L" and decoded.size == source.size
        error = np.abs(np.asarray(decoded, float) - np.asarray(source, float)).mean()
        assert error < 40  # it is the same picture, not noise


@pytest.fixture(scope="module")
def other_model(tmp_path_factory) -> str:
    """A different (untrained) codec, exported the same way."""
    return export_untrained_codec(tmp_path_factory.mktemp("other_model"), "other")


def test_every_bad_code_file_gives_one_line_and_a_nonzero_exit(
    latentpress, compressor, images, other_model, tmp_path
):
    x = np.asarray(Image.open(images["chelsea_97x61.png"]).convert("RGB"))
    good = compressor.compress(x)
    bad = {
        "truncated.lpc": good[: len(good) // 2],
        "bitflip.lpc": good[:50] + bytes([good[50] ^ 0x04]) + good[51:],
        "version.lpc": good[:4] + bytes([9]) + good[5:],
        "notacode.lpc": Path(images["chelsea_97x61.png"]).read_bytes(),
        "empty.lpc": b"",
        "othermodel.lpc": Compressor(other_model).compress(x),
    }
    expected = {
        "truncated.lpc": "truncated",
        "bitflip.lpc": "checksum mismatch",
        "version.lpc": "unsupported code-file format version 9",
        "notacode.lpc": "not a latentpress code file",
        "empty.lpc": "not a latentpress code file",
        "othermodel.lpc": "written by model",
    }
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "good.lpc").write_bytes(good)
    paths = [str(tmp_path / name) for name in [*bad, "good.lpc"]]
    done = latentpress("decompress", *paths, "-o", str(tmp_path / "out"))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("latentpress")]
    assert len(lines) == len(bad)
    for name, reason in expected.items():
        assert any(name in line and reason in line for line in lines), (name, lines)
    assert sorted(os.listdir(tmp_path / "out")) == ["good.png"]  # nothing half-decoded


def test_other_models_file_decodes_with_its_own_model(other_model, tmp_path):
    x = sample_crop("coffee.png", 64, 80)
    other = Compressor(other_model)
    assert other.decompress(other.compress(x)).shape == x.shape


def test_the_model_card_is_the_one_source_of_the_fingerprint(compressor, tmp_path):
    copy = tmp_path / "codec"
    shutil.copytree(compressor.model_dir, copy)
    card = json.loads((copy / "model_card.json").read_text())
    assert Compressor(str(copy)).fingerprint == card["fingerprint"] == compressor.fingerprint
    card["fingerprint"] = "0123456789abcdef"  # a card that is not these weights'
    (copy / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="is not the exported weights'"):
        Compressor(str(copy))


def test_unknown_model_is_a_one_line_error(latentpress, tmp_path):
    done = latentpress("compress", "--model", "no-such-model", "x.png", "-o", str(tmp_path))
    assert done.returncode == 2
    assert "no exported model" in done.stderr and "Traceback" not in done.stderr


def test_exported_codec_keeps_working_after_reloading(compressor):
    """The SavedModel alone (no Python model code path) reproduces its own latents."""
    x = sample_crop("astronaut.png", 64, 64)
    first = compressor.latents(x, quality=50.0)
    reloaded = tf.saved_model.load(os.path.join(compressor.model_dir, "saved_model"))
    second = reloaded.analysis(tf.constant(x), tf.constant(50.0))
    np.testing.assert_array_equal(first, second["y"].numpy())


def test_quality_levels_trade_size_for_fidelity_and_decode_without_naming_the_model(
    latentpress, tmp_path
):
    """--quality picks a shipped codec; decompress finds it again from the file's header."""
    source = sample_paths()[2]  # chelsea
    sizes, errors = {}, {}
    with Image.open(source) as image:
        original = np.asarray(image.convert("RGB"), dtype=np.float64)
    codes = tmp_path / "codes"
    codes.mkdir()
    for quality in ("low", "medium", "high"):
        out = tmp_path / quality
        done = latentpress("compress", "--quality", quality, source, "-o", str(out))
        assert done.returncode == 0, done.stderr
        (code,) = out.glob("*.lpc")
        sizes[quality] = code.stat().st_size
        code.rename(codes / f"{quality}-{code.name}")
    # one decompress for the three: each file names its own codec
    done = latentpress("decompress", *map(str, sorted(codes.glob("*.lpc"))), "-o", str(codes))
    assert done.returncode == 0, done.stderr
    for quality in sizes:
        (decoded,) = codes.glob(f"{quality}-*.png")
        with Image.open(decoded) as image:
            errors[quality] = np.mean((np.asarray(image, dtype=np.float64) - original) ** 2)
    assert sizes["low"] < sizes["medium"] < sizes["high"]
    assert errors["low"] > errors["high"]


def test_the_high_rate_codec_reaches_archive_quality_and_decodes_without_naming_it(
    latentpress, tmp_path
):
    """`--model codec-high-rate` goes far past the default codec's best quality (which stops
    near 31 dB on CBSD68), and decompress finds it from the file's header like any shipped codec."""
    source = sample_paths()[2]  # chelsea
    with Image.open(source) as image:
        original = np.asarray(image.convert("RGB"))
    codes = tmp_path / "codes"
    codes.mkdir()
    models = {"default": "codec", "high": "codec-high-rate"}
    for prefix, model in models.items():
        out = tmp_path / prefix
        done = latentpress("compress", "--model", model, "--quality", "100", source, "-o", str(out))
        assert done.returncode == 0, done.stderr
        (code,) = out.glob("*.lpc")
        code.rename(codes / f"{prefix}-{code.name}")
    done = latentpress("decompress", *map(str, sorted(codes.glob("*.lpc"))), "-o", str(codes))
    assert done.returncode == 0, done.stderr
    quality = {}
    for prefix in models:
        (decoded,) = codes.glob(f"{prefix}-*.png")
        with Image.open(decoded) as image:
            quality[prefix] = psnr(original, np.asarray(image))
    assert quality["high"] > quality["default"] + 3.0, quality

    # a target past the default codec's top says which shipped codec reaches further
    done = latentpress("compress", "--target-psnr", "60", source, "-o", str(tmp_path / "t"))
    assert done.returncode == 0, done.stderr
    assert "missed the rate target" in done.stdout and "--model codec-high-rate" in done.stdout
    assert "bpp" in done.stdout.split("--model codec-high-rate")[1]  # the cards' measured spans


@pytest.fixture(scope="module")
def variable_rate_codec(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("variable") / "codec-vr"
    # seeded: the target searches below need rates and PSNRs that differ between the ends
    return export_untrained_codec(folder, "codec-vr", lmbdas=(0.0025, 0.01, 0.04), seed=3)


def test_a_variable_rate_codec_orders_its_rates_and_decodes_at_the_recorded_quality(
    variable_rate_codec,
):
    compressor = Compressor(variable_rate_codec)
    x = sample_crop("coffee.png", 120, 200)
    sizes = []
    for quality in (0.0, 37.5, 100.0):
        data = compressor.compress(x, quality=quality)
        assert CodeFile.from_bytes(data).quality == quality
        decoded = compressor.decompress(data)  # no quality given: the header has it
        reference = compressor.reconstruct(x, quality)
        assert np.abs(decoded.astype(int) - reference.astype(int)).max() <= 1
        sizes.append(len(data))
    # an untrained codec: the middle rate may tie a neighbour on a small crop, the ends may not
    assert sizes[0] <= sizes[1] <= sizes[2] and sizes[0] < sizes[2]
    assert CodeFile.from_bytes(compressor.compress(x)).quality == 50.0  # medium by default


@pytest.fixture(scope="module")
def one_rate_codec(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("one-rate") / "codec-1"
    return export_untrained_codec(folder, "codec-1")


def test_version_1_and_2_code_files_still_decode(one_rate_codec, compressor):
    """Files written before format 3 (floating-point hyperprior) decode through the
    signatures that wrote them, on a machine like the writer's: to the same image the
    writer's own decoder gave (its synthesize signature)."""
    for codec, quality, version in ((Compressor(one_rate_codec), None, 1), (compressor, 50.0, 2)):
        x = sample_crop("astronaut.png", 64, 96)
        old = legacy_code_file(codec, x, quality, version)
        assert CodeFile.from_bytes(old).version == version
        decoded = codec.decompress(old)
        rate = (tf.constant(quality),) if codec.variable_rate else ()
        latents = codec.module.analyze(tf.constant(x), *rate)
        synthesize = [latents["y_hat"], *rate]
        if codec.mean_scale:
            synthesize.append(latents["z_hat"])
        expected = codec.module.synthesize(*synthesize, 64, 96)["image"].numpy()
        np.testing.assert_array_equal(decoded, expected)


def test_a_version_2_file_whose_hyperprior_differs_here_says_what_to_do(compressor):
    x = sample_crop("astronaut.png", 64, 96)
    data = bytearray(legacy_code_file(compressor, x, 50.0))
    data[26:30] = struct.pack(">I", 12345)  # the index checksum another machine would get
    data[-4:] = struct.pack(">I", zlib.crc32(bytes(data[:-4])))
    with pytest.raises(CodeFileError, match="decode it on a machine like that one"):
        compressor.decompress(bytes(data))


def test_a_version_1_file_given_to_a_variable_rate_codec_is_a_clear_error(
    compressor, one_rate_codec
):
    assert compressor.variable_rate  # the shipped codec
    version_1 = bytearray(
        legacy_code_file(
            Compressor(one_rate_codec), sample_crop("astronaut.png", 64, 96), version=1
        )
    )
    version_1[5:13] = bytes.fromhex(compressor.fingerprint)
    version_1[-4:] = struct.pack(">I", zlib.crc32(bytes(version_1[:-4])))
    with pytest.raises(CodeFileError, match="no quality"):
        compressor.decompress(bytes(version_1))


def test_quality_on_the_command_line(latentpress, variable_rate_codec, tmp_path, capfd):
    source = sample_paths()[2]
    done = latentpress(
        "compress", "--model", variable_rate_codec, "--quality", "30", source, "-o", str(tmp_path)
    )
    assert done.returncode == 0, done.stderr
    (code,) = tmp_path.glob("*.lpc")
    assert CodeFile.from_bytes(code.read_bytes()).quality == 30.0
    done = latentpress(
        "decompress", "--model", variable_rate_codec, str(code), "-o", str(tmp_path / "d")
    )
    assert done.returncode == 0, done.stderr
    # the refusals, in this process (the command's own exit path ran above)
    from pipelines import compress

    one_rate = export_untrained_codec(tmp_path / "one", "one")
    for model, bad, message in (
        (variable_rate_codec, "150", "number 0-100"),
        (variable_rate_codec, "best", "number 0-100"),
        (one_rate, "40", "single rate"),
    ):
        flags = ["--model", model, "--quality", bad, source, "-o", str(tmp_path / "x")]
        assert compress.main(flags) != 0
        assert message in capfd.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_psnr_target_gets_the_lowest_quality_that_reaches_it(variable_rate_codec):
    compressor = Compressor(variable_rate_codec)
    x = sample_crop("chelsea.png", 96, 128)

    def psnr_at(quality):
        return psnr(x, compressor.reconstruct(x, quality))

    target = (psnr_at(0.0) + psnr_at(100.0)) / 2
    quality, met = compressor.choose_quality(x, target_psnr=target)
    assert met and 0 < quality < 100
    assert psnr_at(quality) >= target
    assert psnr_at(quality - 100 / 2**7) < target  # one bisection step lower misses it
    assert compressor.choose_quality(x, target_psnr=99.0) == (100.0, False)


def test_a_bpp_target_gets_the_highest_quality_within_it(variable_rate_codec):
    compressor = Compressor(variable_rate_codec)
    x = sample_crop("chelsea.png", 96, 128)

    def bpp_at(quality):
        return bits_per_pixel(len(compressor.compress(x, quality=quality)), 96 * 128)

    target = (bpp_at(0.0) + bpp_at(100.0)) / 2
    quality, met = compressor.choose_quality(x, target_bpp=target)
    assert met and bpp_at(quality) <= target < bpp_at(quality + 100 / 2**7)
    assert compressor.choose_quality(x, target_bpp=0.001) == (0.0, False)


@pytest.mark.parametrize("lmbdas", [(), (0.0025, 0.04)], ids=["one rate", "variable rate"])
def test_a_mean_scale_codec_codes_the_residuals_and_decodes_what_the_model_does(tmp_path, lmbdas):
    """The code holds round(y - mean); decoding adds the means back from z_hat, so the file
    decodes to the Keras model's own quantized reconstruction."""
    from models.codec import CodecConfig, ScaleHyperprior, pad_to_multiple
    from models.export import CODEC, export_model

    # Seeded: the exact fixed-point means may round a latent lying within ~0.01 of a half
    # differently from the float model, and an unseeded draw (whatever ran before in the
    # process) occasionally put one there (seen once under xdist: a pixel off by 6).
    keras.utils.set_random_seed(7)
    config = CodecConfig(num_filters=16, latent_filters=24, lmbdas=lmbdas, mean_scale=True)
    model = ScaleHyperprior(config)
    model.build_for_images()
    means_bias = model.hyper_synthesis_transform.layers[-1].bias  # scales, then means
    offsets = np.random.default_rng(3).normal(0.0, 3.0, 24)
    means_bias.assign(np.concatenate([means_bias.numpy()[:24], offsets]))
    export_model(model, CODEC, str(tmp_path / "mean"), {"name": "mean"})
    compressor = Compressor(str(tmp_path / "mean"))
    x = sample_crop("chelsea.png", 61, 97)
    quality = 100.0 if lmbdas else None
    latents = compressor.analyze(x, quality)
    assert np.abs(compressor.means(latents)).max() > 0.5  # an untrained h_s: means that matter

    decoded = compressor.decompress(compressor.compress(x, quality=quality))
    padded = pad_to_multiple(tf.constant(x[np.newaxis], tf.float32) / 255.0)
    q = tf.constant([quality], tf.float32) if lmbdas else None
    _, _, _, x_hat = model(padded, training=False, quality=q)
    own = np.clip(np.round(x_hat.numpy()[0, :61, :97] * 255.0), 0, 255)
    assert np.abs(decoded.astype(int) - own.astype(int)).max() <= 1


def export_context_codec(folder: Path, seed: int, **context):
    """A small variable-rate mean-scale codec with ``context`` (slices=, checkerboard=) whose
    context networks are random, not zero, so they move the scales and means they refine:
    (model, export dir)."""
    from models.codec import CodecConfig, ScaleHyperprior
    from models.export import CODEC, export_model

    config = CodecConfig(
        num_filters=16, latent_filters=24, lmbdas=(0.0025, 0.04), mean_scale=True, **context
    )
    keras.utils.set_random_seed(seed)  # its weights must not depend on the tests run before
    model = ScaleHyperprior(config)
    model.build_for_images()
    rng = np.random.default_rng(seed)
    for weight in model.context_weights():
        weight.assign(rng.normal(0.0, 0.1, weight.shape))
    directory = str(folder / "codec")
    export_model(model, CODEC, directory, {"name": folder.name})
    return model, directory


@pytest.fixture(scope="module")
def slice_codec(tmp_path_factory):
    """3 channel slices."""
    return export_context_codec(tmp_path_factory.mktemp("slices"), 5, slices=3)


def test_a_slice_codec_decodes_what_the_model_does_and_its_file_is_its_rate(slice_codec):
    """Slices are coded one after the other, each with scales from the slices before it: the
    file decodes to the Keras model's own reconstruction, and its y stream is the model's
    estimated rate (a decoder using other scales than the encoder's would fail or bloat)."""
    from models.codec import pad_to_multiple

    model, directory = slice_codec
    compressor = Compressor(directory)
    x = sample_crop("chelsea.png", 61, 97)
    latents = compressor.analyze(x, 100.0)
    # The context moves the slices' means and scales away from the hyperprior's alone.
    z = tf.constant(latents.z_hat[np.newaxis], tf.float32)
    assert (latents.indexes != model.scale_indexes(z).numpy()[0]).any()
    hyperprior_means = model.means(z).numpy()[0, ..., 8:16]
    assert np.abs(latents.means[..., 8:16] - hyperprior_means).mean() > 0.01

    data = compressor.compress(x, quality=100.0)
    decoded = compressor.decompress(data)
    padded = pad_to_multiple(tf.constant(x[np.newaxis], tf.float32) / 255.0)
    _, bpp, _, x_hat = model(padded, training=False, quality=tf.constant([100.0]))
    own = np.clip(np.round(x_hat.numpy()[0, :61, :97] * 255.0), 0, 255)
    assert np.abs(decoded.astype(int) - own.astype(int)).max() <= 1
    code = compressor.parse(data)
    stream_bits = 8 * (len(code.y_stream) + len(code.z_stream))
    estimated_bits = float(bpp) * padded.shape[1] * padded.shape[2]
    assert abs(stream_bits - estimated_bits) < 0.1 * estimated_bits + 64


@pytest.mark.parametrize("codec", ["slice_codec", "checkerboard_codec"])
def test_a_context_codec_file_decodes_the_same_in_a_fresh_process(
    latentpress, codec, request, tmp_path
):
    _, directory = request.getfixturevalue(codec)
    source = sample_paths()[1]
    done = latentpress(
        "compress", "--model", directory, "--quality", "70", source, "-o", str(tmp_path)
    )
    assert done.returncode == 0, done.stderr
    (code,) = tmp_path.glob("*.lpc")
    out = tmp_path / "decoded"
    done = latentpress_process("decompress", "--model", directory, str(code), "-o", str(out))
    assert done.returncode == 0, done.stderr
    (png,) = out.glob("*.png")
    here = Compressor(directory).decompress(code.read_bytes())
    np.testing.assert_array_equal(np.asarray(Image.open(png)), here)


@pytest.fixture(scope="module")
def checkerboard_codec(tmp_path_factory):
    """A checkerboard context."""
    return export_context_codec(tmp_path_factory.mktemp("checkerboard"), 6, checkerboard=True)


def test_a_checkerboard_codec_decodes_what_the_model_does_and_its_file_is_its_rate(
    checkerboard_codec,
):
    """Anchors first, from the hyperprior; then the others, with scales and means from the
    decoded anchors around them, over more than one stripe of latent rows (a stripe's
    context reads the rows beyond it).  The decoder reads back exactly the encoder's
    latents, they are the Keras model's (but where fixed point rounds a scale or a mean the
    other way), and the file's streams are the model's estimated rate."""
    from models.codec import anchor_mask, pad_to_multiple
    from models.codefile import STRIPE_ROWS

    model, directory = checkerboard_codec
    compressor = Compressor(directory)
    x = sample_crop("coffee.png", 16 * STRIPE_ROWS + 37, 211)  # two stripes
    latents = compressor.analyze(x, 100.0)
    z = tf.constant(latents.z_hat[np.newaxis], tf.float32)
    anchors = anchor_mask(*latents.indexes.shape[:2]).numpy()[0, ..., 0] == 1
    hyperprior = model.scale_indexes(z).numpy()[0]
    np.testing.assert_array_equal(latents.indexes[anchors], hyperprior[anchors])
    assert (latents.indexes[~anchors] != hyperprior[~anchors]).mean() > 0.1
    means = model.means(z).numpy()[0]
    np.testing.assert_allclose(latents.means[anchors], means[anchors], atol=1e-3)
    assert np.abs(latents.means[~anchors] - means[~anchors]).mean() > 0.01

    padded = pad_to_multiple(tf.constant(x[np.newaxis], tf.float32) / 255.0)
    quality = tf.constant([100.0])
    y = model.analyze(padded, quality)
    index, mean = model.hyperprior(z)
    own_code = model.code_checkerboard(index, mean, y=y)[2].numpy()[0]
    rows, cols = latents.coded
    assert (own_code[:rows, :cols] != latents.code[:rows, :cols]).mean() < 0.005

    data = compressor.compress(x, quality=100.0)
    decoded = compressor.decode_latents(compressor.parse(data))
    for name in ("code", "indexes", "means"):
        np.testing.assert_array_equal(getattr(decoded, name), getattr(latents, name))
    bpp = model(padded, training=False, quality=quality)[1]
    code = compressor.parse(data)
    stream_bits = 8 * (len(code.y_stream) + len(code.z_stream))
    estimated_bits = float(bpp) * padded.shape[1] * padded.shape[2]
    assert abs(stream_bits - estimated_bits) < 0.05 * estimated_bits + 64


def test_level_scale_offsets_shift_the_coded_scales_by_the_quality(tmp_path):
    """A codec with level scale offsets codes every latent at its scale position plus its
    quality's offset (here 0 at quality 0, 3 at 100): the same files as without at quality
    0, indexes 3 higher (the table's end aside) at 100, the decoder reading them back from
    the file's quality, and the model's estimated rate shifted alike."""
    from models.codec import CodecConfig, ScaleHyperprior, pad_to_multiple
    from models.export import CODEC, export_model

    config = CodecConfig(
        num_filters=16, latent_filters=24, lmbdas=(0.0025, 0.04), level_scale_offsets=True
    )
    keras.utils.set_random_seed(7)
    model = ScaleHyperprior(config)
    model.build_for_images()
    export_model(model, CODEC, str(tmp_path / "zero"), {"name": "zero"})
    model.scale_offsets.assign([0.0, 3.0])
    export_model(model, CODEC, str(tmp_path / "three"), {"name": "three"})
    zero, three = Compressor(str(tmp_path / "zero")), Compressor(str(tmp_path / "three"))
    # the image's own offset and coding shape aside (they would make up for the level's)
    zero.search_scale_offset = three.search_scale_offset = False
    zero.coding_shapes = three.coding_shapes = (0,)
    x = sample_crop("chelsea.png", 61, 97)
    files = [c.parse(c.compress(x, quality=0.0)) for c in (zero, three)]
    assert files[0].y_stream == files[1].y_stream  # other model names in the headers
    before, after = zero.analyze(x, 100.0), three.analyze(x, 100.0)
    np.testing.assert_array_equal(after.indexes, np.minimum(before.indexes.astype(int) + 3, 63))
    data = three.compress(x, quality=100.0)
    decoded = three.decode_latents(three.parse(data))
    np.testing.assert_array_equal(decoded.code, after.code)
    np.testing.assert_array_equal(decoded.indexes, after.indexes)
    padded = pad_to_multiple(tf.constant(x[np.newaxis], tf.float32) / 255.0)
    bpp = float(model(padded, training=False, quality=tf.constant([100.0]))[1])
    code = three.parse(data)
    stream_bits = 8 * (len(code.y_stream) + len(code.z_stream))
    estimated_bits = bpp * padded.shape[1] * padded.shape[2]
    assert abs(stream_bits - estimated_bits) < 0.05 * estimated_bits + 64


def test_the_encoder_writes_the_image_scale_offset_that_codes_it_in_fewest_bits():
    """Format 5: the encoder weighs every image scale offset (quarter steps of the scale
    table) by the exact model's tables and writes the best in the header; the decoder shifts
    every scale by it.  On a smooth crop at the top quality the shipped high-rate codec's
    scales are off, so an offset is chosen, its file is smaller than without it, and both
    decode to the same pixels; a header whose offset is changed does not decode."""
    import models.codefile as codefile

    compressor = Compressor("codec-high-rate")
    x = sample_crop("astronaut.png", 192, 256)
    y = compressor.latents(x, 100.0)
    z_hat = compressor.side_information(y)
    chosen = compressor.code_latents(y, z_hat, x.shape[:2], 100.0)
    assert chosen.scale_offset != 0

    compressor.search_scale_offset = False
    plain = compressor.code_latents(y, z_hat, x.shape[:2], 100.0)
    assert plain.scale_offset == 0
    files = [compressor.encode(latents, 192, 256, 3, 100.0) for latents in (chosen, plain)]
    assert codefile.CodeFile.from_bytes(files[0]).scale_offset == chosen.scale_offset
    assert len(files[0]) < len(files[1])
    np.testing.assert_array_equal(compressor.decompress(files[0]), compressor.decompress(files[1]))

    with pytest.raises(CodeFileError, match="corrupted"):
        compressor.decompress(_with_header_field(files[0], -2, chosen.scale_offset + 1))


def _with_header_field(data: bytes, field: int, value) -> bytes:
    """A format-6 code file with one header field changed (and a valid checksum)."""
    header = struct.Struct(">4sB8s8sIIBfIIIBbB")
    fields = list(header.unpack_from(data))
    fields[field] = value
    body = header.pack(*fields) + data[header.size : -4]
    return body + zlib.crc32(body).to_bytes(4, "big")


def test_the_encoder_codes_the_latents_with_the_shape_that_codes_them_in_fewest_bits():
    """Format 6: the encoder weighs Student's t shapes beside the codec's Gaussian (each with
    its best scale offset) and writes the best in the header; the decoder reads the latents
    with that shape's tables.  At the top quality the shipped codec's latents have heavier
    tails than a Gaussian: a t is chosen, its file is smaller than the Gaussian's and decodes
    to the same pixels; a header naming another shape is read with its tables (other latents,
    or a stream those tables cannot read), and one naming no shape is refused."""
    import models.codefile as codefile

    compressor = Compressor("codec-high-rate")
    x = sample_crop("astronaut.png", 192, 256)
    y = compressor.latents(x, 100.0)
    z_hat = compressor.side_information(y)
    chosen = compressor.code_latents(y, z_hat, x.shape[:2], 100.0)
    assert chosen.coding_shape in exact.SHAPE_DEGREES

    compressor.coding_shapes = (0,)
    gaussian = compressor.code_latents(y, z_hat, x.shape[:2], 100.0)
    assert gaussian.coding_shape == 0
    np.testing.assert_array_equal(chosen.code, gaussian.code)  # the same integers, coded
    files = [compressor.encode(latents, 192, 256, 3, 100.0) for latents in (chosen, gaussian)]
    assert codefile.CodeFile.from_bytes(files[0]).coding_shape == chosen.coding_shape
    assert len(files[0]) < len(files[1])
    np.testing.assert_array_equal(compressor.decompress(files[0]), compressor.decompress(files[1]))

    other = next(shape for shape in exact.SHAPE_DEGREES if shape != chosen.coding_shape)
    try:
        misread = compressor.decode_latents(
            compressor.parse(_with_header_field(files[0], -1, other))
        )
    except CodeFileError as error:
        assert "entropy decoding failed" in str(error)
    else:
        assert (misread.code != chosen.code).any()
    with pytest.raises(CodeFileError, match="unknown coding shape 200"):
        compressor.decompress(_with_header_field(files[0], -1, 200))


def test_a_codec_with_3x3_kernels_codes_and_decodes_and_its_card_says_so(tmp_path):
    """--kernel-size 3 (wider transforms at the same speed): the card records it, the model
    the card describes has 3x3 transforms, and its code files decode at both ends of the
    quality range, the higher quality the larger file."""
    from models.codec import CodecConfig, ScaleHyperprior

    folder = export_untrained_codec(
        tmp_path / "k3", "k3", lmbdas=(0.005, 0.02), seed=3, kernel_size=3
    )
    config = CodecConfig.from_card(json.loads((Path(folder) / "model_card.json").read_text()))
    assert config.kernel_size == 3
    old_card = CodecConfig.from_card({"config": {"num_filters": 64}})
    assert old_card.kernel_size == old_card.latent_kernel_size == 5  # cards before either
    assert config.latent_kernel_size == 3  # no coarse_kernel_size: the kernel size
    model = ScaleHyperprior(config)
    model.build_for_images()
    for transform in (model.analysis_transform, model.synthesis_transform):
        assert {layer.kernel.shape[:2] for layer in transform.layers if "layer" in layer.name} == {
            (3, 3)
        }
    compressor = Compressor(folder)
    x = sample_crop("coffee.png", 96, 130)
    low, high = (compressor.compress(x, quality=q) for q in (0.0, 100.0))
    assert len(low) < len(high)
    assert compressor.decompress(high).shape == x.shape


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_the_decoders_sub_pixel_last_layer_computes_the_transposed_convolution(kernel_size):
    """Inference runs g_s's last layer as one convolution to 4x3 outputs and depth_to_space
    (faster on CPU); it must give what the trained transposed convolution gives, on sides
    that are not powers of two, and training keeps the layer itself."""
    from models.codec import CodecConfig, ScaleHyperprior

    keras.utils.set_random_seed(11)
    config = CodecConfig(16, 24, lmbdas=(0.01, 0.04), mean_scale=True, kernel_size=kernel_size)
    model = ScaleHyperprior(config)
    model.build_for_images()
    last = model.synthesis_transform.layers[-1]
    last.bias.assign(tf.random.normal(last.bias.shape))  # Keras starts it at zero
    y_hat = tf.random.normal([2, 5, 7, 24])
    expected = model.synthesis_transform(y_hat)
    decoded = model.synthesis_transform.decode(y_hat)
    assert decoded.shape == expected.shape == (2, 80, 112, 3)
    np.testing.assert_allclose(decoded, expected, atol=1e-5)
    assert float(tf.reduce_max(tf.abs(expected))) > 0.1  # not two zero images
