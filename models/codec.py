"""Scale-hyperprior image codec (Ballé, Minnen, Singh, Hwang, Johnston, ICLR 2018).

Notation follows the paper: x image, y = g_a(x) latents, z = h_a(y) side information,
y_hat / z_hat their quantized values, sigma = h_s(z_hat) the latents' scales (here a position in
the fixed scale table), x_hat = g_s(y_hat) the reconstruction, lmbda the rate-distortion
trade-off.  Images enter as float [0, 1]; distortion is MSE on the 8-bit scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import tensorflow as tf
import tf_keras as keras

from models.entropy_models import (
    Y_RANGE,
    Z_RANGE,
    FactorizedPrior,
    GaussianConditional,
    add_uniform_noise,
    quantize_index,
    scale_from_index,
)
from models.layers import GDN

# g_a downsamples by 16, h_a by 4 more: padded image sides are multiples of this.
PAD_MULTIPLE = 64


@dataclass(frozen=True)
class CodecConfig:
    num_filters: int = 64  # N: channels of the transforms and of z
    latent_filters: int = 96  # M: channels of y
    lmbda: float = 0.01  # distortion weight (MSE on 0..255)

    def as_dict(self) -> dict:
        return asdict(self)


def _conv(filters, kernel, strides, activation=None, name=None):
    return keras.layers.Conv2D(
        filters, kernel, strides=strides, padding="same", activation=activation, name=name
    )


def _deconv(filters, kernel, strides, activation=None, name=None):
    return keras.layers.Conv2DTranspose(
        filters, kernel, strides=strides, padding="same", activation=activation, name=name
    )


class AnalysisTransform(keras.Sequential):
    """g_a: image -> latents y."""

    def __init__(self, num_filters, latent_filters):
        super().__init__(name="analysis")
        for i in range(3):
            self.add(_conv(num_filters, 5, 2, name=f"layer_{i}"))
            self.add(GDN(name=f"gdn_{i}"))
        self.add(_conv(latent_filters, 5, 2, name="layer_3"))


class SynthesisTransform(keras.Sequential):
    """g_s: latents y_hat -> image x_hat."""

    def __init__(self, num_filters):
        super().__init__(name="synthesis")
        for i in range(3):
            self.add(_deconv(num_filters, 5, 2, name=f"layer_{i}"))
            self.add(GDN(inverse=True, name=f"igdn_{i}"))
        self.add(_deconv(3, 5, 2, name="layer_3"))


class HyperAnalysisTransform(keras.Sequential):
    """h_a: |y| -> side information z."""

    def __init__(self, num_filters):
        super().__init__(name="hyper_analysis")
        self.add(keras.layers.Lambda(tf.abs, name="abs"))
        self.add(_conv(num_filters, 3, 1, "relu", name="layer_0"))
        self.add(_conv(num_filters, 5, 2, "relu", name="layer_1"))
        self.add(_conv(num_filters, 5, 2, name="layer_2"))


class HyperSynthesisTransform(keras.Sequential):
    """h_s: z_hat -> position of each latent's scale in the scale table."""

    def __init__(self, num_filters, latent_filters):
        super().__init__(name="hyper_synthesis")
        self.add(_deconv(num_filters, 5, 2, "relu", name="layer_0"))
        self.add(_deconv(num_filters, 5, 2, "relu", name="layer_1"))
        self.add(_conv(latent_filters, 3, 1, name="layer_2"))


class ScaleHyperprior(keras.Model):
    """The codec; ``call`` returns the training objective and its parts."""

    def __init__(self, config: CodecConfig):
        super().__init__(name="scale_hyperprior")
        self.config = config
        self.analysis_transform = AnalysisTransform(config.num_filters, config.latent_filters)
        self.synthesis_transform = SynthesisTransform(config.num_filters)
        self.hyper_analysis_transform = HyperAnalysisTransform(config.num_filters)
        self.hyper_synthesis_transform = HyperSynthesisTransform(
            config.num_filters, config.latent_filters
        )
        self.factorized_prior = FactorizedPrior(name="factorized_prior")
        self.gaussian_conditional = GaussianConditional(name="gaussian_conditional")

    def get_config(self):
        return self.config.as_dict()

    def build_for_images(self):
        self(tf.zeros([1, PAD_MULTIPLE, PAD_MULTIPLE, 3]), training=False)

    def call(self, x, training=False):
        """x: [batch, H, W, 3] in [0, 1], H and W multiples of PAD_MULTIPLE.

        Returns (loss, bpp, mse, x_hat).  With ``training`` the quantizer is additive uniform
        noise; without, it is rounding, and bpp is the model's estimate for the real bitstream.
        """
        y = self.analysis_transform(x)
        z = self.hyper_analysis_transform(y)
        if training:
            z_tilde = add_uniform_noise(tf.cast(z, tf.float32))
            index = self.hyper_synthesis_transform(z_tilde)
            y_tilde = add_uniform_noise(tf.cast(y, tf.float32))
        else:
            z_tilde = self.quantize_z(z)
            index = tf.cast(quantize_index(self.hyper_synthesis_transform(z_tilde)), tf.float32)
            y_tilde = self.quantize_y(y)
        sigma = scale_from_index(tf.cast(index, tf.float32))
        y_likelihood = self.gaussian_conditional(y_tilde, sigma)
        z_likelihood = self.factorized_prior(z_tilde)
        x_hat = self.synthesis_transform(y_tilde)

        num_pixels = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
        bits = -tf.reduce_sum(tf.math.log(y_likelihood)) - tf.reduce_sum(tf.math.log(z_likelihood))
        bpp = bits / tf.math.log(2.0) / num_pixels
        mse = tf.reduce_mean(tf.square(tf.cast(x, tf.float32) - tf.cast(x_hat, tf.float32)))
        mse *= 255.0**2
        loss = bpp + self.config.lmbda * mse
        return loss, bpp, mse, x_hat

    @staticmethod
    def quantize_z(z):
        return tf.clip_by_value(tf.round(tf.cast(z, tf.float32)), -Z_RANGE, Z_RANGE)

    @staticmethod
    def quantize_y(y):
        return tf.clip_by_value(tf.round(tf.cast(y, tf.float32)), -Y_RANGE, Y_RANGE)

    def scale_indexes(self, z_hat):
        """Integer positions in the scale table for the latents, from the decoded z_hat."""
        return quantize_index(tf.cast(self.hyper_synthesis_transform(z_hat), tf.float32))


def pad_to_multiple(x: tf.Tensor, multiple: int = PAD_MULTIPLE) -> tf.Tensor:
    """Pads [batch, H, W, C] at the bottom and right by repeating the edge pixels."""
    height, width = tf.shape(x)[1], tf.shape(x)[2]
    pad_h = (multiple - height % multiple) % multiple
    pad_w = (multiple - width % multiple) % multiple
    x = tf.concat([x, tf.repeat(x[:, -1:], pad_h, axis=1)], axis=1)
    return tf.concat([x, tf.repeat(x[:, :, -1:], pad_w, axis=2)], axis=2)
