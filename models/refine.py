"""Encoder-side latent refinement: a few gradient steps per image on the latents against the
decoder, before they are coded.

The analysis network is one amortized guess for every image and every quality; the decoder
can do better with latents chosen for this very image (Campos et al. 2019, "Content adaptive
optimization for neural image compression").  The refinement minimizes the codec's own
training loss, rate + lambda * distortion at the chosen quality, over the latents y with
the side information z_hat held fixed: the scale indexes and means the exact entropy model
derives from z_hat stay as they are, so the code file is an ordinary one and decodes on any
machine with the unchanged decoder.  Measured on CBSD68 with ``codec-high-rate``: most of the
gain is at the top qualities, where the analysis network falls furthest behind its decoder.

Rate: the Gaussian likelihood of the coded integers under the exact model's scales, with
additive uniform noise in the gradient (as in training) and rounding in the value that picks
the best step.  Distortion: the decoder's output of the rounded latents, gradients passed
straight through the rounding.  Each tile of latents is refined with its neighbours held as
they are (Gauss-Seidel over tiles), so memory stays that of one tile however large the image.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from models.codec import LATENT_STRIDE

# Latents of a refined tile a side, and latents of context around it: g_s sees 3 latents
# each side, so the pixels a tile's latents move lie within 3 of it, and their values
# depend on latents up to 3 further.
TILE_LATENTS = 32
REACH = 3
# Adam's first step on the latents, in quantization bins; it grows while steps lower the
# loss and halves (the step undone) when one does not: the best size differs tenfold
# between the lowest and the highest quality.
FIRST_STEP_SIZE = 0.03
GROWTH = 1.4
SHRINK = 0.5
ADAM_BETAS = (0.9, 0.999)


class LatentRefiner:
    """Refines a compressor's latents; built from the same exported weights it decodes with."""

    def __init__(self, compressor):
        from models.growth import exported_codec

        if compressor.config.slices or compressor.config.checkerboard:
            raise ValueError(
                f"{compressor.model_dir}: latent refinement needs a codec without context "
                "(channel slices, checkerboard): their scales depend on the latents being refined"
            )
        self.compressor = compressor
        self.model = exported_codec(compressor.model_dir)

    def lmbda(self, quality: float | None) -> float:
        """The rate-distortion trade-off the codec was trained for at ``quality``."""
        if self.compressor.variable_rate:
            return float(self.model.lmbda_at(tf.constant([quality], tf.float32))[0])
        return float(self.compressor.config.lmbda)

    def refine(
        self, pixels: np.ndarray, y: np.ndarray, z_hat: np.ndarray, quality, steps: int
    ) -> np.ndarray:
        """y (float32 [h, w, M], gains applied) refined for ``steps`` steps, tile by tile."""
        height, width = pixels.shape[:2]
        latents = self.compressor.code_latents(y, z_hat, (height, width), quality)
        means = self.compressor.means(latents)
        scales = self.compressor.scale_table[latents.indexes.astype(np.int64)]
        residual = (y - means).astype(np.float32)
        # latents beyond the image are not coded: they decode as their means, and stay so
        coded_rows, coded_cols = latents.coded
        residual[coded_rows:] = 0.0
        residual[:, coded_cols:] = 0.0
        lmbda = tf.constant(self.lmbda(quality), tf.float32)
        quality = tf.constant([0.0 if quality is None else quality], tf.float32)
        for top in range(0, coded_rows, TILE_LATENTS):
            for left in range(0, coded_cols, TILE_LATENTS):
                tile = (
                    top,
                    min(top + TILE_LATENTS, coded_rows),
                    left,
                    min(left + TILE_LATENTS, coded_cols),
                )
                residual[tile[0] : tile[1], tile[2] : tile[3]] = self._refine_tile(
                    pixels, residual, means, scales, tile, (height, width), lmbda, quality, steps
                )
        return residual + means

    def _refine_tile(self, pixels, residual, means, scales, tile, size, lmbda, quality, steps):
        top, bottom, left, right = tile
        rows, cols = residual.shape[:2]
        # context window (latents) and the pixels the tile's latents reach, clipped to the image
        window = (
            max(top - 2 * REACH, 0),
            min(bottom + 2 * REACH, rows),
            max(left - 2 * REACH, 0),
            min(right + 2 * REACH, cols),
        )
        reach = [
            max(top - REACH, 0) * LATENT_STRIDE,
            min((bottom + REACH) * LATENT_STRIDE, size[0]),
            max(left - REACH, 0) * LATENT_STRIDE,
            min((right + REACH) * LATENT_STRIDE, size[1]),
        ]
        target = tf.constant(pixels[reach[0] : reach[1], reach[2] : reach[3]], tf.float32) / 255.0
        inside = (
            slice(top - window[0], bottom - window[0]),
            slice(left - window[2], right - window[2]),
        )
        context = residual[window[0] : window[1], window[2] : window[3]].copy()
        mask = np.zeros(context.shape, np.float32)
        mask[inside] = 1.0
        crop = (
            reach[0] - window[0] * LATENT_STRIDE,
            reach[1] - window[0] * LATENT_STRIDE,
            reach[2] - window[2] * LATENT_STRIDE,
            reach[3] - window[2] * LATENT_STRIDE,
        )
        constants = _TileConstants(
            tf.constant(means[window[0] : window[1], window[2] : window[3]][None]),
            tf.constant(scales[window[0] : window[1], window[2] : window[3]][None], tf.float32),
            tf.constant(mask[None]),
            target,
            tf.constant(crop),
        )
        best = tf.constant(context[None])
        best_loss, gradient = self._loss_and_gradient(
            best, tf.constant(0), constants, lmbda, quality
        )
        moments = (tf.zeros_like(best), tf.zeros_like(best))
        step_size = FIRST_STEP_SIZE
        for i in range(1, steps + 1):
            candidate, moments = _adam(best, gradient, moments, i, step_size)
            loss, candidate_gradient = self._loss_and_gradient(
                candidate, tf.constant(i), constants, lmbda, quality
            )
            # a step that helped earns a longer one; one that did not is undone, and the
            # next, from the same point, is half as long
            if loss < best_loss:
                best, best_loss, gradient = candidate, loss, candidate_gradient
                step_size *= GROWTH
            else:
                step_size *= SHRINK
        return best.numpy()[0][inside]

    @tf.function(reduce_retracing=True)
    def _loss_and_gradient(self, residual, i, constants, lmbda, quality):
        """The true loss at the tile's latents ``residual`` (rounded; its context held), and
        the gradient on them, where the rate takes additive noise as in training (seeded per
        step, so the same image gives the same file).  One pass for both: the distortion
        is of the rounded latents either way (gradients straight through the rounding)."""
        with tf.GradientTape() as tape:
            tape.watch(residual)
            x_hat = self.model.synthesize(
                _rounded(residual) + constants.means, quality, training=True
            )
            crop = constants.crop
            error = tf.square(x_hat[0, crop[0] : crop[1], crop[2] : crop[3]] - constants.target)
            # squared error on the 0-255 scale, per pixel as the training loss's mse, over
            # every pixel the tile's latents reach; bits of the tile's own latents
            distortion = lmbda * tf.reduce_sum(error) * 255.0**2 / 3.0
            noise = tf.random.stateless_uniform(tf.shape(residual), [i, 0], -0.5, 0.5)
            objective = self._bits(residual + noise, constants) + distortion
        gradient = tape.gradient(objective, residual) * constants.mask
        return self._bits(tf.round(residual), constants) + distortion, gradient

    def _bits(self, residual, constants):
        likelihood = self.model.gaussian_conditional(residual, constants.scales)
        return -tf.reduce_sum(constants.mask * tf.math.log(likelihood)) / np.log(2.0)


def _adam(point, gradient, moments, t: int, step_size: float):
    """(the point one Adam step on, new moments).  Written out rather than a Keras optimizer:
    its slots are variables of one tile's shape (a retrace per tile), and a rejected step
    is undone here by keeping the old point."""
    first = ADAM_BETAS[0] * moments[0] + (1 - ADAM_BETAS[0]) * gradient
    second = ADAM_BETAS[1] * moments[1] + (1 - ADAM_BETAS[1]) * tf.square(gradient)
    first_hat = first / (1 - ADAM_BETAS[0] ** t)
    second_hat = second / (1 - ADAM_BETAS[1] ** t)
    return point - step_size * first_hat / (tf.sqrt(second_hat) + 1e-8), (first, second)


class _TileConstants(NamedTuple):
    means: tf.Tensor
    scales: tf.Tensor
    mask: tf.Tensor  # 1 on the tile's own latents, 0 on their context
    target: tf.Tensor  # the pixels they reach, [0, 1]
    crop: tf.Tensor  # where those pixels lie in the window's decoded output


def _rounded(v):
    """round(v), with the gradient passed straight through."""
    return v + tf.stop_gradient(tf.round(v) - v)
