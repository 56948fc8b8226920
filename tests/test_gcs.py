"""Every stage against a real GCS JSON API server on loopback (and through transient errors)."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from apache_beam.io.filesystems import FileSystems
from PIL import Image

from latentpress.samples import sample_paths
from models.compressor import Compressor
from pipelines import apply, decompress, prepare, train
from tests.conftest import write_broken_files
from tests.local_gcs import faulty_proxy, list_paths, local_gcs, upload
from transforms import manifest

IN_PROCESS = ["--runner=DirectRunner"]


def read_bytes(path: str) -> bytes:
    with FileSystems.open(path) as handle:
        return handle.read()


def read_lines(pattern: str) -> list[dict]:
    return [
        json.loads(line)
        for path in list_paths(pattern)
        for line in read_bytes(path).decode().splitlines()
        if line
    ]


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    """An emulated bucket holding four photographs and the broken files."""
    broken_dir = tmp_path_factory.mktemp("broken")
    broken = write_broken_files(broken_dir)
    del broken["dangling.png"]  # a dangling link is a local-disk matter; it cannot be uploaded
    os.remove(broken_dir / "dangling.png")
    with local_gcs() as name:
        for path in sample_paths()[:4]:
            upload(path, f"gs://{name}/corpus/photos/{os.path.basename(path)}")
        for path in broken_dir.iterdir():
            upload(str(path), f"gs://{name}/corpus/broken/{path.name}")
        yield name, broken


def test_prepare_reads_a_gcs_corpus_and_writes_to_gcs(bucket):
    name, broken = bucket
    output = f"gs://{name}/prepared"
    prepare.run(
        [
            f"--input=gs://{name}/corpus/**",
            f"--output={output}",
            "--patch-size=64",
            "--patches-per-image=4",
            "--eval-fraction=0.3",
            *IN_PROCESS,
        ]
    )
    summary = json.loads(read_bytes(f"{output}/summary.json"))
    assert summary["matched"] == 4 + len(broken)
    assert summary["decoded"] == 4
    assert summary["failed_by_reason"] == {r: 1 for r in broken.values()}
    letters = read_lines(f"{output}/dead_letter*")
    assert sorted(os.path.basename(r["path"]) for r in letters) == sorted(broken)
    assert all(r["path"].startswith(f"gs://{name}/corpus/broken/") for r in letters)
    assert list_paths(f"{output}/train/*.tfrecord")
    assert not list_paths(f"{output}/*/_staged/*")  # each record's staged copy is deleted
    assert list_paths(f"{output}/transform_output/transform_fn/saved_model.pb")

    # The trainer stages gs:// shards locally (TensorFlow's own gs:// bypasses the emulator).
    card = train.run(
        [
            f"--data={output}",
            f"--model-dir={os.environ.get('TMPDIR', '/tmp')}/lp-gcs-train-{os.getpid()}",
            "--task=denoise",
            "--depth=2",
            "--filters=8",
            "--steps=3",
            "--eval-batches=1",
            "--no-progress",
        ]
    )
    assert card["steps"] == 3 and card["training_data"]["patches"]["train"] > 0


def test_apply_to_gcs_and_decompress_from_gcs(bucket):
    name, broken = bucket
    broken = {k: v for k, v in broken.items() if v != "smaller_than_patch"}  # fine for apply
    output = f"gs://{name}/applied"
    apply.run([f"--input=gs://{name}/corpus/**", f"--output={output}", *IN_PROCESS])
    rows = read_lines(f"{output}/manifest*")
    assert len(rows) == 5 + len(broken)
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 5
    assert sorted(os.path.basename(r["path"]) for r in read_lines(f"{output}/dead_letter*")) == (
        sorted(broken)
    )
    summary = json.loads(read_bytes(f"{output}/summary.json"))
    assert summary["matched"] == summary["written"] + summary["failed"] == len(rows)
    for row in ok:
        assert row["code_path"].startswith(f"gs://{name}/applied/codes/")
        assert len(read_bytes(row["code_path"])) == row["code_bytes"]
        assert row["clean_path"] == "" and row["code_of"] == "cleaned"  # mode both

    decoded = f"gs://{name}/decoded"
    decompress.run([f"--input={output}/codes/**", f"--output={decoded}", *IN_PROCESS])
    compressor = Compressor()
    for row in ok:
        png = read_bytes(f"{decoded}/{manifest.output_name(row['key'], '.png')}")
        expected = compressor.decompress(read_bytes(row["code_path"]))
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), expected)
    assert json.loads(read_bytes(f"{decoded}/summary.json"))["written"] == len(ok)


def test_transient_storage_errors_are_retried_and_nothing_is_lost(bucket):
    name, broken = bucket
    output = f"gs://{name}/through-faults"
    # Fewer than the run's distinct object operations (9 since writes replace in one rename
    # and clean runs write no dead-letter file), so every fault is injected and survived.
    with faulty_proxy(max_faults=8) as proxy:
        apply.run(
            [f"--input=gs://{name}/corpus/photos/*", f"--output={output}", "--mode=compress"]
            + IN_PROCESS
        )
        statuses = {status for _, _, status in proxy.injected}
    assert len(proxy.injected) == 8 and statuses == {503, 429}
    rows = read_lines(f"{output}/manifest*")
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    assert len(list_paths(f"{output}/codes/*.lpc")) == 4
    assert json.loads(read_bytes(f"{output}/summary.json"))["written"] == 4
