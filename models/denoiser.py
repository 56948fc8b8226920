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

``architecture="unet"`` keeps that contract (standardize, unshuffle, predict the noise,
subtract) with a multi-scale body: residual blocks at ``levels`` resolutions, each level
half the size and twice the channels of the one above, joined by skip connections (the
U-Net of Ronneberger et al. 2015 as DRUNet uses it for denoising, Zhang et al., TPAMI 2021).
Correlated camera noise wants a large receptive field; the coarse levels give it cheaply,
and zero-initialized residual branches start every block at the identity, so the stack
trains at learning rates that kill a plain deep ReLU network.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import tensorflow as tf
import tf_keras as keras

ARCHITECTURES = ("dncnn", "unet")


@dataclass(frozen=True)
class DenoiserConfig:
    depth: int = 10  # convolution layers, DnCNN-C uses 20
    filters: int = 48  # DnCNN uses 64
    channel_mean: tuple = field(default=(0.5, 0.5, 0.5))
    channel_std: tuple = field(default=(0.25, 0.25, 0.25))
    unshuffle: int = 1  # pixel-unshuffle factor (FFDNet: 2)
    architecture: str = "dncnn"  # or "unet" (depth is then unused)
    levels: int = 2  # unet: resolutions, each half the one above
    blocks: int = 2  # unet: residual blocks per level, on the way down and again on the way up

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"denoiser architecture {self.architecture!r}: one of {ARCHITECTURES}")
        if self.architecture == "unet" and (self.levels < 1 or self.blocks < 1):
            raise ValueError(
                f"a unet needs levels and blocks >= 1 (got {self.levels}, {self.blocks})"
            )

    @property
    def receptive_radius(self) -> int:
        """Pixels beyond which an input pixel cannot change an output pixel (tiling overlap)."""
        if self.architecture == "dncnn":
            return (self.depth + 1) * self.unshuffle
        # Each 3x3 convolution at level l reaches 2**l (unshuffled) pixels further; each 2x2
        # stride-2 down- or up-sampling between levels l and l+1 at most 2**l.
        reach = 2  # head and tail
        for level in range(self.levels):
            convolutions = 2 * self.blocks * (1 if level == self.levels - 1 else 2)
            reach += convolutions * 2**level
            if level < self.levels - 1:
                reach += 2 * 2**level
        return reach * self.unshuffle

    @property
    def align(self) -> int:
        """Input pixels per step of the coarsest level: tiles start at multiples of it."""
        return self.unshuffle * 2 ** (self.levels - 1 if self.architecture == "unet" else 0)

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


def build_denoiser(config: DenoiserConfig) -> keras.Model:
    """The network a configuration describes."""
    return UNetDenoiser(config) if config.architecture == "unet" else DnCNN(config)


class _ResidualDenoiser(keras.Model):
    """Standardize, pixel-unshuffle, estimate the noise with ``noise_estimator``, subtract."""

    def __init__(self, config: DenoiserConfig, name: str):
        super().__init__(name=name)
        self.config = config
        self.channel_mean = tf.constant(config.channel_mean, tf.float32)
        self.channel_std = tf.constant(config.channel_std, tf.float32)

    def get_config(self):
        return self.config.as_dict()

    def build_for_images(self):
        self(tf.zeros([1, 32, 32, 3]))

    def call(self, y):
        """y: noisy [batch, H, W, 3] in [0, 1] -> x_hat, the estimate of the clean image."""
        y = tf.cast(y, tf.float32)
        # The network may compute in 16 bits (mixed precision); the input and the residual
        # subtraction stay float32, so the output keeps the input's 8-bit steps exactly.
        standardized = tf.cast((y - self.channel_mean) / self.channel_std, self.compute_dtype)
        align = self.config.align
        if align == 1:
            return y - tf.cast(self.noise_estimator(standardized), tf.float32)
        # Mirror-pad to whole blocks of the coarsest level, work on them, crop back.
        height, width = tf.shape(y)[1], tf.shape(y)[2]
        padded = _mirror_pad(standardized, (-height) % align, (-width) % align, align)
        factor = self.config.unshuffle
        if factor > 1:
            padded = tf.nn.space_to_depth(padded, factor)
        v = self.noise_estimator(padded)
        if factor > 1:
            v = tf.nn.depth_to_space(v, factor)
        return y - tf.cast(v[:, :height, :width], tf.float32)


def _mirror_pad(x, bottom, right, align: int):
    """x padded by ``bottom`` rows and ``right`` columns (each < align) of its mirror image.
    A mirror can add at most the image's own size at once, so an image smaller than the pad
    (a 3-pixel-high strip for an align of 8) is mirrored again until the pad is reached."""
    for _ in range(max(align - 1, 1).bit_length()):
        height, width = tf.shape(x)[1], tf.shape(x)[2]
        rows = tf.minimum(bottom, height)
        columns = tf.minimum(right, width)
        x = tf.pad(x, [[0, 0], [0, rows], [0, columns], [0, 0]], mode="SYMMETRIC")
        bottom, right = bottom - rows, right - columns
    return x


class DnCNN(_ResidualDenoiser):
    def __init__(self, config: DenoiserConfig):
        super().__init__(config, "dncnn")
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


class UNetDenoiser(_ResidualDenoiser):
    def __init__(self, config: DenoiserConfig):
        super().__init__(config, "unet_denoiser")
        self.noise_estimator = _unet(config)


def _residual_block(x, filters: int, name: str):
    """x + conv(relu(conv(x))), the second convolution zero-initialized: the block starts as
    the identity."""
    branch = keras.layers.Conv2D(
        filters,
        3,
        padding="same",
        activation="relu",
        kernel_initializer="he_normal",
        name=f"{name}_a",
    )(x)
    branch = keras.layers.Conv2D(
        filters, 3, padding="same", kernel_initializer="zeros", name=f"{name}_b"
    )(branch)
    return keras.layers.Add(name=f"{name}_add")([x, branch])


def _unet(config: DenoiserConfig) -> keras.Model:
    channels = 3 * config.unshuffle**2
    image = keras.Input(shape=(None, None, channels))
    x = keras.layers.Conv2D(config.filters, 3, padding="same", name="head")(image)
    skips = []
    for level in range(config.levels):
        filters = config.filters * 2**level
        if level > 0:
            skips.append(x)
            x = keras.layers.Conv2D(filters, 2, strides=2, name=f"down_{level}")(x)
        for block in range(config.blocks):
            x = _residual_block(x, filters, f"level_{level}_down_{block}")
    for level in reversed(range(config.levels - 1)):
        filters = config.filters * 2**level
        x = keras.layers.Conv2DTranspose(filters, 2, strides=2, name=f"up_{level}")(x)
        x = keras.layers.Add(name=f"skip_{level}")([x, skips.pop()])
        for block in range(config.blocks):
            x = _residual_block(x, filters, f"level_{level}_up_{block}")
    # Zero-initialized: training starts from the identity (x_hat = y) and improves on it.
    noise = keras.layers.Conv2D(
        channels, 3, padding="same", kernel_initializer="zeros", name="residual"
    )(x)
    return keras.Model(image, noise, name="noise_estimator")
