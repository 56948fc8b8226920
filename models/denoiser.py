"""DnCNN-style blind denoiser (Zhang, Zuo, Chen, Meng, Zhang, IEEE TIP 2017).

Residual learning: the network predicts the noise v from the noisy image y and the output is
x_hat = y - v.  Batch normalization is left out (it complicates multi-replica training and
inference on single images and the residual form trains well without it at this depth).
Inputs are standardized with the per-channel mean and std that tf.Transform measured on the
clean training patches; the constants are part of the model, so serving needs nothing else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import tensorflow as tf
import tf_keras as keras


@dataclass(frozen=True)
class DenoiserConfig:
    depth: int = 10  # convolution layers, DnCNN-C uses 20
    filters: int = 48  # DnCNN uses 64
    channel_mean: tuple = field(default=(0.5, 0.5, 0.5))
    channel_std: tuple = field(default=(0.25, 0.25, 0.25))

    def as_dict(self) -> dict:
        return asdict(self)


class DnCNN(keras.Model):
    def __init__(self, config: DenoiserConfig):
        super().__init__(name="dncnn")
        self.config = config
        self.channel_mean = tf.constant(config.channel_mean, tf.float32)
        self.channel_std = tf.constant(config.channel_std, tf.float32)
        self.noise_estimator = keras.Sequential(name="noise_estimator")
        for i in range(config.depth - 1):
            self.noise_estimator.add(
                keras.layers.Conv2D(
                    config.filters, 3, padding="same", activation="relu", name=f"layer_{i}"
                )
            )
        # Zero-initialized: training starts from the identity (x_hat = y) and improves on it.
        self.noise_estimator.add(
            keras.layers.Conv2D(3, 3, padding="same", kernel_initializer="zeros", name="residual")
        )

    def get_config(self):
        return self.config.as_dict()

    def build_for_images(self):
        self(tf.zeros([1, 16, 16, 3]))

    def call(self, y):
        """y: noisy [batch, H, W, 3] in [0, 1] -> x_hat, the estimate of the clean image."""
        y = tf.cast(y, self.compute_dtype)
        standardized = (y - tf.cast(self.channel_mean, y.dtype)) / tf.cast(
            self.channel_std, y.dtype
        )
        v = self.noise_estimator(standardized)
        return tf.cast(y - v, tf.float32)
