"""Statistics of each noise model and the SPEC grammar."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from transforms import noise

MID_GRAY = np.full((256, 256, 3), 128, np.uint8)


def test_gaussian_sigma_matches_on_unclipped_pixels(rng):
    spec = noise.parse_spec("gaussian:25")
    noisy, applied = spec.apply(MID_GRAY, rng)
    residual = noisy.astype(float) - MID_GRAY
    unclipped = (noisy > 0) & (noisy < 255)
    assert abs(residual[unclipped].std() - 25) < 0.5
    assert abs(residual[unclipped].mean()) < 0.5
    assert applied == [{"model": "gaussian", "sigma": 25.0}]


def test_gaussian_range_draws_sigma_uniformly(rng):
    spec = noise.parse_spec("gaussian:5-50")
    sigmas = [spec.apply(MID_GRAY[:4, :4], rng)[1][0]["sigma"] for _ in range(400)]
    assert 5 <= min(sigmas) < 8 and 47 < max(sigmas) <= 50
    assert abs(np.mean(sigmas) - 27.5) < 2.0


def test_poisson_variance_follows_the_peak(rng):
    peak = 30.0
    noisy, _ = noise.parse_spec(f"poisson:{peak}").apply(MID_GRAY, rng)
    photons_expected = 128 / 255 * peak
    # noisy = photons / peak * 255 (rounded): variance of photons equals their mean
    photons = noisy.astype(float) / 255 * peak
    assert abs(photons.mean() - photons_expected) < 0.1
    assert abs(photons.var() / photons_expected - 1.0) < 0.05


def test_saltpepper_density_and_values(rng):
    noisy, _ = noise.parse_spec("saltpepper:0.1").apply(MID_GRAY, rng)
    changed = (noisy != 128).any(axis=-1)
    assert abs(changed.mean() - 0.1) < 0.01
    values = noisy[changed]
    assert set(np.unique(values)) <= {0, 255}
    assert (values[:, 0] == values[:, 2]).all()  # a pixel's channels flip together
    assert abs((values[:, 0] == 255).mean() - 0.5) < 0.05


def test_speckle_variance_is_relative_to_intensity(rng):
    variance = 0.04
    noisy, _ = noise.parse_spec(f"speckle:{variance}").apply(MID_GRAY, rng)
    unit = 128 / 255
    relative = (noisy.astype(float) / 255 - unit) / unit
    assert abs(relative.var() - variance) < 0.002


def test_jpeg_equals_pillow_at_that_quality(rng):
    image = np.asarray(Image.radial_gradient("L").convert("RGB").resize((96, 64)))
    noisy, applied = noise.parse_spec("jpeg:20").apply(image, rng)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=20)
    expected = np.asarray(Image.open(buffer).convert("RGB"))
    np.testing.assert_array_equal(noisy, expected)
    assert applied == [{"model": "jpeg", "quality": 20.0}]


def test_jpeg_range_draws_integer_qualities(rng):
    spec = noise.parse_spec("jpeg:10-40")
    qualities = {spec.apply(MID_GRAY[:8, :8], rng)[1][0]["quality"] for _ in range(100)}
    assert all(q == int(q) and 10 <= q <= 40 for q in qualities)
    assert len(qualities) > 10


def test_mix_picks_one_model_per_patch(rng):
    spec = noise.parse_spec("mix:gaussian:5-50+jpeg:20-60")
    picks = [tuple(a["model"] for a in spec.apply(MID_GRAY[:8, :8], rng)[1]) for _ in range(200)]
    assert set(picks) == {("gaussian",), ("jpeg",)}
    assert 60 < picks.count(("gaussian",)) < 140


def test_chain_applies_models_in_order(rng):
    spec = noise.parse_spec("chain:gaussian:10+jpeg:50")
    noisy, applied = spec.apply(MID_GRAY[:32, :32], rng)
    assert [a["model"] for a in applied] == ["gaussian", "jpeg"]
    assert noisy.dtype == np.uint8


def test_float_noise_is_the_same_draw_unrounded_and_unclipped():
    x = np.full((32, 32, 3), 250, np.uint8)
    spec = noise.parse_spec("chain:jpeg:50+gaussian:20")
    rounded, _ = spec.apply(x, np.random.default_rng(3))
    unrounded, _ = spec.apply(x, np.random.default_rng(3), rounded=False)
    assert rounded.dtype == np.uint8 and unrounded.dtype == np.float64
    assert unrounded.max() > 255 and not np.array_equal(unrounded, np.rint(unrounded))
    np.testing.assert_array_equal(rounded, np.clip(np.rint(unrounded), 0, 255))


def test_same_seed_same_noise_other_seed_other_noise():
    spec = noise.parse_spec("gaussian:0-55")
    a, _ = spec.apply(MID_GRAY, np.random.default_rng(7))
    b, _ = spec.apply(MID_GRAY, np.random.default_rng(7))
    c, _ = spec.apply(MID_GRAY, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert (a != c).mean() > 0.5


@pytest.mark.parametrize(
    "text",
    [
        "",
        "gauss:25",
        "gaussian",
        "gaussian:abc",
        "gaussian:50-10",
        "jpeg:0",
        "mix:",
        "saltpepper:2",
    ],
)
def test_bad_specs_raise_readable_errors(text):
    with pytest.raises(ValueError, match="noise"):
        noise.parse_spec(text)


def _photo_patch() -> np.ndarray:
    from latentpress.samples import sample_paths

    path = next(p for p in sample_paths() if p.endswith("chelsea.png"))
    return np.asarray(Image.open(path).convert("RGB"))[:128, :128]


def test_camera_noise_grows_with_its_level_and_is_correlated_like_a_demosaiced_sensor():
    clean = _photo_patch()
    spec = noise.parse_spec("camera:0.2")
    low = [spec.apply(clean, np.random.default_rng(s))[0] for s in range(6)]
    high = [
        noise.parse_spec("camera:0.9").apply(clean, np.random.default_rng(s))[0] for s in range(6)
    ]

    def error(images):
        return np.mean([np.mean((i.astype(float) - clean) ** 2) for i in images])

    assert error(high) > 4 * error(low) > 0

    # Bayer sites share their noise with neighbours through demosaicing; AWGN does not.
    def neighbour_correlation(noisy):
        residual = noisy.astype(float) - clean
        return np.corrcoef(residual[:, :-1].ravel(), residual[:, 1:].ravel())[0, 1]

    camera = np.mean([neighbour_correlation(i) for i in high])
    gaussian = neighbour_correlation(
        noise.parse_spec("gaussian:25").apply(clean, np.random.default_rng(0))[0]
    )
    assert camera > 0.2 and abs(gaussian) < 0.05


def test_camera_noise_is_seeded():
    clean = _photo_patch()
    spec = noise.parse_spec("mix:camera:0-1+gaussian:0-55")
    first = spec.apply(clean, np.random.default_rng([3, 7]))
    again = spec.apply(clean, np.random.default_rng([3, 7]))
    np.testing.assert_array_equal(first[0], again[0])
    assert first[1] == again[1]
