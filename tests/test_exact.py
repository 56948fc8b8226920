"""Format 3 decodes the same everywhere: the exact entropy model's integers, tiles that change
nothing but rounding, odd sizes, and real decodes with other kernels and thread counts."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from latentpress.samples import sample_paths
from models import compressor as compressor_module
from models import exact
from models.compressor import Compressor
from models.inference import psnr

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compressor():
    return Compressor()


def _photo(height: int, width: int) -> np.ndarray:
    from PIL import Image

    path = next(p for p in sample_paths() if p.endswith("astronaut.png"))
    image = np.asarray(Image.open(path).convert("RGB"))
    return np.ascontiguousarray(np.resize(image, (height, width, 3)).astype(np.uint8))


def _side(compressor: Compressor, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """A z_hat like a photograph's: small integers, mostly zero."""
    channels = compressor.exact.z_frequencies.shape[0]
    rng = np.random.default_rng(seed)
    return np.round(rng.laplace(0.0, 1.5, (rows, cols, channels))).astype(np.int32)


def _integer_reference(model: exact.ExactModel, z_hat: np.ndarray) -> np.ndarray:
    """h_s in Python integers' int64 arithmetic (no floating point at all): what the float64
    implementation must equal bit for bit."""
    x = z_hat.astype(np.int64) << exact.ACTIVATION_BITS
    layers = model.networks["hyper_synthesis"]
    for j, layer in enumerate(layers):
        kernel = layer["kernel"].astype(np.int64)
        size, stride = kernel.shape[0], int(layer["stride"])
        height, width = x.shape[:2]
        if bool(layer["transposed"]):
            before = (size - stride) // 2
            full = np.zeros(
                (stride * (height - 1) + size, stride * (width - 1) + size, kernel.shape[3]),
                np.int64,
            )
            for dy in range(size):
                for dx in range(size):
                    full[dy : dy + stride * height : stride, dx : dx + stride * width : stride] += (
                        np.einsum("hwc,cd->hwd", x, kernel[dy, dx])
                    )
            x = full[before : before + stride * height, before : before + stride * width]
        else:
            pad = (size - 1) // 2
            padded = np.pad(x, ((pad, size - 1 - pad), (pad, size - 1 - pad), (0, 0)))
            out = np.zeros((height, width, kernel.shape[3]), np.int64)
            for dy in range(size):
                for dx in range(size):
                    out += np.einsum(
                        "hwc,cd->hwd", padded[dy : dy + height, dx : dx + width], kernel[dy, dx]
                    )
            x = out
        x = x + layer["bias"].astype(np.int64)
        shift = int(layer["shift"])
        if j + 1 < len(layers):
            x = (np.maximum(x, 0) + (1 << (shift - 1))) >> shift  # ReLU, round half up
    return (x + (1 << (shift - 1))) >> shift


def test_the_exact_hyperprior_is_integer_arithmetic_whatever_the_summation(compressor):
    """float64 on integer values is exact: the result equals pure int64 arithmetic, and a
    different summation order (input channels permuted, as another kernel or device might
    sum) gives the same bits.  The same permutation moves a float32 computation's last
    bits: that is what sank format 2 on other machines."""
    model = compressor.exact
    z_hat = _side(compressor, 5, 6)
    positions, means = model.hyperprior(z_hat)
    reference = _integer_reference(model, z_hat)
    size = model.latent_filters
    np.testing.assert_array_equal(positions, reference[..., :size])
    np.testing.assert_array_equal(means, reference[..., size:])

    permuted = exact.ExactModel(dict(model.arrays))
    order = np.random.default_rng(1).permutation(z_hat.shape[-1])
    first = permuted.networks["hyper_synthesis"][0]
    first["kernel"] = first["kernel"][:, :, order]
    again = permuted.hyperprior(z_hat[..., order])
    np.testing.assert_array_equal(again[0], positions)
    np.testing.assert_array_equal(again[1], means)

    # The same permutation on a float32 layer (real-valued weights, as a float network has)
    # changes results in their last bits: the test would fail for a floating-point design.
    weights = np.random.default_rng(2).normal(0.0, 0.1, (z_hat.shape[-1], 256)).astype(np.float32)
    inputs = z_hat.reshape(-1, z_hat.shape[-1]).astype(np.float32)
    in_order = np.add.reduce(inputs[:, :, None] * weights[None], axis=1, dtype=np.float32)
    reordered = np.add.reduce(
        inputs[:, order, None] * weights[None, order], axis=1, dtype=np.float32
    )
    assert not np.array_equal(in_order, reordered)


def test_the_exact_model_follows_the_float_network_it_was_made_from(compressor):
    """The fixed point is a close copy of the trained h_s (so a trained codec converts
    without retraining): positions within 0.05 of a scale step, the same index almost
    everywhere, means within 0.05."""
    from models.codec import CodecConfig, ScaleHyperprior
    from models.export import read_weights

    config = {
        k: tuple(v) if isinstance(v, list) else v for k, v in compressor.card["config"].items()
    }
    model = ScaleHyperprior(CodecConfig(**config))
    model.build_for_images()
    read_weights(model, compressor.model_dir)
    z_hat = _side(compressor, 6, 8, seed=2)
    positions, means = compressor.exact.hyperprior(z_hat)
    float_positions, float_means = model.hyperprior(tf.constant(z_hat[np.newaxis], tf.float32))
    float_positions, float_means = float_positions.numpy()[0], float_means.numpy()[0]
    assert np.abs(exact.ExactModel.to_real(positions) - float_positions).max() < 0.05
    assert np.abs(exact.ExactModel.to_real(means) - float_means).max() < 0.05
    same = compressor.exact.indexes(positions) == np.clip(np.round(float_positions), 0, 63)
    assert same.mean() > 0.995


def test_stripes_of_the_exact_hyperprior_equal_the_whole(compressor):
    z_hat = _side(compressor, 9, 4, seed=3)
    whole = compressor.exact.hyperprior(z_hat)
    rows = z_hat.shape[0] * 4
    for top, end in ((0, 5), (5, 21), (16, 32), (30, rows)):
        positions, means = compressor._hyperprior_rows(z_hat, top, end)
        np.testing.assert_array_equal(positions, whole[0][top:end])
        np.testing.assert_array_equal(means, whole[1][top:end])


def test_tiles_change_only_the_rounding(compressor, monkeypatch):
    """An image coded in 128-pixel tiles gives (nearly) the code of one whole tile and the
    same picture: no seams (the halo covers the transforms' receptive field)."""
    x = _photo(300, 500)
    whole = compressor.analyze(x, 50.0)
    whole_image = compressor.synthesize(whole, 300, 500, 50.0)
    monkeypatch.setattr(compressor_module, "TILE", 128)
    tiled = compressor.analyze(x, 50.0)
    assert (tiled.code != whole.code).mean() < 1e-4
    tiled_image = compressor.synthesize(tiled, 300, 500, 50.0)
    assert psnr(whole_image, tiled_image) > 50.0
    # the tile boundaries (rows/columns 128, 256, ...) are no worse than the rest
    assert psnr(x, tiled_image) == pytest.approx(psnr(x, whole_image), abs=0.02)


@pytest.mark.parametrize(("height", "width"), [(1, 1), (7, 3000), (3000, 7), (65, 1025)])
def test_odd_and_tile_boundary_sizes_round_trip(compressor, height, width):
    x = _photo(height, width)
    data = compressor.compress(x, quality=50.0)
    decoded = compressor.decompress(data)
    assert decoded.shape == x.shape
    np.testing.assert_array_equal(decoded, compressor.reconstruct(x, 50.0))


_DECODE = """
import sys, hashlib, numpy as np
import tensorflow as tf
threads = int(sys.argv[3])
tf.config.threading.set_intra_op_parallelism_threads(threads)
tf.config.threading.set_inter_op_parallelism_threads(threads)
from models.compressor import Compressor
c = Compressor()
code = c.parse(open(sys.argv[1], "rb").read())
latents = c.decode_latents(code)
np.save(sys.argv[2], c.synthesize(latents, code.height, code.width, code.quality))
parts = (latents.code, latents.indexes, c.means(latents))
print(hashlib.sha256(b"".join(part.tobytes() for part in parts)).hexdigest())
"""


@pytest.mark.parametrize("threads", [1, 2])
def test_a_file_decodes_the_same_with_other_kernels_and_threads(compressor, tmp_path, threads):
    """Written here with oneDNN's kernels, decoded in fresh processes with TensorFlow's plain
    kernels (TF_ENABLE_ONEDNN_OPTS=0): the very same latents, and an image within float
    rounding of this process's decode."""
    import hashlib

    x = _photo(200, 300)
    path = tmp_path / "photo.lpc"
    path.write_bytes(compressor.compress(x, quality=100.0))
    latents = compressor.decode_latents(compressor.parse(path.read_bytes()))
    here = compressor.synthesize(latents, 200, 300, 100.0)
    parts = (latents.code, latents.indexes, compressor.means(latents))
    digest = hashlib.sha256(b"".join(part.tobytes() for part in parts)).hexdigest()
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = tmp_path / "there.npy"
    done = subprocess.run(
        [sys.executable, "-c", _DECODE, str(path), str(out), str(threads)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == digest
    assert psnr(here, np.load(out)) > 50.0


def test_side_information_in_stripes_is_the_whole_images(compressor):
    """h_a runs in stripes of 64 latent rows with 16 rows of context: the same z_hat as one
    call on the whole y, up to float rounding."""
    y = compressor.latents(_photo(1300, 200), 50.0)
    whole = compressor.module.hyper_analysis(tf.constant(y))["z_hat"].numpy()
    striped = compressor.side_information(y)
    assert striped.shape == whole.shape
    assert (striped != whole).mean() < 1e-3


# Format 6's coding shapes are part of the format: a machine that built other integers would
# decode files wrongly.  SHA-256 (16 hex digits) of each shape's tables, as little-endian int64.
_SHAPE_TABLES = {
    1: "12a3d52fa70a3bd7",
    2: "7f2f6cb1ab9395e4",
    3: "c09f43a560b94ad8",
    4: "25bea0b3b599f3cf",
}


def _scalar_lower_tail(x: float, degrees: int) -> float:
    """``exact._student_t_lower_tail`` in Python floats, one operation at a time."""
    t = x / math.sqrt((degrees - 2) / degrees)
    spread = degrees + t * t
    xi, c = t / math.sqrt(spread), degrees / spread
    term = total = 1.0
    for j in range(1, degrees // 2):
        term = term * c * ((2 * j - 1) / (2 * j))
        total = total + term
    return 0.5 - 0.5 * xi * total


@pytest.mark.parametrize("shape", sorted(exact.SHAPE_DEGREES))
def test_student_t_coding_tables_are_the_distribution_and_the_same_everywhere(shape):
    """Each row is Student's t of its scale (unit variance times the scale table's value)
    quantized to the integers, to within the tables' precision (scipy's distribution
    function); every symbol at least 1, rows summing to 2**24, symmetric.  The integers come
    from +, -, *, /, sqrt alone, which IEEE-754 rounds the same everywhere: NumPy's vectorized
    build equals one scalar operation at a time, and the pinned digest."""
    import hashlib

    from scipy import stats

    from models.entropy_models import scale_table

    degrees = exact.SHAPE_DEGREES[shape]
    tables = exact.student_t_tables(64, 2048, degrees)
    assert tables.min() >= 1 and (tables.sum(axis=1) == 2**exact.TABLE_BITS).all()
    np.testing.assert_array_equal(tables, tables[:, ::-1])
    scales = scale_table() * np.sqrt((degrees - 2) / degrees)
    symbols = np.arange(-2048, 2049)[np.newaxis]
    pmf = stats.t.cdf((symbols + 0.5) / scales[:, np.newaxis], degrees) - stats.t.cdf(
        (symbols - 0.5) / scales[:, np.newaxis], degrees
    )
    # every symbol has 1 besides its floored share of the rest (symbol -2048 holds the tail)
    spare = 2**exact.TABLE_BITS - 4097
    np.testing.assert_allclose((tables[:, 1:2048] - 1) / spare, pmf[:, 1:2048], atol=1.0 / spare)
    for row in (0, 31, 63):  # the first, a middle and the last scale, scalar arithmetic
        scale = exact._SCALE_FIRST
        for _ in range(row):
            scale = scale * exact._SCALE_STEP
        below = [
            math.floor(_scalar_lower_tail((k + 0.5) / scale, degrees) * spare) for k in range(2048)
        ]
        below = np.maximum(np.minimum.accumulate(np.array(below, np.int64)), 0)
        # symbols -1 .. -2047, then -2048 (the folded tail)
        np.testing.assert_array_equal(below[:-1] - below[1:] + 1, tables[row, 2047:0:-1])
        assert below[-1] + 1 == tables[row, 0]
    digest = hashlib.sha256(np.ascontiguousarray(tables, "<i8").tobytes()).hexdigest()[:16]
    assert digest == _SHAPE_TABLES[shape]
