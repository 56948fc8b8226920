"""The exact entropy model: what decides the range coder's distributions, in integers.

A code file decodes only if the decoder computes the same coding distributions as the
encoder did.  Computed in floating point (TensorFlow's h_s), they differ in the last bits
between kernels (oneDNN or Eigen), thread counts, CPU families, GPUs and TensorFlow versions,
and a last bit is enough to move a scale index and lose the photograph.  Here they are
integers on every machine (Ballé, Johnston, Minnen, "Integer Networks for Data Compression
with Latent-Variable Models", ICLR 2019):

* h_s (z_hat -> scale indexes and means) and, for a codec with channel slices or a
  checkerboard, the context networks run in fixed point: weights are integers
  (``WEIGHT_BITS`` significant bits per layer), activations integers at
  ``2**-ACTIVATION_BITS``, ReLU and a floor division by a power of two between layers.
  The arithmetic is NumPy float64 on integer values: every product and partial sum is an
  integer below 2**53 (``_limits`` proves it from the weights), so any summation order,
  BLAS, CPU or GPU gives the same exact result.
* The coding tables are integers too: z's per-channel frequencies and y's per-scale
  quantized Gaussian frequencies are computed once at export and stored; decoders only read
  them.

Everything lives in ``exact_entropy.npz`` beside the SavedModel; its ``identity`` (16 hex
digits of SHA-256 over the arrays) goes into every version-3 code file, so a file names the
exact model it needs.  Only the synthesis g_s stays floating point: its differences between
machines are pixel noise (measured: see the README), not a lost file.

The fixed point reproduces the float network closely (a fraction of a scale step), so a
trained codec converts without retraining; ``tests/test_exact.py`` checks both properties.
"""

from __future__ import annotations

import hashlib
import io
import os

import numpy as np
from scipy.special import ndtr

# Activations carry this many fraction bits; weights this many significant bits per layer.
ACTIVATION_BITS = 12
WEIGHT_BITS = 16
# Frequencies of every coding table sum to 2**TABLE_BITS (each symbol at least 1): at 24
# bits (constriction's own precision) the 4,097 symbols' floor costs ~0.0004 bits a latent;
# at 20 bits it cost 0.006, +0.0056 bpp on CBSD68.
TABLE_BITS = 24
EXACT_FILE = "exact_entropy.npz"
CHECKERBOARD = "checkerboard_entropy"
_EXACT_LIMIT = 2.0**52  # a safety factor of 2 below float64's exact-integer limit
# Network inputs (z_hat, or a slice context's positions, means and decoded latents) are
# clipped to +-2**12 in real units: beyond every coded range.
INPUT_LIMIT = 2.0 ** (12 + ACTIVATION_BITS)


class ExactModelError(ValueError):
    """An exact model that cannot be built or read."""


# --- building (at export) ------------------------------------------------------------------


def _layer(kernel: np.ndarray, bias: np.ndarray, transposed: bool, stride: int, relu: bool):
    """One fixed-point layer from a Keras layer's float weights: kernel as [k, k, in, out]."""
    if transposed:  # Conv2DTranspose keeps [k, k, out, in]
        kernel = np.transpose(kernel, (0, 1, 3, 2))
    largest = float(np.abs(kernel).max()) or 1.0
    # the largest weight gets WEIGHT_BITS significant bits: shift = weight fraction bits
    shift = int(WEIGHT_BITS - 1 - np.ceil(np.log2(largest)))
    return {
        "kernel": np.round(kernel.astype(np.float64) * 2.0**shift),
        "bias": np.round(bias.astype(np.float64) * 2.0 ** (shift + ACTIVATION_BITS)),
        "shift": shift,
        "transposed": transposed,
        "stride": stride,
        "relu": relu,
    }


def _network(keras_layers) -> list[dict]:
    import tf_keras as keras

    layers = []
    for layer in keras_layers:
        if not isinstance(layer, keras.layers.Conv2D):
            raise ExactModelError(f"no exact form for layer {layer.name}")
        activation = getattr(layer.activation, "__name__", "linear")
        if activation not in ("relu", "linear"):
            raise ExactModelError(f"no exact form for activation {activation}")
        layers.append(
            _layer(
                layer.kernel.numpy(),
                layer.bias.numpy(),
                isinstance(layer, keras.layers.Conv2DTranspose),
                int(layer.strides[0]),
                activation == "relu",
            )
        )
    return layers


def gaussian_tables(scales: np.ndarray, y_range: int) -> np.ndarray:
    """Integer frequencies [len(scales), 2 * y_range + 1] of a zero-mean Gaussian of each
    scale quantized to the integers -y_range..y_range (tails folded into the end symbols)."""
    k = np.arange(-y_range, y_range + 1, dtype=np.float64)
    upper = ndtr((k + 0.5)[np.newaxis] / scales[:, np.newaxis])
    lower = ndtr((k - 0.5)[np.newaxis] / scales[:, np.newaxis])
    upper[:, -1], lower[:, 0] = 1.0, 0.0
    return integer_frequencies(upper - lower)


def integer_frequencies(pmf: np.ndarray) -> np.ndarray:
    """Rows of probabilities -> integer frequencies >= 1 summing to 2**TABLE_BITS (the
    largest symbol of each row takes the rounding remainder)."""
    pmf = np.maximum(np.asarray(pmf, np.float64), 0.0)
    pmf = pmf / pmf.sum(axis=-1, keepdims=True)
    total = 2**TABLE_BITS
    counts = np.maximum(np.floor(pmf * (total - pmf.shape[-1])), 0).astype(np.int64) + 1
    rows = np.arange(counts.shape[0])
    counts[rows, np.argmax(pmf, axis=-1)] += total - counts.sum(axis=-1)
    if (counts < 1).any():
        raise ExactModelError("a coding table has more symbols than its precision holds")
    return counts


# --- coding shapes (code-file format 6) -------------------------------------------------------
# A code file may code its latents with Student's t instead of the codec's Gaussian: heavier
# tails, as a scale mixture of Gaussians has, which is what latents whose scale the
# hyperprior only estimates look like (CBSD68, per photograph the best of these: 0.7-0.9%
# fewer bits at qualities 0-80, 3.7% at 100).
# Only even degrees of freedom: their distribution function needs nothing but +, -, *, / and
# sqrt, which IEEE-754 rounds the same on every machine, so each decoder builds the same
# integer tables from the formula and none is stored.  A shape's number is part of the
# code-file format: never renumber one.  Shape 0 is the codec's own Gaussian tables.
SHAPE_DEGREES = {1: 4, 2: 6, 3: 10, 4: 20}
# The tables' scales: 0.11 * _SCALE_STEP**i, models.entropy_models.scale_table's geometric
# table by repeated multiplication (exp and pow may differ in a last bit between CPUs).
_SCALE_FIRST, _SCALE_STEP = 0.11, 1.1309463943519327


def student_t_parts(x, degrees: int, xp=np):
    """(xi, s) of Student's t of even ``degrees`` at x in units of its standard deviation (its
    scale is sqrt((degrees - 2) / degrees)): its distribution function is 1/2 + xi * s / 2,
    xi = t / sqrt(degrees + t^2), s = sum_j a_j c^j, c = degrees / (degrees + t^2),
    a_j = prod_{i<=j} (2i - 1) / 2i.  ``xp``: numpy here; tensorflow where training
    differentiates the same distribution (``entropy_models.student_t_likelihood``)."""
    t = x / np.sqrt((degrees - 2) / degrees)
    spread = degrees + t * t
    xi, c = t / xp.sqrt(spread), degrees / spread
    term = total = xp.ones_like(t)
    for j in range(1, degrees // 2):
        term = term * c * ((2 * j - 1) / (2 * j))
        total = total + term
    return xi, total


def _student_t_lower_tail(x: np.ndarray, degrees: int) -> np.ndarray:
    """P(T <= -x) for x >= 0 and even ``degrees``, of unit variance."""
    xi, total = student_t_parts(x, degrees)
    return 0.5 - 0.5 * xi * total


def student_t_tables(num_scales: int, y_range: int, degrees: int) -> np.ndarray:
    """Integer frequencies [num_scales, 2 * y_range + 1] of Student's t (``degrees`` even,
    unit variance times each scale) quantized to -y_range..y_range, tails folded into the end
    symbols; symmetric by construction.  Symbol -k counts the floor-scaled mass between
    -k - 1/2 and -k + 1/2, plus one; 0 takes what the others leave (at least 1)."""
    if degrees < 4 or degrees % 2:
        raise ExactModelError(f"no exact Student's t tables for {degrees} degrees of freedom")
    scales = [_SCALE_FIRST]
    for _ in range(num_scales - 1):
        scales.append(scales[-1] * _SCALE_STEP)
    edges = np.arange(y_range, dtype=np.float64) + 0.5  # |boundary| between k and k + 1
    tail = _student_t_lower_tail(edges[np.newaxis] / np.asarray(scales)[:, np.newaxis], degrees)
    spare = 2**TABLE_BITS - (2 * y_range + 1)
    below = np.floor(tail * spare).astype(np.int64)  # [scales, y_range] for -1/2 .. -y_range+1/2
    # far out the formula cancels to within ~1e-16: it may rise by a count or dip below 0
    below = np.maximum(np.minimum.accumulate(below, axis=1), 0)
    side = below - np.pad(below[:, 1:], ((0, 0), (0, 1))) + 1  # symbols -1 .. -y_range
    counts = np.concatenate([side[:, ::-1], np.zeros((num_scales, 1), np.int64), side], axis=1)
    counts[:, y_range] = 2**TABLE_BITS - counts.sum(axis=1)
    return counts


def build(model, z_pmf: np.ndarray, scale_table: np.ndarray, y_range: int) -> dict:
    """The exact model's arrays for a trained codec (``models.codec.ScaleHyperprior``)."""
    arrays = {
        "z_frequencies": integer_frequencies(z_pmf),
        "y_frequencies": gaussian_tables(np.asarray(scale_table, np.float64), y_range),
        "num_scales": np.int64(len(scale_table)),
        "latent_filters": np.int64(model.config.latent_filters),
        "mean_scale": np.int64(model.config.mean_scale),
        "slices": np.int64(model.config.slices),
    }
    networks = {"hyper_synthesis": model.hyper_synthesis_transform.layers}
    for i, network in enumerate(model.slice_entropy, 1):
        networks[f"slice_entropy_{i}"] = network.layers
    if model.config.level_scale_offsets:  # as fixed point; a key only where it is on
        offsets = model.scale_offsets.numpy().astype(np.float64)
        arrays["level_scale_offsets"] = np.round(offsets * 2.0**ACTIVATION_BITS).astype(np.int64)
    if model.config.checkerboard:  # the key only where it is on: earlier identities hold
        arrays["checkerboard"] = np.int64(1)
        networks[CHECKERBOARD] = model.checkerboard_entropy.layers
    for name, keras_layers in networks.items():
        for j, layer in enumerate(_network(keras_layers)):
            for key, value in layer.items():
                arrays[f"{name}/{j}/{key}"] = np.asarray(value)
    ExactModel(arrays)  # refuses a model whose sums could leave the exact range
    return arrays


def save(arrays: dict, model_dir: str) -> str:
    """Writes ``EXACT_FILE`` into ``model_dir``; returns the identity."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    with open(os.path.join(model_dir, EXACT_FILE), "wb") as handle:
        handle.write(buffer.getvalue())
    return identity(arrays)


def identity(arrays: dict) -> str:
    """16 hex digits of SHA-256 over the arrays (names, dtypes, shapes, little-endian bytes)."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        value = np.asarray(arrays[name])
        value = value.astype(value.dtype.newbyteorder("<"))
        digest.update(f"{name}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()[:16]


def load(model_dir: str) -> ExactModel | None:
    """The model directory's exact model, or None for a codec exported before it existed."""
    path = os.path.join(model_dir, EXACT_FILE)
    if not os.path.exists(path):
        return None
    with np.load(path) as data:
        return ExactModel({name: data[name] for name in data.files})


# --- integer arithmetic ---------------------------------------------------------------------


def _floor_shift(x: np.ndarray, bits: int) -> np.ndarray:
    """floor(x / 2**bits): exact in float64 for integer x (a power-of-two division)."""
    return np.floor(x * 2.0**-bits) if bits >= 0 else x * 2.0**-bits


def _round_shift(x: np.ndarray, bits: int) -> np.ndarray:
    """x / 2**bits rounded half up, exactly (a floor would bias every activation down)."""
    return _floor_shift(x + 2.0 ** (bits - 1), bits)


def _pad_rows_cols(x: np.ndarray, before: int, after: int) -> np.ndarray:
    return np.pad(x, ((before, after), (before, after), (0, 0)))


def _conv(x: np.ndarray, kernel: np.ndarray, stride: int) -> np.ndarray:
    """'same' convolution of x [H, W, C] (stride 1 only here) as one matmul over every kernel
    tap's shifted copy of x (half the time of a matmul per tap; sums of integers in float64
    are exact in any order, so the result is the same)."""
    if stride != 1:
        raise ExactModelError("exact strided convolutions are not needed by h_s")
    size = kernel.shape[0]
    height, width, channels = x.shape
    padded = _pad_rows_cols(x, (size - 1) // 2, size // 2)
    taps = [padded[dy : dy + height, dx : dx + width] for dy in range(size) for dx in range(size)]
    columns = np.concatenate(taps, axis=-1).reshape(height * width, size * size * channels)
    out = columns @ kernel.reshape(size * size * channels, kernel.shape[3])
    return out.reshape(height, width, kernel.shape[3])


def _deconv(x: np.ndarray, kernel: np.ndarray, stride: int) -> np.ndarray:
    """'same' transposed convolution (as tf.nn.conv2d_transpose): the adjoint of the strided
    'same' convolution, out[stride * i + t - before] += x[i] * w[t]."""
    size = kernel.shape[0]
    height, width = x.shape[:2]
    before = (size - stride) // 2  # the forward convolution's leading pad (TF: total // 2)
    full = np.zeros((stride * (height - 1) + size, stride * (width - 1) + size, kernel.shape[3]))
    for dy in range(size):
        for dx in range(size):
            full[dy : dy + stride * height : stride, dx : dx + stride * width : stride] += (
                x @ kernel[dy, dx]
            )
    return full[before : before + stride * height, before : before + stride * width]


class ExactModel:
    """The integer entropy model of one codec (arrays as written by ``build``)."""

    def __init__(self, arrays: dict):
        self.arrays = arrays
        self.identity = identity(arrays)
        self.z_frequencies = arrays["z_frequencies"]
        self.y_frequencies = arrays["y_frequencies"]
        self.num_scales = int(arrays["num_scales"])
        self.latent_filters = int(arrays["latent_filters"])
        self.mean_scale = bool(arrays["mean_scale"])
        self.slices = int(arrays["slices"])
        self.checkerboard = bool(arrays.get("checkerboard", 0))
        self.level_scale_offsets = arrays.get("level_scale_offsets")
        self._tables = {0: self.y_frequencies}
        self._bit_costs = {}
        self.networks = {}
        for name in {key.split("/")[0] for key in arrays if "/" in key}:
            count = len({key.split("/")[1] for key in arrays if key.startswith(name + "/")})
            self.networks[name] = [
                {
                    key: arrays[f"{name}/{j}/{key}"]
                    for key in ("kernel", "bias", "shift", "transposed", "stride", "relu")
                }
                for j in range(count)
            ]
        # what each layer's output is clipped to, the input's clip first
        self._limits = {name: _limits(layers) for name, layers in self.networks.items()}

    def _run(self, name: str, x: np.ndarray, rows: tuple[int, int] | None = None) -> np.ndarray:
        """Fixed-point network ``name`` on x (integers at 2**-ACTIVATION_BITS, [H, W, C]);
        returns its last layer's integer output at 2**-(ACTIVATION_BITS + shift), or only
        output ``rows`` [first, end) of it.  The last layer (h_s's: the most outputs, at the
        latents' resolution) then reads only the rows those need, so a stripe of the walk
        does not pay for its halo there (the same integers: the rows it reads are the ones
        the whole input gives)."""
        layers = self.networks[name]
        x = np.clip(x, -INPUT_LIMIT, INPUT_LIMIT)
        for j, layer in enumerate(layers):
            last = j + 1 == len(layers)
            offset = 0
            if last and rows is not None and int(layer["stride"]) == 1:
                size = layer["kernel"].shape[0]
                first = max(rows[0] - (size - 1) // 2, 0)
                x, offset = x[first : min(rows[1] + size // 2, x.shape[0])], first
            step = _deconv if bool(layer["transposed"]) else _conv
            x = step(x, layer["kernel"], int(layer["stride"])) + layer["bias"]
            if not last:
                if bool(layer["relu"]):
                    x = np.maximum(x, 0.0)
                x = _round_shift(x, int(layer["shift"]))
                x = np.clip(x, -self._limits[name][j], self._limits[name][j])
        return x if rows is None else x[rows[0] - offset : rows[1] - offset]

    def _outputs(
        self, name: str, x: np.ndarray, rows: tuple[int, int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scale positions, means) of a network's output (its ``rows`` only, if given),
        both at 2**-ACTIVATION_BITS."""
        shift = int(self.networks[name][-1]["shift"])
        # round half up to ACTIVATION_BITS fraction bits
        out = _round_shift(self._run(name, x, rows), shift)
        size = out.shape[-1] // 2
        if name == "hyper_synthesis" and not self.mean_scale:
            return out, np.zeros_like(out)
        return out[..., :size], out[..., size:]

    def hyperprior(
        self, z_hat: np.ndarray, rows: tuple[int, int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scale positions, means), integers at 2**-ACTIVATION_BITS, for z_hat [h, w, N]
        (integers): the positions and means of every latent of the padded latent grid, or
        of its latent ``rows`` [first, end) only."""
        return self._outputs(
            "hyper_synthesis", np.asarray(z_hat, np.float64) * 2.0**ACTIVATION_BITS, rows
        )

    def slice_parameters(self, positions, means, decoded_before, i: int):
        """Slice ``i``'s (positions, means), fixed point, refined from the decoded slices
        before it (``decoded_before``: code + mean, fixed point) as the codec's context."""
        size = self.latent_filters // self.slices
        positions = positions[..., i * size : (i + 1) * size]
        means = means[..., i * size : (i + 1) * size]
        if i == 0:
            return positions, means
        context = np.concatenate([positions, means, decoded_before], axis=-1)
        refined_positions, refined_means = self._outputs(f"slice_entropy_{i}", context)
        return positions + refined_positions, means + refined_means

    def checkerboard_parameters(self, positions, means, decoded, first_row: int):
        """(positions, means), fixed point, of latent rows from ``first_row`` on: the
        anchors' as given (the hyperprior's), the others' refined from the decoded anchors
        (``decoded``: code + mean, fixed point; read at the anchors only)."""
        anchors = anchor_mask(first_row, *positions.shape[:2])[..., np.newaxis]
        context = np.concatenate([positions, means, decoded * anchors], axis=-1)
        refined_positions, refined_means = self._outputs(CHECKERBOARD, context)
        others = 1.0 - anchors
        return positions + others * refined_positions, means + others * refined_means

    def scale_offset(self, quality: float | None) -> float:
        """The scale-position offset (fixed point) of a quality: the levels' offsets
        interpolated as the codec's gains are, then rounded half up.  Float64 arithmetic on
        the quality as the header stores it (float32): IEEE-754's basic operations round
        the same everywhere."""
        offsets = self.level_scale_offsets
        if offsets is None:
            return 0.0
        if quality is None:
            raise ExactModelError("this codec's scales depend on the quality: give one")
        levels = len(offsets)
        quality = float(np.float32(quality))
        position = min(max(quality, 0.0), 100.0) / 100.0 * (levels - 1)
        lower = min(int(np.floor(position)), levels - 2)
        weight = position - lower
        value = (1.0 - weight) * float(offsets[lower]) + weight * float(offsets[lower + 1])
        return float(np.floor(value + 0.5))

    @staticmethod
    def quarter_steps(quarters: int) -> float:
        """An image scale offset (quarter steps of the scale table, as a code file stores
        it) as fixed point."""
        return float(quarters) * 2.0 ** (ACTIVATION_BITS - 2)

    def y_tables(self, shape: int = 0) -> np.ndarray:
        """[scales, symbols] integer frequencies of a coding shape (``SHAPE_DEGREES``; 0: the
        codec's Gaussian), built once."""
        if shape not in self._tables:
            if shape not in SHAPE_DEGREES:
                raise ExactModelError(f"unknown coding shape {shape}")
            y_range = self.y_frequencies.shape[1] // 2
            self._tables[shape] = student_t_tables(self.num_scales, y_range, SHAPE_DEGREES[shape])
        return self._tables[shape]

    def bit_costs(self, shape: int = 0) -> np.ndarray:
        """[scales, symbols]: the bits each coded integer costs at each scale index with a
        coding shape (what the range coder spends, to within its rounding)."""
        if shape not in self._bit_costs:
            frequencies = self.y_tables(shape).astype(np.float64)
            self._bit_costs[shape] = TABLE_BITS - np.log2(frequencies)
        return self._bit_costs[shape]

    def indexes(self, positions: np.ndarray) -> np.ndarray:
        """Scale-table indexes (uint8) of fixed-point positions: round half up, clipped."""
        rounded = _round_shift(positions, ACTIVATION_BITS)
        return np.clip(rounded, 0, self.num_scales - 1).astype(np.uint8)

    @staticmethod
    def to_real(fixed: np.ndarray) -> np.ndarray:
        """A fixed-point array as the real numbers it stands for (exact in float64)."""
        return fixed * 2.0**-ACTIVATION_BITS

    @staticmethod
    def to_fixed(real: np.ndarray) -> np.ndarray:
        """Multiples of 2**-ACTIVATION_BITS (codes plus means) as fixed point."""
        return np.asarray(real, np.float64) * 2.0**ACTIVATION_BITS


def anchor_mask(first_row: int, rows: int, cols: int) -> np.ndarray:
    """[rows, cols] float64: 1 at the checkerboard's anchors (row + column even, rows
    counted on the whole latent grid from ``first_row``), else 0."""
    parity = np.arange(first_row, first_row + rows)[:, np.newaxis] + np.arange(cols)
    return (parity % 2 == 0).astype(np.float64)


def _limits(layers: list[dict]) -> list[float]:
    """The clip of each layer's output (fixed point) such that no sum of the layer reading it
    can reach 2**52, so float64 holds every partial sum exactly; refuses weights for which
    that clip would cut real activations (below 2**16 in real units).  The network input's
    clip (``INPUT_LIMIT``) is checked against the first layer the same way."""
    limits = []
    for j, reader in enumerate(layers):
        worst = float(np.abs(reader["kernel"]).sum(axis=(0, 1, 2)).max()) or 1.0
        limit = np.floor((_EXACT_LIMIT - float(np.abs(reader["bias"]).max())) / worst)
        if limit < (INPUT_LIMIT if j == 0 else 2.0 ** (16 + ACTIVATION_BITS)):
            raise ExactModelError("weights too large for exact fixed-point arithmetic")
        if j:
            limits.append(limit)
    return limits
