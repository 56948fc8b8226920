"""The command line as a user meets it: exit codes and the one line that says what went wrong.

Most tests run the command's ``main`` in this process (the ``latentpress`` fixture); those
about what a fresh process prints (a quiet start-up, --verbose, progress in the log) start one.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO, copy_samples, latentpress_process, write_broken_files

NATIVE_NOISE = ("absl", "cuda", "cuInit", "I0000", "E0000", "oneDNN", "Resource module")


def assert_quiet(done: subprocess.CompletedProcess) -> None:
    """No TensorFlow/absl/CUDA start-up lines, no Beam platform chatter."""
    for marker in NATIVE_NOISE:
        assert marker not in done.stderr + done.stdout, marker


def test_a_pattern_that_matches_nothing_fails_the_run(latentpress, tmp_path):
    done = latentpress(
        "apply", "--input", f"{tmp_path}/nope/*.png", "--output", str(tmp_path / "o")
    )
    assert done.returncode == 1
    assert "nothing matched" in done.stderr and "no input matched" in done.stderr


def test_a_run_where_every_input_failed_fails_and_says_why(latentpress, tmp_path):
    reasons = write_broken_files(tmp_path / "broken")
    (tmp_path / "broken" / "tiny.png").unlink()  # too small to train on, fine to apply to
    del reasons["tiny.png"]
    done = latentpress(
        "apply",
        "--input",
        f"{tmp_path}/broken/*",
        "--output",
        str(tmp_path / "o"),
        "--mode=denoise",
    )
    assert done.returncode == 1
    assert f"{len(reasons)} of {len(reasons)} inputs failed" in done.stderr
    assert "not_an_image" in done.stderr and "dead letters:" in done.stderr


@pytest.mark.parametrize(("strict", "code"), [([], 0), (["--strict"], 1)])
def test_some_failures_are_reported_and_strict_makes_them_an_error(
    latentpress, tmp_path, strict, code
):
    copy_samples(tmp_path / "mixed", 0, 1)
    (tmp_path / "mixed" / "notes.png").write_text("not an image\n")
    done = latentpress(
        "apply",
        "--input",
        f"{tmp_path}/mixed/*",
        "--output",
        str(tmp_path / "o"),
        "--mode=denoise",
        *strict,
    )
    assert done.returncode == code, done.stderr
    assert "1 of 2 inputs failed (1 not_an_image)" in done.stderr
    assert "1 written" in done.stdout


def test_a_mistyped_flag_is_an_error_not_a_warning(latentpress, tmp_path):
    done = latentpress("apply", "--output", str(tmp_path / "o"), "--qualty", "low")
    assert done.returncode == 2
    assert "unrecognized arguments: --qualty" in done.stderr
    assert not (tmp_path / "o").exists()


def test_decompressing_next_to_the_original_never_replaces_it(latentpress, tmp_path):
    """compress photos/x.png -o photos; decompress photos/x.png.lpc -o photos must not lose
    x.png (the code file's name leads back to it: one naming rule for every stage)."""
    (photo,) = copy_samples(tmp_path / "photos", 2, 3)  # chelsea.png
    original = photo.read_bytes()
    assert latentpress("compress", str(photo), "-o", str(photo.parent)).returncode == 0
    code = photo.parent / (photo.name + ".lpc")
    assert code.exists()

    done = latentpress("decompress", str(code), "-o", str(photo.parent))
    assert done.returncode == 1
    assert f"{photo} exists (pass --overwrite to replace it)" in done.stderr
    assert photo.read_bytes() == original
    again = latentpress("compress", str(photo), "-o", str(photo.parent))  # code exists too
    assert again.returncode == 1 and "--overwrite" in again.stderr
    replaced = latentpress("compress", "--overwrite", str(photo), "-o", str(photo.parent))
    assert replaced.returncode == 0, replaced.stderr


def test_one_naming_rule_keeps_a_jpg_and_a_png_apart_through_every_stage(latentpress, tmp_path):
    """a.png -> a.png.lpc -> a.png and a.jpg -> a.jpg.lpc -> a.jpg.png, in compress,
    decompress and apply alike (no a.png.png, no collision of one stem).  Compress and
    decompress run as fresh processes: their start-up and model loading print nothing else."""
    from PIL import Image

    (png,) = copy_samples(tmp_path / "photos", 2, 3)  # chelsea.png
    with Image.open(png) as image:
        image.convert("RGB").crop((0, 0, 96, 64)).save(png.with_suffix(".jpg"))
    jpg = png.with_suffix(".jpg")
    done = latentpress_process("compress", str(png), str(jpg), "-o", str(tmp_path / "codes"))
    assert done.returncode == 0, done.stderr
    assert_quiet(done)
    codes = sorted(p.name for p in (tmp_path / "codes").iterdir())
    assert codes == ["chelsea.jpg.lpc", "chelsea.png.lpc"]
    done = latentpress_process(
        "decompress", *sorted(map(str, (tmp_path / "codes").iterdir())), "-o", str(tmp_path / "d")
    )
    assert done.returncode == 0, done.stderr
    assert_quiet(done)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["chelsea.jpg.png", "chelsea.png"]

    out = tmp_path / "applied"
    done = latentpress(
        "apply", "--input", f"{tmp_path}/photos/*", "--output", str(out), "--keep-cleaned"
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (out / "codes").iterdir()) == codes
    assert sorted(p.name for p in (out / "clean").iterdir()) == ["chelsea.jpg.png", "chelsea.png"]


def test_apply_into_an_earlier_runs_folder_is_refused_or_replaced_whole(latentpress, tmp_path):
    copy_samples(tmp_path / "two", 0, 2)
    copy_samples(tmp_path / "one", 2, 3)
    out = tmp_path / "out"
    first = latentpress(
        "apply", "--input", f"{tmp_path}/two/*", "--output", str(out), "--mode=denoise"
    )
    assert first.returncode == 0, first.stderr

    again = latentpress(
        "apply", "--input", f"{tmp_path}/one/*", "--output", str(out), "--mode=denoise"
    )
    assert again.returncode == 2 and "pass --overwrite" in again.stderr
    assert len(list((out / "clean").glob("*.png"))) == 2  # untouched

    replaced = latentpress(
        "apply",
        "--input",
        f"{tmp_path}/one/*",
        "--output",
        str(out),
        "--mode=denoise",
        "--overwrite",
    )
    assert replaced.returncode == 0, replaced.stderr
    # The folder holds exactly the run its manifest describes.
    manifest = [line for f in out.glob("manifest-*") for line in f.read_text().splitlines()]
    assert len(manifest) == 1 and len(list((out / "clean").glob("*.png"))) == 1


def _one_line_error(done: subprocess.CompletedProcess, code: int, *says: str) -> None:
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    for text in says:
        assert text in done.stderr


@pytest.mark.parametrize(
    "stage, output_flag",
    [("compress", "-o"), ("apply", "--output"), ("archive", "--archive")],
)
def test_an_output_under_a_regular_file_is_one_line_naming_it(
    latentpress, tmp_path, stage, output_flag
):
    (photo,) = copy_samples(tmp_path / "photos", 2, 3)
    (tmp_path / "afile").write_text("not a folder")
    target = str(tmp_path / "afile" / "sub")
    args = [str(photo)] if stage == "compress" else ["--input", str(photo)]
    done = latentpress(stage, *args, output_flag, target)
    _one_line_error(done, 1, target, "Not a directory")


def test_an_unwritable_output_folder_is_one_line_naming_it(latentpress, tmp_path):
    # /sys refuses new folders even to root (CI runs as root, where chmod does not bite).
    (photo,) = copy_samples(tmp_path / "photos", 2, 3)
    done = latentpress("compress", str(photo), "-o", "/sys/latentpress-test-output")
    _one_line_error(done, 1, "/sys/latentpress-test-output", "not permitted")


def test_a_model_of_the_wrong_kind_is_one_line_naming_it(latentpress, tmp_path):
    (photo,) = copy_samples(tmp_path / "photos", 2, 3)
    done = latentpress("compress", "--model", "denoiser", str(photo), "-o", str(tmp_path / "o"))
    _one_line_error(done, 2, "'denoiser' is a denoiser model, not a codec")
    done = latentpress(
        "apply",
        "--input",
        str(photo),
        "--output",
        str(tmp_path / "a"),
        "--mode=denoise",
        "--denoiser",
        "codec",
    )
    _one_line_error(done, 2, "'codec' is a codec model, not a denoiser")


def test_a_clean_run_writes_no_dead_letters_and_names_stay_as_typed(latentpress, tmp_path):
    """Manifest and summary keep a non-ASCII name as is (grep finds it); a run without
    failures leaves no empty dead-letter file behind."""
    (photo,) = copy_samples(tmp_path / "photos", 2, 3)
    photo.rename(photo.with_name("café.png"))
    out = tmp_path / "out"
    done = latentpress(
        "apply", "--input", f"{tmp_path}/photos/*", "--output", str(out), "--mode=compress"
    )
    assert done.returncode == 0, done.stderr
    (manifest_file,) = out.glob("manifest-*.jsonl")
    assert '"key": "café.png"' in manifest_file.read_text(encoding="utf-8")
    assert not list(out.glob("dead_letter*"))


def test_one_vocabulary_of_flags_and_defaults_in_every_help(latentpress):
    from pipelines import apply, archive, evaluate
    from pipelines.options import split_args

    # --input and -o/--output on every stage; evaluate's old --images/--out still work.
    for argv in (["--input", "a/*", "-o", "r"], ["--images=a/*", "--out=r"]):
        args, _ = split_args(evaluate.build_parser(), argv)
        assert (args.images, args.out) == (["a/*"], "r")
    args, _ = split_args(apply.build_parser(), ["--input", "a/*", "-o", "out"])
    assert args.output == "out"
    # A plain switch; the Flex Template's --name=true/false still reaches it.
    for argv, expected in (
        (["--reprocess-older-models"], True),
        (["--reprocess_older_models=true"], True),
        (["--reprocess_older_models=false"], False),
        ([], False),
    ):
        args, _ = split_args(archive.build_parser(), ["--archive", "A", *argv])
        assert args.reprocess_older_models is expected, argv
    shown = latentpress("apply", "--help")
    assert shown.returncode == 0 and "(default: 64000000)" in shown.stdout
    assert "-o OUTPUT, --output OUTPUT" in shown.stdout
    assert "(default: None)" not in shown.stdout and "(default: False)" not in shown.stdout


def test_long_runs_show_their_progress_while_they_go(tmp_path):
    """Counts done of matched, failures and a rate in the log as the work happens (here after
    every image: --progress-every=0); the result line still goes to stdout.  An unreadable
    file never reaches the models: it is in the final counts, not the progress.  A fresh
    process: its log is the command's own, and nothing of TensorFlow's start-up is in it."""
    copy_samples(tmp_path / "photos", 0, 3)
    (tmp_path / "photos" / "notes.png").write_text("not an image")
    done = latentpress_process(
        "apply",
        "--input",
        f"{tmp_path}/photos/*",
        "-o",
        str(tmp_path / "out"),
        "--mode=both",
        "--progress-every=0",
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "/s (worker" in line]
    assert [line.split("INFO ")[1].split(",")[0] for line in lines] == [
        f"apply: {n} of 4 images done" for n in (1, 2, 3)
    ]
    assert "3 of 4 images done, 0 failed" in lines[-1]
    assert done.stdout.startswith("apply: 4 matched, 3 written, 1 failed")
    assert "dB PSNR against the cleaned images" in done.stdout  # mode both: not the inputs
    assert_quiet(done)


def test_verbose_shows_what_the_default_keeps_quiet():
    done = latentpress_process("compress", "--help", "--verbose")
    assert done.returncode == 0 and "usage: latentpress compress" in done.stdout
    assert "absl" in done.stderr or "I0000" in done.stderr


def test_a_bare_pytest_from_the_root_collects_the_tests_only():
    """The Airflow DAG's tests need Airflow's own venv (`make test` runs them there)."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    assert "tests/test_cli.py::" in done.stdout and "schedules/" not in done.stdout


def test_version():
    from latentpress import __version__

    done = latentpress_process("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"latentpress {__version__}"
