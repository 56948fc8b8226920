"""Code files of formats 1 and 2, written as latentpress wrote them before format 3: the
floating-point hyperprior of the SavedModel's ``analyze``/``scale_indexes`` signatures and
constriction's quantized Gaussian.  Nothing in the product writes them any more; the tests
need real ones to check that they still decode."""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import tensorflow as tf

from models import entropy_coding
from models.codefile import MAGIC


def legacy_code_file(compressor, pixels: np.ndarray, quality=None, version: int = 2) -> bytes:
    """A version-1 (one-rate codecs) or version-2 file of ``pixels`` by ``compressor``'s
    model (no channel slices)."""
    module = compressor.module
    args = (tf.constant(quality, tf.float32),) if compressor.variable_rate else ()
    latents = module.analyze(tf.constant(pixels), *args)
    y_hat, z_hat = latents["y_hat"].numpy(), latents["z_hat"].numpy()
    indexes = module.scale_indexes(tf.constant(z_hat))["indexes"].numpy()
    z_stream = entropy_coding.encode_z(z_hat, compressor.z_pmf, compressor.z_range)
    y_stream = entropy_coding.encode_y(y_hat, indexes, compressor.scale_table, compressor.y_range)
    height, width = pixels.shape[:2]
    fields = [MAGIC, version, bytes.fromhex(compressor.fingerprint), height, width, 3]
    if version == 2:
        fields.append(math.nan if quality is None else quality)
    crc = zlib.crc32(np.ascontiguousarray(indexes, dtype="<i4").tobytes())
    fields += [crc, len(z_stream), len(y_stream)]
    layout = ">4sB8sIIBIII" if version == 1 else ">4sB8sIIBfIII"
    body = struct.pack(layout, *fields) + z_stream + y_stream
    return body + struct.pack(">I", zlib.crc32(body))
