"""Whole-image inference helpers: tiled denoising and PSNR."""

from __future__ import annotations

import numpy as np

from models import inference
from models.inference import Denoiser, psnr


def test_tiled_denoising_equals_denoising_the_whole_image():
    """Tiles overlap by more than the network's receptive field, so stitching is seamless."""
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:1300, 0:2200]
    clean = np.stack([(x // 7) % 256, (y // 5) % 256, ((x + y) // 9) % 256], -1)
    noisy = np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).astype(np.uint8)
    denoiser = Denoiser()
    tiled = denoiser.denoise(noisy)  # 2200 x 1300 > TILE: goes through the tiles
    assert max(noisy.shape[:2]) > inference.TILE
    whole = denoiser._run(noisy)  # one pass over the whole image
    assert tiled.shape == noisy.shape
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1


def test_tile_starts_cover_the_image_with_overlap():
    for size in (1025, 1500, 2200, 4097):
        starts = inference._tile_starts(size)
        assert starts[0] == 0 and starts[-1] + inference.TILE == size
        steps = np.diff(starts)
        assert (steps > 0).all() and (steps <= inference.TILE - 2 * inference.OVERLAP).all()


def test_psnr_is_capped_for_identical_images_and_finite_otherwise():
    image = np.full((4, 4, 3), 100, np.uint8)
    assert psnr(image, image) == inference.PSNR_CAP
    other = image.copy()
    other[0, 0, 0] = 110
    expected = 10 * np.log10(255**2 / (100 / image.size))
    assert abs(psnr(image, other) - expected) < 1e-3
