"""Decoding code-file versions 1 and 2 (written before 2026-12-04's format 3).

Those files chose their coding distributions in floating point (the SavedModel's
``scale_indexes`` or ``slice_parameters`` signatures and constriction's quantized Gaussian),
so they decode where the arithmetic matches the machine that wrote them; elsewhere the index
checksum fails and the error says what to do.  Nothing writes them any more.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from models import entropy_coding
from models.codec import LATENT_STRIDE, SIDE_STRIDE, side_shape
from models.codefile import CodeFile, CodeFileError, index_checksum

_ELSEWHERE = (
    "this machine computes the floating-point hyperprior of a format-{version} file "
    "differently from the one that wrote it, so it would decode to a wrong image; decode it "
    "on a machine like that one (same TensorFlow, kernels and thread count) and compress the "
    "result again, which writes format 3 (exact on every machine)"
)


class LegacyDecoder:
    def __init__(self, compressor):
        self.compressor = compressor
        self.module = compressor.module

    def decompress(self, code: CodeFile) -> np.ndarray:
        y_hat, z_hat = self.decode_latents(code)
        return self.synthesize(y_hat, z_hat, code.height, code.width, code.quality)

    def _quality_args(self, quality) -> tuple:
        if not self.compressor.variable_rate:
            return ()
        return (tf.constant(quality, tf.float32),)

    def scale_indexes(self, z_hat: np.ndarray) -> np.ndarray:
        return self.module.scale_indexes(tf.constant(z_hat, tf.int32))["indexes"].numpy()

    def _decode_slices(self, code: CodeFile, z_hat: np.ndarray):
        """(y_hat, indexes) of a codec with channel slices, decoded slice after slice."""
        compressor = self.compressor
        decoder = entropy_coding.LatentDecoder(
            code.y_stream, compressor.scale_table, compressor.y_range
        )
        height, width = (side * SIDE_STRIDE // LATENT_STRIDE for side in z_hat.shape[:2])
        decoded = np.zeros((height, width, compressor.latent_channels), np.float32)
        y_hat = np.zeros(decoded.shape, np.int32)
        indexes = []
        for i, part in enumerate(compressor._slice_parts()):
            out = self.module.slice_parameters(
                tf.constant(z_hat, tf.int32), tf.constant(decoded, tf.float32), tf.constant(i)
            )
            indexes_i, means_i = out["indexes"].numpy(), out["means"].numpy()
            y_hat[..., part] = decoder.decode(indexes_i)
            decoded[..., part] = y_hat[..., part] + means_i
            indexes.append(indexes_i)
        return y_hat, np.concatenate(indexes, axis=-1)

    def decode_latents(self, code: CodeFile) -> tuple[np.ndarray, np.ndarray]:
        """(y_hat, z_hat) from a version 1 or 2 file's streams."""
        compressor = self.compressor
        z_shape = side_shape(code.height, code.width, compressor.z_pmf.shape[0])
        try:
            z_hat = entropy_coding.decode_z(
                code.z_stream, z_shape, compressor.z_pmf, compressor.z_range
            )
            if compressor.slices:
                y_hat, indexes = self._decode_slices(code, z_hat)
            else:
                indexes = self.scale_indexes(z_hat)
                y_hat = entropy_coding.decode_y(
                    code.y_stream, indexes, compressor.scale_table, compressor.y_range
                )
        except Exception as e:  # noqa: BLE001 - any coder failure means a bad stream or platform
            raise CodeFileError(
                f"corrupted code file (entropy decoding failed: {e}), or "
                + _ELSEWHERE.format(version=code.version)
            ) from e
        if index_checksum(indexes) != code.index_checksum:
            raise CodeFileError(_ELSEWHERE.format(version=code.version))
        return y_hat, z_hat

    def synthesize(self, y_hat, z_hat, height: int, width: int, quality) -> np.ndarray:
        latents = [tf.constant(y_hat, tf.int32), *self._quality_args(quality)]
        if self.compressor.mean_scale:
            latents.append(tf.constant(z_hat, tf.int32))
        return self.module.synthesize(*latents, height, width)["image"].numpy()
