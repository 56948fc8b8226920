"""The speed benchmarks still drive the models they measure (their figures are not tested:
speed is measured by running them, never asserted); the analysis tools compute what they say."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from benchmarks import (
    codec_speed,
    compare_runs,
    denoise_speed,
    latent_ceiling,
    prepare_memory,
    refinement,
)
from latentpress.samples import sample_paths
from tests.conftest import export_untrained_codec


def test_coding_search_compares_offset_and_shape_with_neither():
    from benchmarks import coding_search

    results = coding_search.main(["--images", "2", "--qualities", "100", "--repeats", "1"])
    top = results["q100"]
    assert len(top["offsets"]) == len(top["shapes"]) == 2
    # the shipped codec's top latents are wider and heavier-tailed than its Gaussians
    assert any(top["offsets"]) and any(top["shapes"])
    # each search's files are smaller, never larger
    assert top["offset_and_shape_bytes_ratio"] < top["offset_bytes_ratio"] < 1.0
    assert top["shape_over_offset_bytes_ratio"] < 1.0
    assert top["offset_and_shape_encode_time_ratio"] > 0


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


def test_refinement_benchmark_measures_each_step_count_on_real_files():
    rows = refinement.main(["--images", "1", "--qualities", "100", "--steps", "0,3"])
    assert [row["steps"] for row in rows] == [0, 3]
    assert rows[1]["loss"] < rows[0]["loss"]  # measured on the code files
    assert rows[0]["encode_x"] == 1.0 and rows[1]["encode_s_per_mp"] > 0


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


def test_codec_speed_builds_the_untrained_shape_it_is_given(tmp_path):
    """N,M,K,H,C,F: every field reaches the codec it times (C next to the latents, F next to
    the image), so a candidate's cost is that candidate's."""
    from models.export import load_model_card

    folder = codec_speed.export_untrained("16,24,3,8,5,5", str(tmp_path / "codec"))
    config = load_model_card(folder)["config"]
    assert (config["num_filters"], config["latent_filters"], config["hyper_filters"]) == (16, 24, 8)
    assert (config["kernel_size"], config["coarse_kernel_size"], config["fine_kernel_size"]) == (
        3,
        5,
        5,
    )


def test_latent_ceiling_rises_with_the_latents_and_is_lossless_at_full_size():
    """More latents per block keep more of the image; 768 (every value of a 16x16x3 block) keep
    all of it, so the PCA is real and the blocks are cut and measured right."""
    fit = latent_ceiling.blocks(sample_paths()[:2])
    test = latent_ceiling.blocks(sample_paths()[2:3])
    ceilings = latent_ceiling.linear_ceilings(fit, test, [64, 192, 256, 768])
    assert ceilings[64] < ceilings[192] < ceilings[256] < ceilings[768]
    assert ceilings[768] > 90  # exact after rounding
    assert 20 < ceilings[64] < 60


def _log_evaluations(run_dir, evaluations: dict[int, dict[str, float]]) -> None:
    """Eval scalars written as `latentpress train` writes them (tf.summary, RUN/logs)."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(run_dir / "logs"))
    with writer.as_default():
        for step, metrics in evaluations.items():
            for name, value in metrics.items():
                tf.summary.scalar(f"eval/{name}", value, step=step)
    writer.close()


def _levels(rates, psnrs, **more) -> dict[str, float]:
    qualities = [0, 25, 50, 75, 100]
    metrics = {f"bpp_q{q}": r for q, r in zip(qualities, rates, strict=True)}
    metrics.update({f"psnr_q{q}": p for q, p in zip(qualities, psnrs, strict=True)})
    return {"loss": 5.0, "psnr_unquantized": 36.0, **metrics, **more}


def test_compare_runs_gives_the_bd_rate_between_two_runs_eval_curves(tmp_path, capsys):
    """B codes every level's PSNR in 0.9x A's bits: 10% fewer bits over the whole curve and
    each half; a step evaluated again after a resume counts with its last value."""
    psnrs = [27.0, 30.0, 32.5, 34.0, 35.0]
    rates = [0.4, 0.8, 1.3, 1.9, 2.6]
    _log_evaluations(tmp_path / "a", {1000: _levels(rates, psnrs)})
    _log_evaluations(tmp_path / "b", {2000: _levels([2 * r for r in rates], psnrs)})
    _log_evaluations(tmp_path / "b", {2000: _levels([0.9 * r for r in rates], psnrs)})  # resumed
    (tmp_path / "b" / "lineage.json").write_text(json.dumps({"steps": 500}))  # warm-started
    result = compare_runs.main(
        [str(tmp_path / "a"), f"{tmp_path / 'b'}@2000", "--plot", str(tmp_path / "ab.png")]
    )
    for key in ("bd_rate_pct", "lower_half_bd_rate_pct", "upper_half_bd_rate_pct"):
        assert result[key] == pytest.approx(-10.0, abs=0.01)
    assert result["a"]["step"] == 1000 and result["bd_psnr_db"] > 0
    with Image.open(tmp_path / "ab.png") as picture:
        assert picture.size[0] > 300
    printed = capsys.readouterr().out
    assert "B against A: BD-rate -10.00%" in printed and "@ 2000 (2500 in all)" in printed
    history = compare_runs.main([str(tmp_path / "b"), "--history"])["history"]
    assert list(history) == [2000] and history[2000]["bpp_q0"] == pytest.approx(0.36)
    _log_evaluations(tmp_path / "a", {2000: _levels([2 * r for r in rates], psnrs)})
    course = compare_runs.main([str(tmp_path / "a"), str(tmp_path / "b"), "--history"])
    assert list(course["ab_history"]) == [2000]  # the only step both runs evaluated
    assert course["ab_history"][2000]["bd_rate_pct"] == pytest.approx(-55.0, abs=0.01)
    _log_evaluations(tmp_path / "c", {3000: _levels(rates, psnrs)})
    with pytest.raises(ValueError, match="share no evaluated step"):
        compare_runs.main([str(tmp_path / "a"), str(tmp_path / "c"), "--history"])
    with pytest.raises(ValueError, match="no evaluation at step 5"):
        compare_runs.main([str(tmp_path / "a"), f"{tmp_path / 'b'}@5"])
    with pytest.raises(FileNotFoundError, match="no training logs"):
        compare_runs.eval_history(str(tmp_path / "missing"))
    # a run trained with --rate-shapes measures its bits otherwise: never set against A
    _log_evaluations(tmp_path / "shapes", {1000: _levels(rates, psnrs, rate_shapes=1.0)})
    with pytest.raises(ValueError, match="cheapest coding shape"):
        compare_runs.main([str(tmp_path / "a"), str(tmp_path / "shapes")])
    with pytest.raises(ValueError, match="cheapest coding shape"):
        compare_runs.main([str(tmp_path / "a"), str(tmp_path / "shapes"), "--history"])

    # A as a model: an export whose card carries the curve it was exported with
    model = tmp_path / "export"
    (model / "saved_model").mkdir(parents=True)
    card = {"task": "codec", "cumulative_steps": 64539, "eval": _levels(rates, psnrs)}
    card["training_data"] = {"dir": "$LP_WORK/photos-320"}
    (model / "model_card.json").write_text(json.dumps(card))
    shipped = compare_runs.main([str(model), f"{tmp_path / 'b'}@2000"])
    assert shipped["bd_rate_pct"] == pytest.approx(-10.0, abs=0.01)
    assert shipped["a"]["step"] == 64539
    assert "eval split of $LP_WORK/photos-320" in capsys.readouterr().out
    with pytest.raises(ValueError, match="evaluated at step 64539 only"):
        compare_runs.main([f"{model}@1000", str(tmp_path / "b")])

    # a line's course against the model at every evaluation, and its pace: B gains 1% of
    # the bits per 1,000 steps, then stops (the plateau the last window sees)
    line = {
        step: _levels([(1 - gain) * r for r in rates], psnrs)
        for step, gain in ((4000, 0.01), (5000, 0.02), (6000, 0.03), (7000, 0.03), (8000, 0.03))
    }
    _log_evaluations(tmp_path / "line", line)
    course = compare_runs.main([str(model), str(tmp_path / "line"), "--history"])
    assert list(course["ab_history"]) == [4000, 5000, 6000, 7000, 8000]
    assert course["ab_history"][6000]["bd_rate_pct"] == pytest.approx(-3.0, abs=0.01)
    assert course["pace_pct_per_1000_steps"] < -0.4  # all five: still gaining on average
    plateau = compare_runs.main(
        [str(model), str(tmp_path / "line"), "--history", "--pace-window", "3"]
    )
    assert plateau["pace_pct_per_1000_steps"] == pytest.approx(0.0, abs=0.01)
    assert "pace over 6000-8000: BD-rate +0.000% per 1,000 steps" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        compare_runs.main([str(model), str(tmp_path / "line"), "--history", "--pace-window", "1"])
    early = {step: course["ab_history"][step] for step in (4000, 5000, 6000)}
    assert compare_runs.pace(early, 3) == pytest.approx(-1.0, abs=0.01)


def test_prepare_memory_runs_prepare_at_each_size_against_the_first():
    results = prepare_memory.main(
        ["--images", "2", "--patches-per-image", "1,8", "--patch-size", "128"]
    )
    baseline, larger = results["runs"]
    assert larger["output_mb"] > 2 * baseline["output_mb"] > 0
    assert baseline["peak_rss_mb"] > 100  # a real process that imported TensorFlow
    assert larger["peak_over_baseline"] > 0 and "mb_per_output_mb" in larger
