"""Whole-image inference helpers: tiled denoising and PSNR."""

from __future__ import annotations

import numpy as np
import pytest

from models import inference
from models.inference import Denoiser, psnr


def test_tiled_denoising_equals_denoising_the_whole_image():
    """Tiles overlap by more than the network's receptive field, so stitching is seamless."""
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:450, 0:700]
    clean = np.stack([(x // 7) % 256, (y // 5) % 256, ((x + y) // 9) % 256], -1)
    noisy = np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).astype(np.uint8)
    denoiser = Denoiser(tile=256)  # small tiles: 3 x 2 of them, seams both ways, in seconds
    tiled = denoiser.denoise(noisy)
    assert len(inference.tile_spans(700, denoiser.tile, denoiser.overlap, denoiser.align)) >= 3
    whole = denoiser._run(noisy)  # one pass over the whole image
    assert tiled.shape == noisy.shape
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1


def test_tiles_cover_the_image_with_overlap_on_the_block_grid():
    for size, align in ((1025, 1), (1500, 2), (2200, 1), (4097, 2), (1031, 4)):
        spans = inference.tile_spans(size, inference.TILE, 32, align)
        starts = np.array([start for start, _ in spans])
        ends = np.array([end for _, end in spans])
        assert starts[0] == 0 and ends[-1] == size
        assert (starts % align == 0).all()
        assert (ends[:-1] - starts[1:] >= 2 * 32).all()  # consecutive tiles overlap enough
        assert (ends - starts <= inference.TILE + align - 1).all()


@pytest.mark.parametrize(
    "config, tile",
    [
        (dict(depth=6, filters=8, unshuffle=2), 96),
        (dict(architecture="unet", filters=8, levels=3, blocks=1, unshuffle=2), 192),
    ],
    ids=["dncnn", "unet"],
)
def test_tiling_stays_exact_for_a_pixel_unshuffle_network(tmp_path, config, tile):
    """The overlap and the tile grid follow the network (depth or levels, unshuffle), not a
    constant: tiles start on the coarsest level's grid and overlap by its receptive field."""
    from models.denoiser import DenoiserConfig, build_denoiser
    from models.export import DENOISER, export_model

    config = DenoiserConfig(**config)
    model = build_denoiser(config)
    model.build_for_images()
    rng = np.random.default_rng(0)
    for layer in model.noise_estimator.layers:  # zero-initialized ones too: make every path count
        if getattr(layer, "kernel", None) is not None:
            layer.kernel.assign(rng.normal(0, 0.05, layer.kernel.shape))
    export_model(model, DENOISER, str(tmp_path), {"name": "tiling"})
    denoiser = Denoiser(str(tmp_path), tile=tile)
    assert denoiser.overlap >= config.receptive_radius and denoiser.align == config.align
    assert denoiser.align == (2 if config.architecture == "dncnn" else 8)

    noisy = rng.integers(0, 256, (251, 533, 3), dtype=np.uint8)
    tiled = denoiser.denoise(noisy)
    assert len(inference.tile_spans(533, denoiser.tile, denoiser.overlap, denoiser.align)) >= 3
    whole = denoiser._run(noisy)
    assert not np.array_equal(whole, noisy)
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1


def test_the_unet_receptive_radius_is_what_the_network_sees():
    """An input pixel changes output pixels up to receptive_radius away and none beyond it
    (the bound is what tiling relies on; tight, so tiles do not overlap more than needed)."""
    from models.denoiser import DenoiserConfig, build_denoiser

    config = DenoiserConfig(architecture="unet", filters=4, levels=3, blocks=1, unshuffle=2)
    model = build_denoiser(config)
    model.build_for_images()
    rng = np.random.default_rng(1)
    for layer in model.noise_estimator.layers:
        if getattr(layer, "kernel", None) is not None:
            layer.kernel.assign(rng.normal(0, 0.3, layer.kernel.shape))
    image = rng.uniform(0, 1, (1, 160, 160, 3)).astype(np.float32)
    poked = image.copy()
    poked[0, 80, 80] += 0.5
    changed = np.abs(model(poked).numpy() - model(image).numpy()).max(axis=-1)[0] > 1e-6
    rows, cols = np.nonzero(changed)
    reach = max(np.abs(rows - 80).max(), np.abs(cols - 80).max())
    assert config.receptive_radius - 2 * config.align <= reach <= config.receptive_radius


def test_psnr_is_capped_for_identical_images_and_finite_otherwise():
    image = np.full((4, 4, 3), 100, np.uint8)
    assert psnr(image, image) == inference.PSNR_CAP
    other = image.copy()
    other[0, 0, 0] = 110
    expected = 10 * np.log10(255**2 / (100 / image.size))
    assert abs(psnr(image, other) - expected) < 1e-3


def test_float_noise_goes_through_the_same_network_unrounded(tmp_path):
    """--float-noise: noise never rounded to 8 bits reaches the denoiser as float."""
    from models.denoiser import DenoiserConfig, DnCNN
    from models.export import DENOISER, export_model
    from transforms.denoise_baselines import add_noise

    model = DnCNN(DenoiserConfig(depth=3, filters=8))
    model.build_for_images()
    residual = model.noise_estimator.layers[-1]
    residual.kernel.assign(np.random.default_rng(0).normal(0, 0.05, residual.kernel.shape))
    export_model(model, DENOISER, str(tmp_path), {"name": "tiny"})
    denoiser = Denoiser(str(tmp_path))

    clean = np.full((40, 50, 3), 250, np.uint8)
    noisy = add_noise(clean, 25.0, seed=3, rounded=False)
    assert noisy.dtype == np.float32 and noisy.max() > 255  # neither rounded nor clipped
    assert not np.array_equal(noisy, np.rint(noisy))
    integral = add_noise(clean, 25.0, seed=3)
    np.testing.assert_array_equal(
        denoiser.denoise(integral.astype(np.float32)), denoiser.denoise(integral)
    )
    assert not np.array_equal(denoiser.denoise(noisy), denoiser.denoise(integral))


def test_each_ensemble_view_turns_back_to_the_image():
    pixels = np.arange(5 * 7 * 3).reshape(5, 7, 3)  # not square: a wrong inverse changes shape
    for quarter_turns, mirrored in inference.ENSEMBLE_VIEWS:
        seen = inference.view(pixels, quarter_turns, mirrored)
        np.testing.assert_array_equal(inference.unview(seen, quarter_turns, mirrored), pixels)
    assert len(set(inference.ENSEMBLE_VIEWS)) == max(inference.ENSEMBLE_SIZES)


def test_self_ensemble_is_the_mean_of_the_views_and_denoises_better():
    """On a real photograph with noise, averaging 8 views gains over one pass (the turned-back
    views are aligned: a misaligned mean would blur and lose several dB)."""
    from latentpress.samples import sample_paths
    from transforms.decode import decode_image

    with open(sample_paths()[0], "rb") as handle:
        clean = decode_image(handle.read())[:200, :300]
    noisy = np.clip(clean + np.random.default_rng(3).normal(0, 30, clean.shape), 0, 255)
    noisy = noisy.astype(np.uint8)
    single = Denoiser()
    pair = Denoiser(ensemble=2)
    eight = Denoiser(ensemble=8)
    mirrored = np.flip(single.denoise(np.ascontiguousarray(np.flip(noisy, 1))), 1)
    expected = np.rint((single.denoise(noisy).astype(np.float32) + mirrored) / 2)
    np.testing.assert_array_equal(pair.denoise(noisy), expected.astype(np.uint8))
    gain = psnr(clean, eight.denoise(noisy)) - psnr(clean, single.denoise(noisy))
    assert 0.02 < gain < 1.0


def test_an_ensemble_size_outside_the_views_is_refused():
    import pytest

    with pytest.raises(ValueError, match="ensemble 3"):
        Denoiser(ensemble=3)


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (9, 2), (17, 33)])
def test_a_unet_denoises_images_smaller_than_its_blocks(size):
    """Any image size: mirror padding to the coarsest level's blocks works also where the pad
    exceeds the image (a 3-pixel strip padded to 8), and the output has the input's size."""
    from models.denoiser import DenoiserConfig, build_denoiser

    model = build_denoiser(
        DenoiserConfig(architecture="unet", filters=4, levels=3, blocks=1, unshuffle=2)
    )
    image = np.random.default_rng(2).uniform(0, 1, (1, *size, 3)).astype(np.float32)
    out = model(image).numpy()
    assert out.shape == image.shape and np.isfinite(out).all()
