"""Keras choice, and the generalized divisive normalization layer (Ballé et al. 2016).

Keras: TensorFlow 2.21's ``tf.keras`` is Keras 3 unless something (importing
tf.Transform does) sets ``TF_USE_LEGACY_KERAS=1`` first.  Keras 3's optimizers fail inside a
``MirroredStrategy`` custom training loop, so the models use ``tf_keras`` (Keras 2) imported by
name, which behaves the same whatever that variable says.  Exported models are plain
``tf.Module`` SavedModels, loadable with ``tf.saved_model.load`` under either Keras.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras


def softplus_inverse(x: np.ndarray) -> np.ndarray:
    return np.log(np.expm1(x))


class GDN(keras.layers.Layer):
    """y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2); with ``inverse=True``, multiplies (IGDN).

    beta and gamma stay positive through a softplus of their raw parameters.
    """

    def __init__(self, inverse: bool = False, beta_min: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.inverse = inverse
        self.beta_min = beta_min

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self.beta_raw = self.add_weight(
            name="beta_raw",
            shape=[channels],
            initializer=keras.initializers.Constant(softplus_inverse(1.0)),
        )
        gamma = 0.1 * np.eye(channels) + 1e-4
        self.gamma_raw = self.add_weight(
            name="gamma_raw",
            shape=[channels, channels],
            initializer=keras.initializers.Constant(softplus_inverse(gamma)),
        )
        super().build(input_shape)

    def call(self, x):
        beta = tf.nn.softplus(self.beta_raw) + self.beta_min
        gamma = tf.nn.softplus(self.gamma_raw)
        norm = tf.tensordot(tf.square(x), tf.cast(gamma, x.dtype), [[x.shape.rank - 1], [0]])
        norm = norm + tf.cast(beta, x.dtype)
        return x * tf.sqrt(norm) if self.inverse else x * tf.math.rsqrt(norm)

    def get_config(self):
        return {**super().get_config(), "inverse": self.inverse, "beta_min": self.beta_min}


def subpixel_transposed_conv(x, layer: keras.layers.Conv2DTranspose):
    """``layer`` (stride 2, 'same', odd kernel side k) applied to ``x`` as one stride-1
    convolution to four times its outputs, one per output phase (even/odd row and column),
    interleaved by depth_to_space: the same sums up to float rounding.  On CPU TensorFlow's
    transposed convolution scatters every input pixel, which for a layer with few outputs
    (the synthesis' last, 3 channels) takes 1.5-1.8x the time (that layer timed alone; a
    codec's decode -6%, benchmarks.codec_speed).

    Output 2m + p of an axis sums input m + e times tap p + before - 2e (before: the forward
    convolution's leading pad, (k - 2) // 2, as TensorFlow pads 'same')."""
    kernel = tf.cast(layer.kernel, x.dtype)  # [k, k, out, in]
    size = int(kernel.shape[0])
    if layer.strides != (2, 2) or layer.padding != "same" or size % 2 == 0:
        raise ValueError("a sub-pixel form needs stride 2, 'same' padding, an odd kernel")
    before = (size - 2) // 2
    offsets = range(-((size - 1 - before) // 2), (1 + before) // 2 + 1)
    zeros = tf.zeros([kernel.shape[3], kernel.shape[2]], x.dtype)

    def tap(phase, offset):
        t = phase + before - 2 * offset
        return t if 0 <= t < size else None

    rows = []
    for row in offsets:
        columns = []
        for column in offsets:
            blocks = []
            for row_phase in (0, 1):
                for column_phase in (0, 1):
                    ty, tx = tap(row_phase, row), tap(column_phase, column)
                    missing = ty is None or tx is None
                    blocks.append(zeros if missing else tf.transpose(kernel[ty, tx]))
            columns.append(tf.concat(blocks, axis=-1))  # [in, 4 * out]
        rows.append(tf.stack(columns))
    phases = tf.stack(rows)  # [T, T, in, 4 * out]
    pad = [-offsets[0], offsets[-1]]  # explicit: no padded copy of a full-resolution x
    y = tf.nn.depth_to_space(tf.nn.conv2d(x, phases, 1, [[0, 0], pad, pad, [0, 0]]), 2)
    if layer.use_bias:
        y = y + tf.cast(layer.bias, x.dtype)
    return layer.activation(y)
