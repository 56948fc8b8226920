"""Running exported models on whole images: the denoiser (tiled when large) and PSNR."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from models import registry
from models.denoiser import DenoiserConfig
from models.export import load_saved_model

# Larger images are denoised in overlapping tiles so memory stays bounded (a 48-channel
# activation of a 24-megapixel image alone would take 4.6 GB).
TILE = 1024
DEFAULT_OVERLAP = 32  # for cards that do not describe their network
PSNR_CAP = 100.0  # identical images; keeps the manifest valid JSON
# Geometric self-ensemble: the denoiser runs on these (quarter turns, mirrored) views of the
# image and averages the results turned back. Ordered so that every prefix of length 2 or 4
# mixes mirrored and turned views; ENSEMBLE_SIZES are the prefixes offered.
ENSEMBLE_VIEWS = (
    (0, False),
    (0, True),
    (2, False),
    (2, True),
    (1, False),
    (1, True),
    (3, False),
    (3, True),
)
ENSEMBLE_SIZES = (1, 2, 4, 8)


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR in dB of two uint8 images, capped at PSNR_CAP."""
    if reference.shape != test.shape:
        raise ValueError(f"PSNR of images of other shapes: {reference.shape} vs {test.shape}")
    if np.array_equal(reference, test):
        return PSNR_CAP
    # exact integer sums a block of rows at a time: float64 copies of two 48-megapixel images
    # (skimage's way) would take 2.3 GB
    squared = 0
    for top in range(0, reference.shape[0], 256):
        difference = reference[top : top + 256].astype(np.int32) - test[top : top + 256]
        flat = difference.reshape(-1)
        squared += int(np.dot(flat.astype(np.int64), flat))
    value = 10.0 * np.log10(255.0**2 * reference.size / squared)
    return round(float(min(value, PSNR_CAP)), 4)


def tile_spans(size: int, tile: int, overlap: int, align: int = 1) -> list[tuple[int, int]]:
    """(start, end) of tiles covering [0, size), each overlapping the next by >= 2 * overlap.

    Starts are multiples of ``align`` (a network that works on align x align blocks sees the
    same blocks in a tile as in the whole image); the last tile ends at ``size``, so it may be
    up to ``align - 1`` pixels longer than ``tile``.
    """
    if size <= tile:
        return [(0, size)]
    step = (tile - 2 * overlap) // align * align
    last = (size - tile) // align * align
    starts = list(range(0, last, step)) + [last]
    return [(start, min(start + tile, size)) for start in starts[:-1]] + [(last, size)]


def view(pixels: np.ndarray, quarter_turns: int, mirrored: bool) -> np.ndarray:
    pixels = np.rot90(pixels, quarter_turns)
    return np.flip(pixels, 1) if mirrored else pixels


def unview(pixels: np.ndarray, quarter_turns: int, mirrored: bool) -> np.ndarray:
    """The inverse of ``view``."""
    if mirrored:
        pixels = np.flip(pixels, 1)
    return np.rot90(pixels, -quarter_turns)


class Denoiser:
    def __init__(
        self,
        model: str = registry.DEFAULT_DENOISER,
        tile: int = TILE,
        ensemble: int = 1,
        strength: float = 1.0,
    ):
        if ensemble not in ENSEMBLE_SIZES:
            raise ValueError(f"denoiser ensemble {ensemble}: choose one of {ENSEMBLE_SIZES}")
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"denoising strength {strength}: a share from 0 to 1")
        self.ensemble = ensemble
        # The network is blind (it estimates the noise itself); the strength only says how much
        # of that estimate to remove: 1 all of it, 0.5 half (keeps some grain), 0 none.
        self.strength = strength
        self.model_dir = registry.resolve(model)
        self.card = registry.card(self.model_dir, "denoiser")
        self.module = load_saved_model(self.model_dir)
        self.fingerprint = self.card["fingerprint"]
        self.tile = tile
        # The overlap follows the network: what one output pixel can see, rounded up to
        # whole steps of its coarsest level (where tiles start).
        config = DenoiserConfig.from_card(self.card)
        self.align = config.align
        if "depth" in (self.card.get("config") or {}):
            self.overlap = -(-config.receptive_radius // self.align) * self.align
        else:  # a card that does not say its depth
            self.overlap = DEFAULT_OVERLAP

    def _run(self, pixels: np.ndarray) -> np.ndarray:
        if pixels.dtype == np.uint8:
            return self.module.denoise(tf.constant(pixels, tf.uint8))["image"].numpy()
        if not hasattr(self.module, "denoise_float"):
            raise ValueError(f"denoiser {self.fingerprint} takes 8-bit images only (older export)")
        return self.module.denoise_float(tf.constant(pixels, tf.float32))["image"].numpy()

    def denoise(self, pixels: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8, or float on the 0-255 scale (noise never rounded) -> uint8 (H, W, 3).

        Tiled when a side exceeds the tile size; with ``ensemble`` > 1, the mean over that many
        turned and mirrored views (each view costs one pass); with ``strength`` < 1, that share
        of the estimated noise is removed."""
        if self.ensemble == 1:
            denoised = self._denoise_tiled(pixels).astype(np.float32)
        else:
            denoised = np.zeros(pixels.shape, np.float32)
            for quarter_turns, mirrored in ENSEMBLE_VIEWS[: self.ensemble]:
                seen = np.ascontiguousarray(view(pixels, quarter_turns, mirrored))
                denoised += unview(self._denoise_tiled(seen), quarter_turns, mirrored)
            denoised /= self.ensemble
        if self.strength != 1.0:
            noisy = pixels.astype(np.float32)
            denoised = noisy + self.strength * (denoised - noisy)
        return np.clip(np.rint(denoised), 0, 255).astype(np.uint8)

    def _denoise_tiled(self, pixels: np.ndarray) -> np.ndarray:
        height, width = pixels.shape[:2]
        if height <= self.tile and width <= self.tile:
            return self._run(pixels)
        out = np.empty(pixels.shape, np.uint8)
        for top, bottom in tile_spans(height, self.tile, self.overlap, self.align):
            for left, right in tile_spans(width, self.tile, self.overlap, self.align):
                tile = self._run(np.ascontiguousarray(pixels[top:bottom, left:right]))
                # keep each tile's interior; image borders keep the tile's edge too
                inner_top = 0 if top == 0 else self.overlap
                inner_left = 0 if left == 0 else self.overlap
                out[top + inner_top : bottom, left + inner_left : right] = tile[
                    inner_top:, inner_left:
                ]
        return out
