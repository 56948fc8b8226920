"""Running exported models on whole images: the denoiser (tiled when large) and PSNR."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from models import registry
from models.export import load_model_card, load_saved_model

# Larger images are denoised in overlapping tiles so memory stays bounded (a 48-channel
# activation of a 24-megapixel image alone would take 4.6 GB).
TILE = 1024
OVERLAP = 32  # more than the receptive field radius of the default network (10 3x3 layers)
PSNR_CAP = 100.0  # identical images; keeps the manifest valid JSON


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR in dB of two uint8 images, capped at PSNR_CAP."""
    from skimage.metrics import peak_signal_noise_ratio

    if np.array_equal(reference, test):
        return PSNR_CAP
    value = peak_signal_noise_ratio(reference, test, data_range=255)
    return round(float(min(value, PSNR_CAP)), 4)


def _tile_starts(size: int) -> list[int]:
    if size <= TILE:
        return [0]
    step = TILE - 2 * OVERLAP
    count = math.ceil((size - 2 * OVERLAP) / step)
    return [min(i * step, size - TILE) for i in range(count)]


class Denoiser:
    def __init__(self, model: str = registry.DEFAULT_DENOISER):
        self.model_dir = registry.resolve(model)
        self.card = load_model_card(self.model_dir)
        self.module = load_saved_model(self.model_dir)
        self.fingerprint = self.card["fingerprint"]

    def _run(self, pixels: np.ndarray) -> np.ndarray:
        return self.module.denoise(tf.constant(pixels, tf.uint8))["image"].numpy()

    def denoise(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 3) -> uint8 (H, W, 3); tiles with overlap beyond TILE pixels a side."""
        height, width = pixels.shape[:2]
        if height <= TILE and width <= TILE:
            return self._run(pixels)
        out = np.empty_like(pixels)
        for top in _tile_starts(height):
            for left in _tile_starts(width):
                tile = self._run(np.ascontiguousarray(pixels[top : top + TILE, left : left + TILE]))
                # keep each tile's interior; image borders keep the tile's edge too
                inner_top = 0 if top == 0 else OVERLAP
                inner_left = 0 if left == 0 else OVERLAP
                out[
                    top + inner_top : top + tile.shape[0], left + inner_left : left + tile.shape[1]
                ] = tile[inner_top:, inner_left:]
        return out
