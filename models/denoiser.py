"""DnCNN-style blind denoiser (Zhang, Zuo, Chen, Meng, Zhang, IEEE TIP 2017).

Residual learning: the network predicts the noise v from the noisy image y and the output is
x_hat = y - v.  Batch normalization is left out (it complicates multi-replica training and
inference on single images and the residual form trains well without it at this depth).
With ``unshuffle`` > 1 the network works at reduced resolution as FFDNet does (Zhang, Zuo,
Zhang, IEEE TIP 2018): each s x s block of pixels becomes 3 s^2 channels, so a layer of equal
width costs s^2 times less per pixel and the receptive field grows s times; the predicted
noise is shuffled back to full resolution.  Inputs are standardized with the per-channel mean
and std that tf.Transform measured on the clean training patches; the constants are part of
the model, so serving needs nothing else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import tensorflow as tf
import tf_keras as keras


@dataclass(frozen=True)
class DenoiserConfig:
    depth: int = 10  # convolution layers, DnCNN-C uses 20
    filters: int = 48  # DnCNN uses 64
    channel_mean: tuple = field(default=(0.5, 0.5, 0.5))
    channel_std: tuple = field(default=(0.25, 0.25, 0.25))
    unshuffle: int = 1  # pixel-unshuffle factor (FFDNet: 2)

    @property
    def receptive_radius(self) -> int:
        """Pixels beyond which an input pixel cannot change an output pixel (tiling overlap)."""
        return (self.depth + 1) * self.unshuffle

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_card(cls, card: dict) -> DenoiserConfig:
        """The configuration a denoiser's model card records: the one reader of it (a card
        older than pixel-unshuffle has none: 1)."""
        recorded = card.get("config") or {}
        values = {f.name: recorded[f.name] for f in fields(cls) if f.name in recorded}
        for name in ("channel_mean", "channel_std"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


class DnCNN(keras.Model):
    def __init__(self, config: DenoiserConfig):
        super().__init__(name="dncnn")
        self.config = config
        self.channel_mean = tf.constant(config.channel_mean, tf.float32)
        self.channel_std = tf.constant(config.channel_std, tf.float32)
        self.noise_estimator = keras.Sequential(name="noise_estimator")
        for i in range(config.depth - 1):
            # He initialization keeps the signal's variance through deep ReLU stacks (Glorot's
            # halves it per layer: a fresh 20-layer network learned nothing in 2,000 steps)
            self.noise_estimator.add(
                keras.layers.Conv2D(
                    config.filters,
                    3,
                    padding="same",
                    activation="relu",
                    kernel_initializer="he_normal",
                    name=f"layer_{i}",
                )
            )
        # Zero-initialized: training starts from the identity (x_hat = y) and improves on it.
        self.noise_estimator.add(
            keras.layers.Conv2D(
                3 * config.unshuffle**2,
                3,
                padding="same",
                kernel_initializer="zeros",
                name="residual",
            )
        )

    def get_config(self):
        return self.config.as_dict()

    def build_for_images(self):
        self(tf.zeros([1, 16, 16, 3]))

    def call(self, y):
        """y: noisy [batch, H, W, 3] in [0, 1] -> x_hat, the estimate of the clean image."""
        y = tf.cast(y, tf.float32)
        # The network may compute in 16 bits (mixed precision); the input and the residual
        # subtraction stay float32, so the output keeps the input's 8-bit steps exactly.
        standardized = tf.cast((y - self.channel_mean) / self.channel_std, self.compute_dtype)
        factor = self.config.unshuffle
        if factor == 1:
            v = self.noise_estimator(standardized)
        else:
            # Edge-pad to a multiple of the factor, work on blocks, crop back.
            height, width = tf.shape(y)[1], tf.shape(y)[2]
            padded = tf.pad(
                standardized,
                [[0, 0], [0, (-height) % factor], [0, (-width) % factor], [0, 0]],
                mode="SYMMETRIC",
            )
            blocks = self.noise_estimator(tf.nn.space_to_depth(padded, factor))
            v = tf.nn.depth_to_space(blocks, factor)[:, :height, :width]
        return y - tf.cast(v, tf.float32)
