"""Range coding of the quantized latents with ``constriction``, driven by the model's tables.

* z (side information): one categorical model per channel, from the factorized prior's
  probabilities of the integers -z_range..z_range; coded channel by channel.
* y (latents): a zero-mean quantized Gaussian per element over -y_range..y_range, with the
  standard deviation looked up in the scale table at the element's index.

A codec with channel slices codes y slice after slice in one stream (a slice's scales depend on
the slices before it, so the decoder must have those first): ``encode_y(..., slices=S)`` and
``LatentDecoder.decode`` once per slice, in order.

Both ends compute identical models from identical inputs (the exported tables and the
integer indexes), which is what makes the streams decodable.
"""

from __future__ import annotations

import constriction
import numpy as np

_MODELS = constriction.stream.model


def _as_bytes(words: np.ndarray) -> bytes:
    return np.asarray(words, dtype="<u4").tobytes()


def _as_words(data: bytes) -> np.ndarray:
    if len(data) % 4:
        raise ValueError("stream length is not a multiple of 4 bytes")
    return np.frombuffer(data, dtype="<u4").astype(np.uint32)


def encode_z(z_hat: np.ndarray, z_pmf: np.ndarray, z_range: int) -> bytes:
    """z_hat: int [h, w, channels] in [-z_range, z_range]."""
    encoder = constriction.stream.queue.RangeEncoder()
    symbols = (z_hat.astype(np.int32) + z_range).reshape(-1, z_hat.shape[-1])
    for channel in range(z_hat.shape[-1]):
        model = _MODELS.Categorical(z_pmf[channel].astype(np.float64), perfect=False)
        encoder.encode(symbols[:, channel].copy(), model)
    return _as_bytes(encoder.get_compressed())


def decode_z(data: bytes, shape: tuple[int, int, int], z_pmf: np.ndarray, z_range: int):
    decoder = constriction.stream.queue.RangeDecoder(_as_words(data))
    count = shape[0] * shape[1]
    channels = [
        decoder.decode(_MODELS.Categorical(z_pmf[c].astype(np.float64), perfect=False), count)
        for c in range(shape[2])
    ]
    return (np.stack(channels, axis=-1).astype(np.int32) - z_range).reshape(shape)


def _gaussian(y_range: int):
    return _MODELS.QuantizedGaussian(-y_range, y_range)


def _stds(indexes: np.ndarray, scale_table: np.ndarray) -> np.ndarray:
    return scale_table.astype(np.float64)[indexes.reshape(-1)]


def encode_y(
    y_hat: np.ndarray, indexes: np.ndarray, scale_table, y_range: int, slices: int = 1
) -> bytes:
    """y_hat, indexes: int [h, w, channels]; y_hat in [-y_range, y_range]; with ``slices``,
    the channels' equal slices one after the other."""
    encoder = constriction.stream.queue.RangeEncoder()
    for part, part_indexes in zip(
        np.split(y_hat, slices, axis=-1), np.split(indexes, slices, axis=-1), strict=True
    ):
        stds = _stds(part_indexes, scale_table)
        symbols = part.reshape(-1).astype(np.int32)
        encoder.encode(symbols, _gaussian(y_range), np.zeros_like(stds), stds)
    return _as_bytes(encoder.get_compressed())


class LatentDecoder:
    """Decodes a y stream part by part: each ``decode`` call takes the next part's indexes."""

    def __init__(self, data: bytes, scale_table, y_range: int):
        self._decoder = constriction.stream.queue.RangeDecoder(_as_words(data))
        self._scale_table = scale_table
        self._y_range = y_range

    def decode(self, indexes: np.ndarray) -> np.ndarray:
        stds = _stds(indexes, self._scale_table)
        values = self._decoder.decode(_gaussian(self._y_range), np.zeros_like(stds), stds)
        return np.asarray(values, dtype=np.int32).reshape(indexes.shape)


def decode_y(data: bytes, indexes: np.ndarray, scale_table, y_range: int) -> np.ndarray:
    return LatentDecoder(data, scale_table, y_range).decode(indexes)


# --- format 3: integer tables from the exact model (``models.exact``) -----------------------
# Every distribution is a stored table of integer frequencies, so coder and decoder build
# identical models on any machine.  The latents of one scale index are coded together (one
# table), in raster order within each index, indexes in increasing order; the decoder knows
# the indexes before it reads a latent, so it walks the same order.


def _table(frequencies: np.ndarray):
    return _MODELS.Categorical(frequencies.astype(np.float64), perfect=False)


def encode_table_symbols(encoder, symbols: np.ndarray, frequencies: np.ndarray) -> None:
    """Codes int ``symbols`` [n, channels] (already offset to 0..) with one table a channel."""
    for channel in range(symbols.shape[-1]):
        encoder.encode(
            np.ascontiguousarray(symbols[:, channel], np.int32), _table(frequencies[channel])
        )


def encode_z_exact(z_hat: np.ndarray, frequencies: np.ndarray, z_range: int) -> bytes:
    encoder = constriction.stream.queue.RangeEncoder()
    symbols = (z_hat.astype(np.int32) + z_range).reshape(-1, z_hat.shape[-1])
    encode_table_symbols(encoder, symbols, frequencies)
    return _as_bytes(encoder.get_compressed())


def decode_z_exact(data: bytes, shape, frequencies: np.ndarray, z_range: int) -> np.ndarray:
    decoder = constriction.stream.queue.RangeDecoder(_as_words(data))
    count = shape[0] * shape[1]
    channels = [decoder.decode(_table(frequencies[c]), count) for c in range(shape[2])]
    return (np.stack(channels, axis=-1).astype(np.int32) - z_range).reshape(shape)


def _groups_by_index(indexes: np.ndarray, count: int):
    """(index, flat positions in raster order) of each scale index in use, in increasing
    order: the one coding order the encoder and the decoder both walk."""
    flat = indexes.reshape(-1)
    order = np.argsort(flat, kind="stable")
    bounds = np.searchsorted(flat[order], np.arange(count + 1))
    for index in range(count):
        group = order[bounds[index] : bounds[index + 1]]
        if group.size:
            yield index, group


class ExactLatentEncoder:
    """Codes y part by part (a codec with slices: one part per slice, in order)."""

    def __init__(self, frequencies: np.ndarray, y_range: int):
        self._encoder = constriction.stream.queue.RangeEncoder()
        self._frequencies = frequencies
        self._y_range = y_range

    def encode(self, code: np.ndarray, indexes: np.ndarray) -> None:
        symbols = np.clip(code.reshape(-1), -self._y_range, self._y_range).astype(np.int32)
        symbols += self._y_range
        for index, group in _groups_by_index(indexes, len(self._frequencies)):
            self._encoder.encode(symbols[group], _table(self._frequencies[index]))

    def stream(self) -> bytes:
        return _as_bytes(self._encoder.get_compressed())


class ExactLatentDecoder:
    """Reads y part by part, each with its indexes (``ExactLatentEncoder``'s order)."""

    def __init__(self, data: bytes, frequencies: np.ndarray, y_range: int):
        self._decoder = constriction.stream.queue.RangeDecoder(_as_words(data))
        self._frequencies = frequencies
        self._y_range = y_range

    def decode(self, indexes: np.ndarray) -> np.ndarray:
        code = np.empty(indexes.size, np.int16)
        for index, group in _groups_by_index(indexes, len(self._frequencies)):
            values = self._decoder.decode(_table(self._frequencies[index]), group.size)
            code[group] = np.asarray(values, np.int32) - self._y_range
        return code.reshape(indexes.shape)
