"""Entropy models of the scale hyperprior (Ballé et al. 2018).

* ``FactorizedPrior``: a learned univariate density per channel for the side information z
  (the "deep factorized" density of the paper's appendix 6.1).
* ``GaussianConditional``: a zero-mean Gaussian for the latents y whose scale comes from the
  hyperprior.  Scales live on a fixed geometric table; the hyper-synthesis predicts a
  (continuous) position in the table, which is rounded to an integer index when coding, so the
  coder's tables are identical at encode and decode time.

During training, quantization is replaced by additive uniform noise and the rate is the sum of
-log2 likelihoods of the noisy values.  All arithmetic here is float32, even under a
mixed-precision policy, since likelihoods underflow in float16.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

from models.exact import student_t_parts

LIKELIHOOD_BOUND = 1e-9

# Scale table: NUM_SCALES values from SCALE_MIN to SCALE_MAX, geometrically spaced.
SCALE_MIN = 0.11
SCALE_MAX = 256.0
NUM_SCALES = 64

# Coded integer ranges: latents are clipped to them when quantized (the clipped values are
# what both the model and the coder see, so the two always agree).
Z_RANGE = 64
Y_RANGE = 2048


def lower_bound(x: tf.Tensor, bound: float) -> tf.Tensor:
    """max(x, bound), with the gradient kept where it pushes x back above the bound.

    A plain ``tf.maximum`` zeroes the gradient below the bound, which freezes exactly the
    values that most need to move (a scale index below the table, a likelihood in the tail).
    """

    @tf.custom_gradient
    def _bound(x):
        def grad(dy):
            # dy < 0: increasing x lowers the loss, i.e. the step moves x towards the bound.
            return tf.where((x >= bound) | (dy < 0), dy, tf.zeros_like(dy))

        return tf.maximum(x, bound), grad

    return _bound(x)


def upper_bound(x: tf.Tensor, bound: float) -> tf.Tensor:
    return -lower_bound(-x, -bound)


def scale_table() -> np.ndarray:
    return np.exp(np.linspace(np.log(SCALE_MIN), np.log(SCALE_MAX), NUM_SCALES))


def scale_from_index(index: tf.Tensor) -> tf.Tensor:
    """Scale for a (possibly fractional) table position in [0, NUM_SCALES - 1]."""
    index = lower_bound(upper_bound(index, NUM_SCALES - 1.0), 0.0)
    log_min, log_max = np.log(SCALE_MIN), np.log(SCALE_MAX)
    return tf.exp(log_min + (log_max - log_min) * index / (NUM_SCALES - 1))


def quantize_index(index: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.clip_by_value(tf.round(index), 0, NUM_SCALES - 1), tf.int32)


def add_uniform_noise(x: tf.Tensor) -> tf.Tensor:
    return x + tf.random.uniform(tf.shape(x), -0.5, 0.5, dtype=x.dtype)


def _standard_normal_cdf(x: tf.Tensor) -> tf.Tensor:
    return 0.5 * tf.math.erfc(-x / np.sqrt(2.0))


class GaussianConditional(keras.layers.Layer):
    """Likelihood of (noisy or rounded) y under N(0, scale^2) integrated over unit bins."""

    def __init__(self, **kwargs):
        super().__init__(dtype="float32", **kwargs)

    def call(self, y: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
        y = tf.abs(tf.cast(y, tf.float32))
        scale = tf.cast(scale, tf.float32)
        # Integrate on the negative side, where the CDF is accurate.
        upper = _standard_normal_cdf((0.5 - y) / scale)
        lower = _standard_normal_cdf((-0.5 - y) / scale)
        return lower_bound(upper - lower, LIKELIHOOD_BOUND)


def student_t_likelihood(y: tf.Tensor, scale: tf.Tensor, degrees: int) -> tf.Tensor:
    """Likelihood of (noisy or rounded) y under Student's t of ``degrees`` (even) degrees of
    freedom and variance scale^2, integrated over unit bins: what a code file's t coding shape
    (``models.exact.student_t_tables``) spends, to train the rate the coder will pay.

    Even degrees have a closed-form distribution function (the one the exact tables use),
    differentiable everywhere; it is evaluated in float64, where its tails do not cancel."""
    y = tf.abs(tf.cast(y, tf.float64))
    scale = tf.cast(scale, tf.float64)

    def cdf(x):
        xi, total = student_t_parts(x, degrees, tf)
        return 0.5 + 0.5 * xi * total

    mass = cdf((0.5 - y) / scale) - cdf((-0.5 - y) / scale)
    return lower_bound(tf.cast(mass, tf.float32), LIKELIHOOD_BOUND)


class FactorizedPrior(keras.layers.Layer):
    """Per-channel learned density; ``call`` gives the likelihood of unit bins around z."""

    def __init__(self, filters=(3, 3, 3), init_scale: float = 10.0, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.filters = tuple(filters)
        self.init_scale = init_scale

    def build(self, input_shape):
        channels = int(input_shape[-1])
        widths = (1, *self.filters, 1)
        scale = self.init_scale ** (1.0 / (len(self.filters) + 1))
        self.matrices, self.biases, self.factors = [], [], []
        for i in range(len(self.filters) + 1):
            init = np.log(np.expm1(1.0 / scale / widths[i + 1]))
            self.matrices.append(
                self.add_weight(
                    name=f"matrix_{i}",
                    shape=[channels, widths[i + 1], widths[i]],
                    initializer=keras.initializers.Constant(init),
                )
            )
            self.biases.append(
                self.add_weight(
                    name=f"bias_{i}",
                    shape=[channels, widths[i + 1], 1],
                    initializer=keras.initializers.RandomUniform(-0.5, 0.5),
                )
            )
            if i < len(self.filters):
                self.factors.append(
                    self.add_weight(
                        name=f"factor_{i}",
                        shape=[channels, widths[i + 1], 1],
                        initializer=keras.initializers.Zeros(),
                    )
                )
        super().build(input_shape)

    def cumulative_logits(self, values: tf.Tensor) -> tf.Tensor:
        """Logits of the CDF at ``values`` shaped [channels, 1, n]."""
        logits = values
        for i, matrix in enumerate(self.matrices):
            logits = tf.linalg.matmul(tf.nn.softplus(matrix), logits) + self.biases[i]
            if i < len(self.factors):
                logits += tf.tanh(self.factors[i]) * tf.tanh(logits)
        return logits

    def _bin_likelihood(self, values: tf.Tensor) -> tf.Tensor:
        lower = self.cumulative_logits(values - 0.5)
        upper = self.cumulative_logits(values + 0.5)
        # Subtract on the side of the sigmoid where it is flat, for precision in the tails.
        sign = -tf.sign(lower + upper)
        return tf.abs(tf.sigmoid(sign * upper) - tf.sigmoid(sign * lower))

    def call(self, z: tf.Tensor) -> tf.Tensor:
        z = tf.cast(z, tf.float32)
        shape = tf.shape(z)
        channels = z.shape[-1]
        # [batch, h, w, c] -> [c, 1, batch*h*w]: one univariate density per channel.
        values = tf.reshape(tf.transpose(z, [3, 0, 1, 2]), [channels, 1, -1])
        likelihood = self._bin_likelihood(values)
        likelihood = tf.reshape(likelihood, [channels, shape[0], shape[1], shape[2]])
        likelihood = tf.transpose(likelihood, [1, 2, 3, 0])
        return lower_bound(likelihood, LIKELIHOOD_BOUND)

    def pmf_table(self) -> tf.Tensor:
        """[channels, 2 * Z_RANGE + 1] probabilities of the integers -Z_RANGE..Z_RANGE."""
        channels = self.matrices[0].shape[0]
        support = tf.range(-Z_RANGE, Z_RANGE + 1, dtype=tf.float32)
        values = tf.tile(support[tf.newaxis, tf.newaxis, :], [channels, 1, 1])
        return tf.reshape(self._bin_likelihood(values), [channels, -1])

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "init_scale": self.init_scale}
