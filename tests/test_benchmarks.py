"""The speed benchmarks still drive the models they measure (their figures are not tested:
speed is measured by running them, never asserted)."""

from __future__ import annotations

from benchmarks import codec_speed, denoise_speed, latent_ceiling
from latentpress.samples import sample_paths
from tests.conftest import export_untrained_codec


def test_codec_speed_measures_a_real_round_trip_of_the_shipped_codec():
    results = codec_speed.main(["--images", "1", "--repeats", "1"])
    times = results["ms_per_megapixel"]
    assert times["encode_total"] > 0 and times["decode_total"] > 0
    assert 0 < results["bpp"]["codec"] < 24  # a real code file's size, header included


def test_codec_speed_times_each_end_of_the_rate_range():
    """--quality reaches the codec: the top of the range codes more bits than the bottom."""
    ends = {
        quality: codec_speed.main(["--images", "1", "--repeats", "1", "--quality", quality])
        for quality in ("0", "100")
    }
    assert ends["0"]["quality"] == 0 and ends["100"]["quality"] == 100
    assert ends["100"]["bpp"]["codec"] > 1.5 * ends["0"]["bpp"]["codec"]


def test_codec_speed_times_a_codec_with_channel_slices(tmp_path):
    model = export_untrained_codec(tmp_path / "slices", "slices", mean_scale=True, slices=3)
    results = codec_speed.main(["--model", model, "--images", "1", "--repeats", "1"])
    assert results["ms_per_megapixel"]["decode_total"] > 0
    assert 0 < results["bpp"]["codec"] < 24


def test_denoise_speed_times_the_denoiser_and_its_ensemble():
    results = denoise_speed.main(["--images", "1", "--ensembles", "1,2", "--no-cbm3d"])
    times = results["cpu_seconds_per_megapixel"]
    assert set(times) == {"denoiser x1", "denoiser x2"}
    assert times["denoiser x2"] > times["denoiser x1"] > 0


def test_codec_speed_times_an_untrained_shape_beside_a_baseline():
    """--untrained N,M,K,H builds and exports that codec (3x3 kernels here) and times it beside
    the baseline in the same run, image by image."""
    results = codec_speed.main(
        [
            "--untrained",
            "24,32,3,16",
            "--baseline-model",
            "codec",
            "--images",
            "1",
            "--repeats",
            "1",
        ]
    )
    assert results["baseline_ms_per_megapixel"]["decode_network"] > 0
    ratios = results["over_baseline"]
    assert set(ratios) == {"encode_network", "decode_network", "encode", "decode"}
    assert all(value > 0 for value in ratios.values())


def test_latent_ceiling_rises_with_the_latents_and_is_lossless_at_full_size():
    """More latents per block keep more of the image; 768 (every value of a 16x16x3 block) keep
    all of it, so the PCA is real and the blocks are cut and measured right."""
    fit = latent_ceiling.blocks(sample_paths()[:2])
    test = latent_ceiling.blocks(sample_paths()[2:3])
    ceilings = latent_ceiling.linear_ceilings(fit, test, [64, 192, 256, 768])
    assert ceilings[64] < ceilings[192] < ceilings[256] < ceilings[768]
    assert ceilings[768] > 90  # exact after rounding
    assert 20 < ceilings[64] < 60
