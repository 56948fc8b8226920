"""The evaluation stage: Bjøntegaard deltas on known cases, codec points from real files, and
the report end to end on real images."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from models import registry
from pipelines import evaluate, evaluate_report
from tests.conftest import copy_samples, export_untrained_codec, sample_paths, shared_dataset
from transforms import rate_distortion

RATES = [0.1, 0.2, 0.4, 0.8, 1.6]


def quality_at(rate: float) -> float:
    return 30.0 + 6.0 * math.log2(rate)  # 6 dB per doubling, like a real codec's slope


def test_bd_rate_of_a_curve_needing_a_known_fraction_of_the_bits():
    anchor = [(r, quality_at(r)) for r in RATES]
    for factor in (0.8, 0.5, 1.25):
        test = [(r * factor, q) for r, q in anchor]  # same quality for factor x the bits
        assert rate_distortion.bd_rate(anchor, test) == pytest.approx(100 * (factor - 1), abs=1e-6)
        # at equal rate the better curve gains 6 dB per halving of the bits it needs
        expected_gain = -6.0 * math.log2(factor)
        assert rate_distortion.bd_quality(anchor, test) == pytest.approx(expected_gain, abs=1e-6)


def test_rates_at_their_points_take_the_bd_rate_apart_by_quality():
    """Our bits at each of another codec's points: a curve needing 0.8x the bits below 25 dB
    and 1.25x above shows -20% at the low points, +25% at the high ones (the BD-rate alone
    would average them away), and nothing where our curve does not reach."""
    theirs = [{"setting": f"q{i}", "bpp": r, "psnr_db": quality_at(r)} for i, r in enumerate(RATES)]
    ours = [
        {"bpp": r * (0.8 if quality_at(r) < 25 else 1.25), "psnr_db": quality_at(r)}
        for r in RATES[:-1]  # ours stops below their top point
    ]
    rows = evaluate_report.rates_at_their_points({"latentpress": ours, "webp": theirs})["webp"]
    assert [row["setting"] for row in rows] == ["q0", "q1", "q2", "q3", "q4"]
    changes = [row["rate_change_pct"] for row in rows]
    assert changes[:3] == [pytest.approx(-20.0)] * 3
    assert changes[3] == pytest.approx(25.0)
    assert changes[4] is None and rows[4]["our_bpp"] is None
    assert rows[0]["our_bpp"] == pytest.approx(0.08)
    lines = evaluate_report._rates_at_their_points_lines({"webp": rows})
    assert "| webp | q0 | 10.07 | 0.100 | 0.080 | -20.0% |" in lines
    assert any(line.startswith("| webp | q4 |") and "beyond" in line for line in lines)


def test_bd_figures_need_two_points_and_an_overlap():
    anchor = [(r, quality_at(r)) for r in RATES]
    assert rate_distortion.bd_rate(anchor, [(0.3, 25.0)]) is None
    assert "fewer than two" in rate_distortion.why_no_delta(anchor, [(0.3, 25.0)])
    assert rate_distortion.why_no_delta(anchor, anchor) == ""
    far_better = [(r, quality_at(r) + 100) for r in RATES]
    assert rate_distortion.bd_rate(anchor, far_better) is None
    assert "do not overlap in quality" in rate_distortion.why_no_delta(anchor, far_better)


def test_a_missing_bd_figure_says_why_in_the_results_and_the_headline():
    ours = [{"bpp": r, "psnr_db": quality_at(r) + 100, "ms_ssim_db": 9.0 + r} for r in RATES]
    jpeg = [{"bpp": r, "psnr_db": quality_at(r), "ms_ssim_db": 9.0 + r} for r in RATES]
    deltas = evaluate_report.bjontegaard({"latentpress": ours, "jpeg": jpeg})
    delta = deltas["latentpress vs jpeg"]
    assert delta["bd_rate_psnr_pct"] is None and delta["bd_rate_msssim_pct"] is not None
    assert set(delta["not_available"]) == {"psnr"}
    assert "do not overlap" in delta["not_available"]["psnr"]


def test_bd_rate_is_order_independent_and_uses_the_overlap_only():
    anchor = [(r, quality_at(r)) for r in RATES]
    shifted = [(r * 0.7, quality_at(r)) for r in RATES[1:]]  # a shorter curve
    forward = rate_distortion.bd_rate(anchor, shifted)
    assert forward == pytest.approx(-30.0, abs=1e-6)
    assert rate_distortion.bd_rate(anchor[::-1], shifted[::-1]) == pytest.approx(forward)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from latentpress.samples import sample_paths

    with Image.open(sample_paths()[2]) as image:  # chelsea, a real photograph
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("codec", rate_distortion.available_codecs())
def test_classical_points_are_reproducible_and_rate_is_the_file_size(photo, codec):
    low, high = rate_distortion.CLASSICAL[codec][1][1], rate_distortion.CLASSICAL[codec][1][-2]
    first = rate_distortion.encode(photo, codec, low)
    assert rate_distortion.encode(photo, codec, low) == first
    more = rate_distortion.encode(photo, codec, high)
    assert len(more) > len(first)  # the sweep runs from low to high rate
    decoded_low, decoded_high = rate_distortion.decode(first), rate_distortion.decode(more)
    assert decoded_low.shape == photo.shape
    assert rate_distortion.psnr(photo, decoded_high) > rate_distortion.psnr(photo, decoded_low)
    assert rate_distortion.bits_per_pixel(len(first), photo) == 8 * len(first) / (
        photo.shape[0] * photo.shape[1]
    )


def test_ms_ssim_matches_tensorflow_and_orders_quality(photo):
    import tensorflow as tf

    poor = rate_distortion.decode(rate_distortion.encode(photo, "jpeg", 10))
    good = rate_distortion.decode(rate_distortion.encode(photo, "jpeg", 90))
    reference = tf.image.ssim_multiscale(
        tf.constant(photo[None], tf.float32), tf.constant(good[None], tf.float32), 255.0
    )
    assert rate_distortion.ms_ssim(photo, good) == pytest.approx(float(reference[0]), abs=1e-5)
    assert rate_distortion.ms_ssim(photo, poor) < rate_distortion.ms_ssim(photo, good) < 1.0
    assert rate_distortion.ms_ssim(photo, photo) == pytest.approx(1.0, abs=1e-6)


@pytest.fixture(scope="module")
def second_codec(tmp_path_factory) -> str:
    return export_untrained_codec(tmp_path_factory.mktemp("second_codec"), "second")


def test_report_end_to_end_on_real_images(tmp_path, second_codec):
    images = tmp_path / "images"
    images.mkdir()
    for path in copy_samples(tmp_path / "samples", 2, 4):  # chelsea, coffee
        with Image.open(path) as image:
            image.convert("RGB").crop((0, 0, 192, 176)).save(images / path.name)
    (images / "broken.png").write_bytes(b"not an image at all")
    out = tmp_path / "report"
    evaluate.run(
        [
            f"--images={images}/*.png",
            f"--out={out}",
            "--model=codec",
            f"--model={second_codec}",
            "--qualities=0,100",  # the shipped codec is variable-rate: two of its points
            "--codecs=jpeg,webp",
            "--baselines=wavelet",
            "--sigma=25",
            "--runner=DirectRunner",
        ],
        save_main_session=False,
    )
    results = json.loads((out / "results.json").read_text())
    # 2 qualities of the variable-rate codec, the one-rate second codec, JPEG and WebP sweeps,
    # noisy/ours/wavelet
    tasks_per_image = 3 + 12 + 11 + 3
    assert len(results["points"]) == 3 * tasks_per_image
    assert len(results["failed"]) == tasks_per_image  # the broken file's, each with a reason
    assert all("broken.png" in p["path"] and p["error"] for p in results["failed"])
    # every rate is the real size of the bytes written
    ours = [p for p in results["points"] if p.get("codec") == "latentpress" and "error" not in p]
    assert all(p["bpp"] == 8 * p["bytes"] / p["pixels"] for p in ours)
    curves = results["curves"]
    assert [len(curves[c]) for c in ("latentpress", "jpeg", "webp")] == [3, 12, 11]
    assert set(results["bjontegaard"]) >= {"latentpress vs jpeg", "webp vs jpeg"}
    assert results["bjontegaard"]["webp vs jpeg"]["bd_rate_psnr_pct"] is not None
    table = results["denoising"]["25"]
    assert table["latentpress"]["psnr_db"] > table["noisy"]["psnr_db"] + 3
    for name in ("rd_psnr.png", "rd_msssim.png", "grid.png"):
        with Image.open(out / name) as image:
            assert image.size[0] > 300
    # our bits at every point of WebP's sweep, from the same curves
    at_webp = results["rates_at_their_points"]["webp"]
    assert len(at_webp) == 11 and any(row["our_bpp"] is not None for row in at_webp)
    report = (out / "report.md").read_text()
    assert "webp vs jpeg" in report and "grid.png" in report
    assert "| webp | " in report

    # Re-running one part replaces that part's points and keeps the other part's.
    evaluate.run(
        [f"--images={images}/*.png", f"--out={out}", "--model=codec", "--qualities=50"]
        + ["--codecs=jpeg"]
        + ["--no-denoise", "--runner=DirectRunner"],
        save_main_session=False,
    )
    again = json.loads((out / "results.json").read_text())
    assert set(again["curves"]) == {"latentpress", "jpeg"}
    assert again["denoising"] == results["denoising"]


def test_codec_settings_replace_a_classical_sweep_and_bad_ones_fail_first(tmp_path):
    """--codec-settings jpeg=...: JPEG is measured at exactly those qualities (e.g. without
    the one a set of decoded JPEGs was saved at), the others keep their sweeps, the report's
    config says which; a malformed flag stops the run before any work, naming itself."""
    images = tmp_path / "images"
    images.mkdir()
    for path in copy_samples(tmp_path / "samples", 2):
        with Image.open(path) as image:
            image.convert("RGB").crop((0, 0, 128, 96)).save(images / path.name)
    out = tmp_path / "report"
    common = [f"--images={images}/*.png", "--model=codec", "--qualities=0,100", "--no-denoise"]
    evaluate.run(
        [*common, f"--out={out}", "--codecs=jpeg,webp", "--codec-settings=jpeg=30,60,93,97"]
        + ["--runner=DirectRunner"],
        save_main_session=False,
    )
    results = json.loads((out / "results.json").read_text())
    assert [p["setting"] for p in results["curves"]["jpeg"]] == [30, 60, 93, 97]
    default_webp = list(rate_distortion.CLASSICAL["webp"][1])
    assert sorted(p["setting"] for p in results["curves"]["webp"]) == default_webp
    assert results["config"]["codec_settings"] == {"jpeg": [30, 60, 93, 97], "webp": default_webp}
    for bad in ("jpg=50", "jpeg=", "jpeg=50,high", "jpeg=0,50"):
        with pytest.raises(ValueError, match="--codec-settings"):
            evaluate.run(
                [*common, f"--out={tmp_path / 'bad'}", f"--codec-settings={bad}"],
                save_main_session=False,
            )
    assert not (tmp_path / "bad").exists()


def test_a_crop_offset_keeps_a_decoded_jpegs_grid_from_lining_up_with_jpegs(tmp_path):
    """A decoded JPEG re-encoded at its own quality on its own grid is near lossless, which is
    not compression; --crop-offset 3 measures every codec on the image without its first 3
    rows and columns, where no block lines up, and an image too small for it is a failed
    point naming the reason."""
    import io

    images = tmp_path / "images"
    images.mkdir()
    with Image.open(sample_paths()[0]) as image:
        buffer = io.BytesIO()
        image.convert("RGB").crop((0, 0, 128, 96)).save(buffer, "JPEG", quality=95)
    Image.open(buffer).save(images / "decoded.png")
    Image.new("RGB", (3, 3), (90, 120, 150)).save(images / "tiny.png")
    common = [f"--images={images}/*.png", "--model=codec", "--qualities=50", "--no-denoise"]
    common += ["--codecs=jpeg", "--codec-settings=jpeg=95", "--runner=DirectRunner"]
    measured = {}
    for offset in (0, 3):
        out = tmp_path / f"offset{offset}"
        evaluate.run([*common, f"--out={out}", f"--crop-offset={offset}"], save_main_session=False)
        results = json.loads((out / "results.json").read_text())
        points = {(p["image"], p["codec"]): p for p in results["points"]}
        measured[offset] = points["decoded.png", "jpeg"]
        assert points["decoded.png", "latentpress"]["pixels"] == (96 - offset) * (128 - offset)
        assert results["config"]["crop_offset"] == offset
        assert ("`--crop-offset`" in (out / "report.md").read_text()) == (offset > 0)
    assert measured[0]["psnr_db"] > measured[3]["psnr_db"] + 5, measured
    failed = {p["image"]: p["error"] for p in results["failed"]}
    assert set(failed) == {"tiny.png"} and "--crop-offset 3" in failed["tiny.png"], failed
    with pytest.raises(SystemExit):
        evaluate.run([*common, f"--out={tmp_path / 'bad'}", "--crop-offset=-1"])


def test_a_reference_codec_is_measured_at_the_same_qualities_beside_ours(tmp_path):
    """--reference-model: the curve a trained codec is judged against (e.g. the shipped one)
    comes from real files at the same qualities; the same codec as both gives a delta of 0."""
    images = tmp_path / "images"
    images.mkdir()
    for path in copy_samples(tmp_path / "samples", 2, 4):
        with Image.open(path) as image:
            image.convert("RGB").crop((0, 0, 128, 96)).save(images / path.name)
    out = tmp_path / "report"
    evaluate.run(
        [f"--images={images}/*.png", f"--out={out}", "--model=codec"]
        + ["--reference-model=codec", "--qualities=0,50,100", "--codecs=jpeg"]
        + ["--no-denoise", "--runner=DirectRunner"],
        save_main_session=False,
    )
    results = json.loads((out / "results.json").read_text())
    curves = results["curves"]
    assert [p["setting"] for p in curves["reference"]] == [
        p["setting"] for p in curves["latentpress"]
    ]
    assert [p["bpp"] for p in curves["reference"]] == [p["bpp"] for p in curves["latentpress"]]
    deltas = results["bjontegaard"]
    assert deltas["latentpress vs reference"]["bd_rate_psnr_pct"] == pytest.approx(0, abs=1e-9)
    assert deltas["reference vs jpeg"]["bd_rate_psnr_pct"] == pytest.approx(
        deltas["latentpress vs jpeg"]["bd_rate_psnr_pct"]
    )
    fingerprint = registry.card("codec")["fingerprint"]
    assert results["config"]["reference_model"] == {"codec": fingerprint}
    report = (out / "report.md").read_text()
    assert f"reference: `codec` ({fingerprint})" in report
    assert "| latentpress vs reference |" in report and "| reference | codec@100 |" in report


def test_cbsd68_denoising_beats_noise_and_classical_wavelet(tmp_path):
    dataset = shared_dataset("CBSD68")
    images = sorted(dataset.glob("*.png"))[:2]
    out = tmp_path / "report"
    evaluate.run(
        [
            *(f"--images={p}" for p in images),
            f"--out={out}",
            "--no-codec",
            "--baselines=wavelet",
            "--sigma=25",
            "--runner=DirectRunner",
        ],
        save_main_session=False,
    )
    table = json.loads((out / "results.json").read_text())["denoising"]["25"]
    assert table["latentpress"]["psnr_db"] > table["wavelet"]["psnr_db"] > table["noisy"]["psnr_db"]


def test_denoise_ensemble_is_what_evaluate_measures(tmp_path):
    """--denoise-ensemble 2: the reported PSNR is that of the 2-view mean on the same seeded
    noise, and the report names the ensemble."""
    from models.inference import Denoiser
    from transforms import denoise_baselines
    from transforms.patches import noise_seed

    images = tmp_path / "images"
    images.mkdir()
    (sample,) = copy_samples(tmp_path / "samples", 2, 3)
    with Image.open(sample) as image:
        clean = np.asarray(image.convert("RGB").crop((0, 0, 160, 120)))
    Image.fromarray(clean).save(images / "crop.png")
    out = tmp_path / "report"
    evaluate.run(
        [f"--input={images}/crop.png", f"-o={out}", "--no-codec", "--baselines=", "--sigma=25"]
        + ["--denoise-ensemble=2", "--runner=DirectRunner"],
        save_main_session=False,
    )
    noisy = denoise_baselines.add_noise(clean, 25.0, noise_seed("crop.png", 25.0))
    expected = rate_distortion.psnr(clean, Denoiser(ensemble=2).denoise(noisy))
    single = rate_distortion.psnr(clean, Denoiser().denoise(noisy))
    measured = json.loads((out / "results.json").read_text())["denoising"]["25"]
    assert measured["latentpress"]["psnr_db"] == pytest.approx(expected, abs=1e-3)
    assert expected != pytest.approx(single, abs=1e-3)
    assert "mean of 2 turned/mirrored views" in (out / "report.md").read_text()


def test_real_noise_pairs_are_measured_as_given_with_the_sigma_estimated(tmp_path):
    """--pairs: each noisy photograph against its clean reference by file name; ours and a
    baseline whose sigma is estimated from the noisy image; the grid shows a real pair."""
    from models.inference import Denoiser
    from transforms import denoise_baselines

    (sample,) = copy_samples(tmp_path / "samples", 1, 2)
    with Image.open(sample) as image:
        clean = np.asarray(image.convert("RGB").crop((0, 0, 128, 96)))
    rng = np.random.default_rng(4)
    # "camera" noise the evaluation never synthesizes itself: it must read this very file
    noisy = np.clip(clean + rng.normal(0, 12, clean.shape), 0, 255).astype(np.uint8)
    for folder, pixels in (("noisy", noisy), ("clean", clean)):
        (tmp_path / folder).mkdir()
        Image.fromarray(pixels).save(tmp_path / folder / "shot1.png")
    out = tmp_path / "report"
    assert 0 == evaluate.run(
        ["--pairs", f"{tmp_path}/noisy/*.png", f"{tmp_path}/clean/*.png", f"-o={out}"]
        + ["--no-codec", "--baselines=wavelet", "--runner=DirectRunner"],
        save_main_session=False,
    )
    results = json.loads((out / "results.json").read_text())
    table = results["denoising"][evaluate_report.REAL_NOISE]
    assert table["noisy"]["psnr_db"] == pytest.approx(rate_distortion.psnr(clean, noisy), abs=1e-3)
    ours = rate_distortion.psnr(clean, Denoiser().denoise(noisy))
    assert table["latentpress"]["psnr_db"] == pytest.approx(ours, abs=1e-3)
    sigma = evaluate.estimated_sigma(noisy)
    assert 8 < sigma < 16  # the noise added above
    wavelet = denoise_baselines.BASELINES["wavelet"](noisy, sigma)
    assert table["wavelet"]["psnr_db"] == pytest.approx(
        rate_distortion.psnr(clean, wavelet), abs=1e-3
    )
    report = (out / "report.md").read_text()
    assert "Real noise" in report and (out / "grid.png").exists()
    # --no-codec: no rate-distortion section pointing at plots that were never drawn
    assert "noisy/clean pairs" in report and "Rate-distortion" not in report
    assert "codecs:" not in report and not (out / "rd_psnr.png").exists()


def test_a_noisy_image_without_its_clean_reference_is_an_error(tmp_path):
    for folder in ("noisy", "clean"):
        (tmp_path / folder).mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "noisy" / "a.png")
    Image.new("RGB", (16, 16)).save(tmp_path / "clean" / "b.png")
    with pytest.raises(FileNotFoundError, match="no clean reference"):
        evaluate.run(
            ["--pairs", f"{tmp_path}/noisy/*.png", f"{tmp_path}/clean/*.png"]
            + [f"-o={tmp_path / 'out'}", "--no-codec", "--runner=DirectRunner"],
            save_main_session=False,
        )


def test_evaluate_exits_nonzero_when_nothing_could_be_measured(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    argv = [f"--input={tmp_path}/broken.png", f"-o={tmp_path / 'out'}", "--no-codec"]
    argv += ["--baselines=", "--sigma=25", "--runner=DirectRunner"]
    assert evaluate.main(argv) == 1
    failed = json.loads((tmp_path / "out" / "results.json").read_text())["failed"]
    assert failed and all("error" in point for point in failed)


def test_jpeg_xl_recompresses_a_jpeg_losslessly_and_smaller():
    """The honest alternative for an archive of JPEGs: the same pixels in fewer bytes."""
    from latentpress.samples import sample_paths

    if "jpegxl" not in rate_distortion.available_codecs():
        pytest.skip("pillow-jxl-plugin is not installed")
    jpeg_path = next(p for p in sample_paths() if p.endswith(".jpg"))
    with open(jpeg_path, "rb") as handle:
        jpeg = handle.read()
    data, identical = rate_distortion.jpeg_recompression(jpeg)
    assert identical
    assert len(data) < 0.95 * len(jpeg)
    np.testing.assert_array_equal(rate_distortion.decode(data), rate_distortion.decode(jpeg))
