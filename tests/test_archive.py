"""The nightly archive job: incremental by content, idempotent, resumable, model-aware."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from models.codefile import VERSION as CODE_FORMAT
from models.codefile import CodeFile
from pipelines import archive as archive_job
from pipelines import decompress
from tests.conftest import copy_samples, export_untrained_codec
from transforms import archive, reasons, records

IN_PROCESS = ["--runner=DirectRunner"]
ROOT = Path(__file__).resolve().parent.parent


def newest_records(store: Path) -> dict[str, dict]:
    """content sha256 -> its record from the latest run: the archive's current state."""
    newest: dict[str, dict] = {}
    for record in records.read_json_lines(archive.manifest_pattern(str(store))):
        held = newest.get(record["content_sha256"])
        if held is None or record["run_id"] > held["run_id"]:
            newest[record["content_sha256"]] = record
    return newest


def small_copy(source: Path, target: Path, box: tuple[int, int, int, int]) -> Path:
    """A real, small PNG cut from a sample photograph (different boxes, different content)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as image:
        image.convert("RGB").crop(box).save(target)
    return target


def run_archive(corpus: Path, store: Path, *flags: str) -> dict:
    archive_job.run(
        [f"--input={corpus}/**", f"--archive={store}", "--mode=compress", *flags, *IN_PROCESS],
        save_main_session=False,
    )
    return latest_summary(store)


def latest_summary(store: Path) -> dict:
    newest = sorted(glob.glob(str(store / archive.RUNS_DIR / "*" / records.SUMMARY_FILE)))[-1]
    return records.read_json(newest)


def manifest_records(store: Path) -> list[dict]:
    return records.read_json_lines(str(store / archive.MANIFEST_DIR / "*.jsonl"))


def code_files(store: Path) -> list[str]:
    return sorted(glob.glob(str(store / "codes" / "**" / "*.lpc"), recursive=True))


def accounted(summary: dict) -> bool:
    parts = ("already_archived", "duplicates", "processed", "failed")
    return summary["matched"] == sum(summary[part] for part in parts)


def decompress_all(store: Path, output: Path) -> dict:
    decompress.run(
        [
            f"--input={store}/codes/**",
            f"--models-dir={store}/models",
            f"--output={output}",
            *IN_PROCESS,
        ],
        save_main_session=False,
    )
    return records.read_json(str(output / records.SUMMARY_FILE))


@pytest.fixture
def samples(tmp_path) -> list[Path]:
    return copy_samples(tmp_path / "samples")


def test_each_content_is_archived_once_across_runs_renames_and_additions(samples, tmp_path):
    corpus, store = tmp_path / "corpus", tmp_path / "archive"
    for index, sample in enumerate(samples[:4]):
        small_copy(sample, corpus / "day1" / f"img{index}.png", (0, 0, 96, 80))
    (corpus / "day1" / "same_as_img0.png").write_bytes((corpus / "day1" / "img0.png").read_bytes())
    (corpus / "day1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")

    first = run_archive(corpus, store)
    assert (first["matched"], first["processed"], first["duplicates"]) == (6, 4, 1)
    assert first["failed_by_reason"] == {reasons.NOT_AN_IMAGE: 1}
    assert accounted(first)
    assert len(manifest_records(store)) == 4 and len(code_files(store)) == 4
    # bytes saved is what the code files really take, from the files on disk
    assert first["code_bytes"] == sum(os.path.getsize(path) for path in code_files(store))
    assert first["bytes_saved"] == first["bytes_in"] - first["code_bytes"]  # no clean PNGs

    second = run_archive(corpus, store)
    assert (second["processed"], second["already_archived"], second["duplicates"]) == (0, 5, 0)
    assert second["failed"] == 1  # a broken input is tried again each night, and reported
    assert len(manifest_records(store)) == 4

    (corpus / "day1" / "img1.png").rename(corpus / "day1" / "renamed.png")
    for index, sample in enumerate(samples[4:7]):
        small_copy(sample, corpus / "day2" / f"new{index}.png", (10, 10, 90, 74))
    third = run_archive(corpus, store)
    assert (third["matched"], third["processed"], third["already_archived"]) == (9, 3, 5)
    assert accounted(third)

    rows = manifest_records(store)
    assert len(rows) == 7 and len({row["content_sha256"] for row in rows}) == 7
    assert len({row["run_id"] for row in rows}) == 2
    assert sorted(row["code_path"] for row in rows) == code_files(store)
    decoded = decompress_all(store, tmp_path / "restored")
    assert (decoded["written"], decoded["failed"]) == (7, 0)


def test_a_run_killed_part_way_then_rerun_archives_each_image_exactly_once(samples, tmp_path):
    corpus, store = tmp_path / "corpus", tmp_path / "archive"
    for sample in samples:  # 320x240 crops: ~1 s per image in mode both, plenty to land a kill
        small_copy(sample, corpus / f"{sample.stem}.png", (0, 0, 320, 240))
    command = [
        sys.executable,
        "-m",
        "pipelines.archive",
        f"--input={corpus}/*",
        f"--archive={store}",
        "--mode=both",
        "--keep-cleaned",
        "--runner=DirectRunner",
    ]
    process = subprocess.Popen(command, cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + 300
    while not code_files(store) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    written_before_kill = len(code_files(store))
    assert 0 < written_before_kill < len(samples), "the kill did not land part-way"
    assert manifest_records(store) == []  # records are committed only at the end

    summary = run_archive(corpus, store, "--mode=both", "--keep-cleaned", "--temp-max-age-hours=0")
    assert summary["processed"] == len(samples) and accounted(summary)
    rows = manifest_records(store)
    assert len(rows) == len({row["content_sha256"] for row in rows}) == len(samples)
    assert len(code_files(store)) == len(samples)
    cleaned = glob.glob(str(store / "clean" / "**" / "*.png"), recursive=True)
    assert len(cleaned) == len(samples)
    # What the archive saved counts the cleaned PNGs it also stores, as they are on disk.
    stored = sum(os.path.getsize(p) for p in code_files(store) + cleaned)
    assert summary["code_bytes"] + summary["clean_bytes"] == stored
    assert summary["bytes_saved"] == summary["bytes_in"] - stored
    leftovers = [
        path
        for path in glob.glob(str(store / "**" / "*"), recursive=True)
        if any(marker in path for marker in archive.TEMP_MARKERS)
    ]
    assert leftovers == []
    for path in cleaned:  # every cleaned image is a whole PNG
        with Image.open(path) as image:
            image.load()
    decoded = decompress_all(store, tmp_path / "restored")
    assert (decoded["written"], decoded["failed"]) == (len(samples), 0)


@pytest.fixture
def other_codec(tmp_path) -> str:
    """A second (untrained) codec, exported the usual way: a model change."""
    return export_untrained_codec(tmp_path / "other_codec", "other")


def test_a_model_change_keeps_old_codes_decodable_or_reencodes_on_request(
    samples, tmp_path, other_codec
):
    corpus, store = tmp_path / "corpus", tmp_path / "archive"
    for index, sample in enumerate(samples[:3]):
        small_copy(sample, corpus / f"img{index}.png", (0, 0, 80, 64))
    run_archive(corpus, store)
    old_fingerprint = manifest_records(store)[0]["model_fingerprint"]

    unchanged = run_archive(corpus, store, f"--model={other_codec}")
    assert unchanged["processed"] == 0  # old codes stay; nothing is redone by default

    redone = run_archive(corpus, store, f"--model={other_codec}", "--reprocess-older-models")
    assert (redone["processed"], redone["reprocessed_from_older_models"]) == (3, 3)
    newest = newest_records(store)
    new_fingerprints = {record["model_fingerprint"] for record in newest.values()}
    assert len(newest) == 3 and new_fingerprints.isdisjoint({old_fingerprint})
    fingerprints = {
        CodeFile.from_bytes(Path(p).read_bytes()).fingerprint for p in code_files(store)
    }
    assert fingerprints == {old_fingerprint} | new_fingerprints
    # both generations decode, each with the model that wrote it, kept in the archive
    assert sorted(os.listdir(store / archive.MODELS_DIR)) == sorted(fingerprints)
    decoded = decompress_all(store, tmp_path / "restored")
    assert (decoded["written"], decoded["failed"]) == (6, 0)

    again = run_archive(corpus, store, f"--model={other_codec}", "--reprocess-older-models")
    assert again["processed"] == 0


def test_codes_of_an_older_format_are_reencoded_on_request_and_only_once(samples, tmp_path):
    """An archive written before the current code-file format (its manifest records have no
    ``code_format``): kept as it is by default, re-encoded by --reprocess-older-models (the
    same model codes the same latents in fewer bytes), and then held."""
    corpus, store = tmp_path / "corpus", tmp_path / "archive"
    for index, sample in enumerate(samples[:2]):
        small_copy(sample, corpus / f"img{index}.png", (0, 0, 80, 64))
    run_archive(corpus, store)
    assert {r["code_format"] for r in manifest_records(store)} == {CODE_FORMAT}
    for path in glob.glob(str(store / archive.MANIFEST_DIR / "*.jsonl")):
        old = [
            {k: v for k, v in r.items() if k != "code_format"}
            for r in records.read_json_lines(path)
        ]
        Path(path).write_text("".join(json.dumps(r) + "\n" for r in old))

    assert run_archive(corpus, store)["processed"] == 0
    redone = run_archive(corpus, store, "--reprocess-older-models")
    assert (redone["processed"], redone["reprocessed_from_older_models"]) == (2, 2)
    assert {r["code_format"] for r in newest_records(store).values()} == {CODE_FORMAT}
    assert {CodeFile.from_bytes(Path(p).read_bytes()).version for p in code_files(store)} == {
        CODE_FORMAT
    }
    assert run_archive(corpus, store, "--reprocess-older-models")["processed"] == 0


def test_retention_keeps_the_newest_runs_and_drops_only_stale_temporary_files(tmp_path):
    store = str(tmp_path / "archive")
    for run_id in ("20260101T000000Z-a", "20260102T000000Z-b", "20260103T000000Z-c"):
        records.write_json(os.path.join(archive.run_dir(store, run_id), "summary.json"), {})
    code = Path(store, "codes", "f" * 16, "ab", "ab" + "0" * 62 + ".lpc")
    code.parent.mkdir(parents=True)
    code.write_bytes(b"kept")
    stale = code.with_name(code.name + ".tmp-0123")
    fresh = code.with_name(code.name + ".tmp-4567")
    stale.write_bytes(b"partial")
    fresh.write_bytes(b"being written")
    two_days_ago = time.time() - 48 * 3600
    os.utime(stale, (two_days_ago, two_days_ago))

    deleted = archive.prune(store, keep_runs=2, temp_max_age_hours=24)

    assert deleted == {"runs": 1, "temporary_files": 1}
    assert sorted(os.listdir(Path(store, archive.RUNS_DIR))) == [
        "20260102T000000Z-b",
        "20260103T000000Z-c",
    ]
    assert code.exists() and fresh.exists() and not stale.exists()
    assert code.read_bytes() == b"kept"


def test_a_wider_mode_later_makes_the_outputs_an_earlier_run_did_not(samples, tmp_path):
    corpus, store = tmp_path / "corpus", tmp_path / "archive"
    for index, sample in enumerate(samples[:2]):
        small_copy(sample, corpus / f"img{index}.png", (0, 0, 80, 64))
    cleaned = run_archive(corpus, store, "--mode=denoise")
    assert cleaned["processed"] == 2 and code_files(store) == []

    both = run_archive(corpus, store, "--mode=both")
    assert (both["processed"], both["completed_missing_outputs"]) == (2, 2)
    assert both["already_archived"] == 0 and accounted(both)
    assert len(code_files(store)) == 2

    again = run_archive(corpus, store, "--mode=compress")  # codes are held now
    assert (again["processed"], again["already_archived"]) == (0, 2)


def test_an_unchanged_folder_is_not_read_again_and_a_changed_file_is(samples, tmp_path):
    """Change detection from the listing: size and modification time, not the bytes."""
    corpus, store = tmp_path / "corpus", tmp_path / "archive"
    paths = [
        small_copy(sample, corpus / f"img{index}.png", (0, 0, 64, 48))
        for index, sample in enumerate(samples[:3])
    ]
    first = run_archive(corpus, store)
    assert (first["hashed"], first["processed"]) == (3, 3)

    # Rewrite img0 with other bytes of the same size and put its time back: a run that
    # opened it would see new content; one that trusts the unchanged listing does not.
    stat = paths[0].stat()
    paths[0].write_bytes(bytes(reversed(paths[0].read_bytes())))
    os.utime(paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = run_archive(corpus, store)
    assert (second["hashed"], second["processed"], second["already_archived"]) == (0, 0, 3)

    # A real edit changes the listing: that file alone is read and redone.
    small_copy(samples[4], paths[1], (0, 0, 64, 48))
    os.utime(paths[1], (stat.st_atime + 100, stat.st_mtime + 100))
    third = run_archive(corpus, store)
    assert (third["hashed"], third["processed"]) == (1, 1)

    # --rehash reads everything: the silent rewrite of img0 is found (it is no image now).
    fourth = run_archive(corpus, store, "--rehash")
    assert fourth["hashed"] == 3 and fourth["failed"] == 1 and accounted(fourth)


def test_what_each_mode_needs_held_counts_codes_of_cleaned_images_and_old_records():
    """archive_state: mode both is held by a code of the cleaned image (both models on one
    record, no PNG since 2026-12-05, a PNG before); --keep-cleaned also wants the PNG; denoise
    wants a PNG, so a code of the cleaned image alone does not serve it."""
    codec, denoiser = "c" * 16, "d" * 16

    def held(model="", clean_bytes=0, by="", code_format=CODE_FORMAT):
        return {"model_fingerprint": model, "denoiser_fingerprint": by, "codec_setting": "",
                "code_format": code_format if model else 0, "clean_bytes": clean_bytes}  # fmt: skip

    code_of_cleaned = held(codec, 0, denoiser)
    before = held(codec, 900, denoiser)  # a mode-both record of the PNG-keeping days
    only_code, only_png = held(codec), held("", 900, denoiser)

    def state(records, mode, keep=False, exact=False):
        return archive.archive_state(records, mode, codec, denoiser, exact, keep)

    assert state([code_of_cleaned], "both") == archive.ARCHIVED
    assert state([before], "both", keep=True) == archive.ARCHIVED
    assert state([code_of_cleaned], "both", keep=True) == archive.INCOMPLETE
    assert state([code_of_cleaned, only_png], "both", keep=True) == archive.ARCHIVED
    assert state([code_of_cleaned], "denoise") == archive.INCOMPLETE
    assert state([only_code], "both") == archive.INCOMPLETE  # a code of the noisy input
    assert state([only_png], "denoise") == archive.ARCHIVED
    assert state([code_of_cleaned], "compress") == archive.ARCHIVED
    older = held("e" * 16, 0, denoiser)
    assert state([older], "both") == archive.ARCHIVED
    assert state([older], "both", exact=True) == archive.OLDER
    # the same models, but a code of an older format (or a record from before the field)
    older_format = held(codec, 0, denoiser, code_format=CODE_FORMAT - 1)
    unknown_format = {k: v for k, v in code_of_cleaned.items() if k != "code_format"}
    for record in (older_format, unknown_format):
        assert state([record], "both") == archive.ARCHIVED
        assert state([record], "both", exact=True) == archive.OLDER
    assert state([code_of_cleaned], "both", exact=True) == archive.ARCHIVED


def test_triage_inputs_alone_processes_each_new_content_once():
    """The join with the archive's holdings: content held in full is archived (every file of
    it), a new content is processed once and its other files are duplicates, content held by
    older models or without this mode's outputs is processed and counted as such, and
    content held but not listed this run yields nothing."""
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from transforms.read_images import MatchedFile

    def file(path):
        return MatchedFile(path, path, "", 1)

    hashed = [
        ("held", file("a.jpg")),
        ("held", file("a-renamed.jpg")),
        ("new", file("n2.jpg")),
        ("new", file("n1.jpg")),
        ("old", file("o.jpg")),
        ("partial", file("p.jpg")),
    ]
    held = [
        ("held", archive.ARCHIVED),
        ("old", archive.OLDER),
        ("partial", archive.INCOMPLETE),
        ("gone", archive.ARCHIVED),
    ]
    with TestPipeline() as pipeline:
        triaged = {
            "files": pipeline | "Files" >> beam.Create(hashed),
            "held": pipeline | "Held" >> beam.Create(held),
        } | archive_job.TriageInputs()
        to_process = triaged.files | "Paths" >> beam.Map(lambda f: f.path)
        assert_that(to_process, equal_to(["n1.jpg", "o.jpg", "p.jpg"]), label="process")
        assert_that(
            triaged[archive.ARCHIVED], equal_to(["a.jpg", "a-renamed.jpg"]), label="archived"
        )
        assert_that(
            triaged[archive_job.DUPLICATE],
            equal_to([{"path": "n2.jpg", "same_as": "n1.jpg"}]),
            label="duplicates",
        )
        assert_that(triaged[archive.OLDER], equal_to(["old"]), label="older")
        assert_that(triaged[archive.INCOMPLETE], equal_to(["partial"]), label="incomplete")


def test_record_archive_run_alone_commits_ok_records_and_accounts_for_every_input(tmp_path):
    """Committing a run: ok records appended to the archive's manifest (failed ones never),
    every failure, from this step or the ones before, a dead letter in the run's folder, and
    a summary whose counts add up."""
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline

    from transforms import manifest

    ok = manifest.record(
        source_path="a.jpg",
        content_sha256="aa",
        status=manifest.OK,
        width=8,
        height=8,
        bytes_in=300,
        code_bytes=30,
        psnr_db=30.0,
    )
    failed = manifest.failed("b.jpg", "b.jpg", "both", reasons.INFERENCE_FAILED, "oom")
    unreadable = records.dead_letter("c.jpg", "hash", reasons.UNREADABLE, "gone")
    counted = ["matched"] * 4 + ["hashed"] * 3 + [archive.ARCHIVED]
    with TestPipeline() as pipeline:
        _ = {
            "written": pipeline | "Written" >> beam.Create([ok, failed]),
            "failures": pipeline | "Failures" >> beam.Create([unreadable]),
            "unmatched": pipeline | "Unmatched" >> beam.Create([]),
            "counted": pipeline | "Counted" >> beam.Create(counted),
        } | archive_job.RecordArchiveRun(str(tmp_path), "run-1", {"mode": "both"})
    held = records.read_json_lines(archive.manifest_pattern(str(tmp_path)))
    assert [r["source_path"] for r in held] == ["a.jpg"]
    run_folder = archive.run_dir(str(tmp_path), "run-1")
    letters = records.read_json_lines(records.join(run_folder, "dead_letter-*.jsonl"))
    assert sorted((d["path"], d["reason"]) for d in letters) == [
        ("b.jpg", reasons.INFERENCE_FAILED),
        ("c.jpg", reasons.UNREADABLE),
    ]
    summary = records.read_json(records.join(run_folder, records.SUMMARY_FILE))
    assert (summary["matched"], summary["hashed"], summary["already_archived"]) == (4, 3, 1)
    assert (summary["processed"], summary["failed"], summary["code_bytes"]) == (1, 2, 30)
    assert summary["matched"] == (
        summary["already_archived"]
        + summary["duplicates"]
        + summary["processed"]
        + summary["failed"]
    )
