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
