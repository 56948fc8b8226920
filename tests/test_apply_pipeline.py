"""The apply stage and Beam decompress end to end, on real files through the real runners."""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.codefile import CodeFile
from models.compressor import Compressor
from models.inference import psnr
from pipelines import apply, decompress
from tests.conftest import copy_samples, shared_dataset, write_broken_files
from transforms import manifest, records
from transforms.apply_models import safe_key

IN_PROCESS = ["--runner=DirectRunner"]
BEAM_TWO_WORKERS = [
    "--runner=DirectRunner",
    "--direct_num_workers=2",
    "--direct_running_mode=multi_processing",
]
TWO_WORKERS = [*BEAM_TWO_WORKERS, "--inference-threads=1"]  # apply's own flag on top


def read_manifest(output: Path) -> list[dict]:
    return records.read_json_lines(str(output / "manifest*"))


def crop_to(path: Path, target: Path, width: int, height: int) -> None:
    with Image.open(path) as image:
        image.convert("RGB").crop((0, 0, width, height)).save(target)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Mixed sizes, a grayscale image, same stems with different extensions, broken files."""
    root = tmp_path_factory.mktemp("corpus")
    samples = copy_samples(root / "photos" / "nested", 0, 4)  # astronaut, camera(gray), ...
    crop_to(samples[0], root / "photos" / "odd.png", 97, 61)
    crop_to(samples[2], root / "photos" / "odd.jpg", 481, 321)  # same stem as odd.png
    crop_to(samples[3], root / "photos" / "tall.png", 63, 170)
    broken = write_broken_files(root / "photos" / "broken")
    del broken["tiny.png"]  # a 40x30 image is fine here: apply has no minimum size
    return root, broken


@pytest.fixture(scope="module")
def applied(corpus, tmp_path_factory):
    root, _ = corpus
    output = tmp_path_factory.mktemp("applied")
    # One TensorFlow thread, as each of the two workers below: TF's kernels may round
    # differently with another thread count (see the README's determinism note).
    apply.run(
        [
            f"--input={root}/photos/**",
            f"--output={output}",
            "--mode=both",
            "--keep-cleaned",
            "--inference-threads=1",
            *IN_PROCESS,
        ]
    )
    return output


def test_one_code_and_one_clean_image_per_good_input(corpus, applied):
    root, broken = corpus
    rows = read_manifest(applied)
    good = [r for r in rows if r["status"] == manifest.OK]
    inputs = [p for p in glob.glob(f"{root}/photos/**", recursive=True) if os.path.isfile(p)]
    inputs += [str(root / "photos" / "broken" / "dangling.png")]  # a link, not a file
    assert len(rows) == len(set(inputs)) == len({r["source_path"] for r in rows})
    assert len(good) == len(rows) - len(broken)
    codes = sorted(glob.glob(f"{applied}/codes/**/*.lpc", recursive=True))
    cleans = sorted(glob.glob(f"{applied}/clean/**/*.png", recursive=True))
    assert len(codes) == len(cleans) == len(good)
    for row in good:
        assert row["code_path"] == f"{applied}/codes/{row['key']}.lpc"
        clean_name = manifest.output_name(row["key"], manifest.CLEAN_SUFFIX)
        assert row["clean_path"] == f"{applied}/clean/{clean_name}"  # odd.png stays odd.png
    keys = {r["key"] for r in good}
    assert {"odd.png", "odd.jpg", "nested/camera.png"} <= keys  # no collision, nesting kept


def test_summary_adds_up_and_failures_carry_their_reasons(corpus, applied):
    _, broken = corpus
    summary = records.read_json(str(applied / records.SUMMARY_FILE))
    rows = read_manifest(applied)
    assert summary["matched"] == len(rows) == summary["written"] + summary["failed"]
    assert summary["failed"] == len(broken)
    failed = {os.path.basename(r["source_path"]): r["reason"] for r in rows if r["status"] != "ok"}
    assert failed == broken
    letters = records.read_json_lines(str(applied / "dead_letter*"))
    assert sorted(os.path.basename(r["path"]) for r in letters) == sorted(broken)
    assert summary["code_bytes"] == sum(r["code_bytes"] for r in rows)


def test_manifest_bpp_and_psnr_match_the_files_on_disk(applied):
    compressor = Compressor()
    for row in (r for r in read_manifest(applied) if r["status"] == manifest.OK):
        data = Path(row["code_path"]).read_bytes()
        assert row["code_bytes"] == len(data)
        assert row["bpp"] == pytest.approx(8 * len(data) / (row["width"] * row["height"]))
        assert CodeFile.from_bytes(data).fingerprint == row["model_fingerprint"]
        decoded = compressor.decompress(data)
        with Image.open(row["clean_path"]) as clean_image:
            clean = np.asarray(clean_image)
            assert clean_image.size == (row["width"], row["height"])
        if clean.ndim == 2:  # grayscale source: grayscale outputs, PSNR on grayscale
            assert decoded.ndim == 2 and row["key"].endswith("camera.png")
        # 'both' encodes the cleaned image, so that is the reference.
        assert abs(psnr(clean, decoded) - row["psnr_db"]) <= 0.01
        assert row["psnr_reference"] == "clean"


def test_two_workers_write_the_same_bytes_as_one(corpus, applied, tmp_path):
    root, _ = corpus
    flags = ["--mode=both", "--keep-cleaned", *TWO_WORKERS]
    apply.run([f"--input={root}/photos/**", f"--output={tmp_path}", *flags])
    for kind in ("codes", "clean"):
        ours = sorted(glob.glob(f"{tmp_path}/{kind}/**/*.*", recursive=True))
        theirs = sorted(glob.glob(f"{applied}/{kind}/**/*.*", recursive=True))
        assert [os.path.relpath(p, tmp_path) for p in ours] == [
            os.path.relpath(p, applied) for p in theirs
        ]
        for a, b in zip(ours, theirs, strict=True):
            assert Path(a).read_bytes() == Path(b).read_bytes(), a


def test_a_path_escaping_the_output_is_refused(tmp_path):
    photos = tmp_path / "photos"
    copy_samples(photos / "a", 2, 3)
    copy_samples(photos, 3, 4)
    # The '..' after the wildcard gives the key 'a/../coffee.png'.
    apply.run(
        [f"--input={photos}/*/../coffee.png", f"--output={tmp_path}/out", "--mode=compress"]
        + IN_PROCESS
    )
    rows = read_manifest(tmp_path / "out")
    assert [(r["key"], r["status"], r["reason"]) for r in rows] == [
        ("a/../coffee.png", "failed", "unsafe_relative_path")
    ]
    assert not glob.glob(f"{tmp_path}/**/coffee.png.lpc", recursive=True)


def test_safe_key_rule():
    assert safe_key("a/b.jpg") and safe_key("b.png")
    for bad in ("", "/etc/passwd", "../x.png", "a/../../x.png", "C:/x.png", "a\\..\\x.png"):
        assert not safe_key(bad), bad


def test_beam_decompress_writes_every_image_and_dead_letters_bad_files(applied, tmp_path):
    codes = tmp_path / "codes"
    shutil.copytree(applied / "codes", codes)
    (codes / "garbage.lpc").write_bytes(b"not a code file")
    output = tmp_path / "decoded"
    decompress.run([f"--input={codes}/**", f"--output={output}", *IN_PROCESS])
    summary = records.read_json(str(output / records.SUMMARY_FILE))
    good = [r for r in read_manifest(applied) if r["status"] == manifest.OK]
    assert summary["matched"] == len(good) + 1
    assert summary["written"] == len(good) and summary["failed_by_reason"] == {"bad_code_file": 1}
    compressor = Compressor()
    for row in good:
        with Image.open(output / manifest.output_name(row["key"], ".png")) as image:
            expected = compressor.decompress(Path(row["code_path"]).read_bytes())
            np.testing.assert_array_equal(np.asarray(image), expected)


@pytest.mark.slow
def test_cbsd68_codes_decode_to_the_psnr_the_manifest_reports(tmp_path):
    """Real photographs (every 8th of CBSD68: 9), decoded with `latentpress decompress`: each
    manifest PSNR is the decoded file's, each bpp the file's size.  In this process (two
    workers are test_two_workers_write_the_same_bytes_as_one's subject)."""
    photos = tmp_path / "cbsd68"
    photos.mkdir()
    for path in sorted(shared_dataset("CBSD68").glob("*.png"))[::8]:
        shutil.copy(path, photos / path.name)
    output = tmp_path / "applied"
    flags = ["--mode=both", "--keep-cleaned", *IN_PROCESS]
    apply.run([f"--input={photos}/*.png", f"--output={output}", *flags])
    rows = read_manifest(output)
    assert len(rows) == 9 and all(r["status"] == "ok" for r in rows)
    decoded_dir = tmp_path / "decoded"
    decompress.run([f"--input={output}/codes/*.lpc", f"--output={decoded_dir}", *IN_PROCESS])
    for row in rows:
        with Image.open(decoded_dir / manifest.output_name(row["key"], ".png")) as decoded:
            with Image.open(row["clean_path"]) as clean:
                measured = psnr(np.asarray(clean), np.asarray(decoded))
        assert abs(measured - row["psnr_db"]) <= 0.01, row["key"]
        size = os.path.getsize(row["code_path"])
        assert row["bpp"] == pytest.approx(8 * size / (row["width"] * row["height"]))
    assert len(list((output / "clean").glob("*.png"))) == 9


def test_a_psnr_target_is_met_per_image_and_recorded(tmp_path, capsys):
    from tests.conftest import export_untrained_codec

    # seeded: some random starts code the same at quality 0 and 100 (no target in between)
    codec = export_untrained_codec(tmp_path / "vr", "vr", lmbdas=(0.0025, 0.01, 0.04), seed=3)
    photos = copy_samples(tmp_path / "photos", 0, 2)
    for photo in photos:  # small crops keep the trial encodings quick
        with Image.open(photo) as image:
            image.convert("RGB").crop((0, 0, 120, 90)).save(photo.with_suffix(".png"))
        if photo.suffix != ".png":
            photo.unlink()
    compressor = Compressor(codec)
    first = np.asarray(Image.open(sorted((tmp_path / "photos").glob("*"))[0]).convert("RGB"))
    ends = [psnr(first, compressor.reconstruct(first, q)) for q in (0.0, 100.0)]
    target = round(sum(ends) / 2, 2)  # reachable, and not by the lowest quality
    output = tmp_path / "out"
    apply.run(
        [
            f"--input={tmp_path}/photos/*",
            f"--output={output}",
            "--mode=compress",
            f"--model={codec}",
            f"--target-psnr={target}",
            *IN_PROCESS,
        ]
    )
    written = records.read_json_lines(str(output / "manifest*"))
    assert len(written) == 2
    for record in written:
        if record["target_met"]:
            assert record["psnr_db"] >= target
        else:  # unreachable for this image: the best the codec has
            assert record["quality"] == 100
        code = CodeFile.from_bytes(Path(record["code_path"]).read_bytes())
        assert code.quality == record["quality"]
    assert any(r["target_met"] and 0 < r["quality"] < 100 for r in written)
    summary = records.read_json(str(output / records.SUMMARY_FILE))
    assert summary["targets_missed"] == sum(not r["target_met"] for r in written)

    # a target no quality reaches: every image at quality 100, each counted and reported
    unreachable = tmp_path / "unreachable"
    apply.run(
        [
            f"--input={tmp_path}/photos/*",
            f"--output={unreachable}",
            "--mode=compress",
            f"--model={codec}",
            "--target-psnr=99",
            *IN_PROCESS,
        ]
    )
    assert records.read_json(str(unreachable / records.SUMMARY_FILE))["targets_missed"] == 2
    assert "2 images missed the rate target" in capsys.readouterr().out


def noisy_photo(tmp_path: Path, size: tuple[int, int], seed: int) -> Path:
    """A sample photograph's crop with Gaussian noise (sigma 25), saved as photos/noisy.png."""
    photo = tmp_path / "photos" / "noisy.png"
    photo.parent.mkdir()
    with Image.open(copy_samples(tmp_path / "samples", 0, 1)[0]) as image:
        pixels = np.asarray(image.convert("RGB").crop((0, 0, *size)))
    noisy = np.clip(pixels + np.random.default_rng(seed).normal(0, 25, pixels.shape), 0, 255)
    Image.fromarray(noisy.astype(np.uint8)).save(photo)
    return photo


def test_a_denoise_ensemble_writes_the_mean_of_its_views(tmp_path):
    """--denoise-ensemble reaches the worker's denoiser: the cleaned image is the 2-view mean
    (not the single pass), and the summary says which ensemble made it."""
    from models.inference import Denoiser
    from transforms.decode import decode_image

    photo = noisy_photo(tmp_path, (150, 100), seed=1)
    output = tmp_path / "out"
    apply.run(
        [
            f"--input={photo}",
            f"--output={output}",
            "--mode=denoise",
            "--denoise-ensemble=2",
            "--inference-threads=1",
            *IN_PROCESS,
        ]
    )
    (row,) = read_manifest(output)
    cleaned = np.asarray(Image.open(row["clean_path"]))
    source = decode_image(photo.read_bytes())
    np.testing.assert_array_equal(cleaned, Denoiser(ensemble=2).denoise(source))
    assert not np.array_equal(cleaned, Denoiser().denoise(source))
    summary = records.read_json(str(output / records.SUMMARY_FILE))
    assert summary["config"]["denoise_ensemble"] == 2


def test_a_denoise_strength_removes_that_share_of_the_noise(tmp_path):
    """--denoise-strength 0.5 reaches the worker: the cleaned image is halfway between the
    input and the full denoising (the denoiser still blind), and the summary records it; a
    strength outside 0-1 is refused before anything runs."""
    from models.inference import Denoiser
    from transforms.decode import decode_image

    photo = noisy_photo(tmp_path, (150, 100), seed=2)
    output = tmp_path / "out"
    flags = [f"--input={photo}", "--mode=denoise", "--inference-threads=1", *IN_PROCESS]
    apply.run([*flags, f"--output={output}", "--denoise-strength=0.5"])
    (row,) = read_manifest(output)
    cleaned = np.asarray(Image.open(row["clean_path"])).astype(int)
    source = decode_image(photo.read_bytes())
    full = Denoiser().denoise(source).astype(int)
    halfway = (source.astype(int) + full) / 2
    assert np.abs(cleaned - halfway).max() <= 1.0  # rounding of the two steps
    assert np.abs(cleaned - full).mean() > 2 * np.abs(cleaned - halfway).mean()
    assert (
        records.read_json(str(output / records.SUMMARY_FILE))["config"]["denoise_strength"] == 0.5
    )
    with pytest.raises(SystemExit):
        apply.run([*flags, f"--output={tmp_path / 'x'}", "--denoise-strength=1.5"])
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="share from 0 to 1"):
        Denoiser(strength=-0.1)


def test_mode_both_stores_the_code_of_the_cleaned_image_and_no_png_unless_asked(tmp_path, capsys):
    """--mode both keeps what an archive wants: one code file per image, which decodes to the
    denoised image (not the input); the cleaned PNG (~18x the code) only with --keep-cleaned.
    The manifest says what the code encodes and which denoiser made it."""
    from models.inference import Denoiser
    from transforms.decode import decode_image

    photo = noisy_photo(tmp_path, (160, 128), seed=2)
    output = tmp_path / "out"
    apply.run([f"--input={photo}", f"--output={output}", "--inference-threads=1", *IN_PROCESS])
    (row,) = read_manifest(output)
    assert not (output / manifest.CLEAN_DIR).exists() and row["clean_path"] == ""
    said = capsys.readouterr().out
    assert "code files" in said and "cleaned" not in said.split("against the cleaned images")[1]
    assert row["code_of"] == "cleaned" and row["denoiser_fingerprint"]
    summary = records.read_json(str(output / records.SUMMARY_FILE))
    assert summary["clean_bytes"] == 0 and summary["code_bytes"] == row["code_bytes"]
    decoded = Compressor().decompress((output / "codes" / "noisy.png.lpc").read_bytes())
    cleaned = Denoiser().denoise(decode_image(photo.read_bytes()))
    source = decode_image(photo.read_bytes())
    assert abs(psnr(cleaned, decoded) - row["psnr_db"]) <= 0.01  # the code is of the cleaned
    assert psnr(cleaned, decoded) > psnr(source, decoded) + 3.0  # ... not of the noisy input


def test_apply_to_images_alone_gives_every_input_one_record(tmp_path):
    """The apply step without reading or recording: an image is coded by the real model, one
    whose relative path would leave the output folder is refused, and a failed read becomes a
    failed record with its reason; nothing else comes out."""
    import hashlib

    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from latentpress.samples import sample_paths
    from models import registry
    from transforms import reasons
    from transforms.apply_models import (
        COMPRESS,
        LatentpressModelHandler,
        ProcessImages,
        WriteOutputs,
    )
    from transforms.progress import ReportProgress
    from transforms.read_images import DecodedImage

    path = sample_paths()[0]
    data = Path(path).read_bytes()
    pixels = np.asarray(Image.open(path).convert("RGB"))[:48, :64]
    image = DecodedImage(path, "photo.jpg", "", pixels, len(data), hashlib.sha256(data).hexdigest())
    escaping = DecodedImage(path, "../escape.jpg", "", pixels, len(data), image.sha256)
    unreadable = {"path": "broken.jpg", "reason": reasons.UNREADABLE, "detail": "truncated"}
    fingerprint = registry.card(registry.DEFAULT_CODEC)["fingerprint"]
    process = ProcessImages(
        LatentpressModelHandler(COMPRESS, registry.DEFAULT_CODEC, "", quality=50.0),
        WriteOutputs(str(tmp_path), COMPRESS, fingerprint, ""),
        ReportProgress("apply", 3, lambda r: r["status"] == manifest.FAILED),
    )
    with TestPipeline() as pipeline:
        read = {
            "images": pipeline | "Images" >> beam.Create([image, escaping]),
            "dead_letter": pipeline | "Failures" >> beam.Create([unreadable]),
        }
        outcomes = (
            read
            | apply.ApplyToImages(process, COMPRESS)
            | beam.Map(lambda r: (r["source_path"], r["status"], r["reason"]))
        )
        assert_that(
            outcomes,
            equal_to(
                [
                    (path, manifest.OK, ""),
                    (path, manifest.FAILED, reasons.UNSAFE_PATH),
                    ("broken.jpg", manifest.FAILED, reasons.UNREADABLE),
                ]
            ),
        )
    (code,) = (tmp_path / manifest.CODES_DIR).glob("*")
    assert Compressor().decompress(code.read_bytes()).shape == pixels.shape
    assert not (tmp_path.parent / "escape.jpg.lpc").exists()


def test_record_apply_run_alone_writes_manifest_dead_letters_and_summary(tmp_path):
    """The run's records from given manifest records: every record in the manifest, each
    failure a dead letter naming its input and reason, and a summary that adds up."""
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline

    from transforms import reasons

    ok = manifest.record(
        source_path="a.jpg",
        key="a.jpg",
        status=manifest.OK,
        width=10,
        height=10,
        bytes_in=500,
        code_bytes=50,
        psnr_db=31.0,
    )
    broken = manifest.failed("b.jpg", "b.jpg", "compress", reasons.UNREADABLE, "truncated")
    unmatched = {"pattern": "nothing/*.png", "detail": "no file matched"}
    with TestPipeline() as pipeline:
        _ = {
            "records": pipeline | "Records" >> beam.Create([ok, broken]),
            "unmatched": pipeline | "Unmatched" >> beam.Create([unmatched]),
        } | apply.RecordApplyRun(str(tmp_path), {"mode": "compress"})
    assert sorted(r["source_path"] for r in read_manifest(tmp_path)) == ["a.jpg", "b.jpg"]
    letters = records.read_json_lines(str(tmp_path / f"{records.DEAD_LETTER_PREFIX}-*.jsonl"))
    assert {(d["path"], d["reason"]) for d in letters} >= {("b.jpg", reasons.UNREADABLE)}
    assert any("nothing/*.png" in d["path"] for d in letters)
    summary = records.read_json(str(tmp_path / records.SUMMARY_FILE))
    assert (summary["written"], summary["code_bytes"], summary["bytes_in"]) == (1, 50, 500)
    assert summary["failed_by_reason"][reasons.UNREADABLE] == 1
    assert summary["config"] == {"mode": "compress"}
