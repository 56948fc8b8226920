"""The prepare stage end to end on real image files, through the real Beam runners."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import prepare
from tests.conftest import copy_samples, shared_dataset, write_broken_files
from transforms import features, records, statistics, tfrecord_shards

IN_PROCESS = ["--runner=DirectRunner"]
TWO_WORKERS = [
    "--runner=DirectRunner",
    "--direct_num_workers=2",
    "--direct_running_mode=multi_processing",
]


def run_prepare(inputs: list[str], output: Path, *extra: str) -> dict:
    argv = [arg for pattern in inputs for arg in ("--input", pattern)]
    argv += ["--output", str(output), *extra]
    prepare.run(argv)
    return records.read_json(str(output / records.SUMMARY_FILE))


def shard_bytes(output: Path) -> dict[str, bytes]:
    paths = sorted(glob.glob(str(output / "*" / f"*{features.SHARD_SUFFIX}")))
    return {os.path.relpath(p, output): Path(p).read_bytes() for p in paths}


def residual_sigma(examples: list[dict], sigma: float) -> float:
    """Std of noisy - clean over pixels that clipping at 0 or 255 cannot have touched.

    Selecting on ``0 < noisy < 255`` would truncate the noise tails of near-black and
    near-white pixels and bias the estimate low; pixels whose clean value lies 3 sigma
    inside both bounds are (to 0.3%) never clipped.
    """
    clean = np.stack([e[features.CLEAN] for e in examples]).astype(float)
    noisy = np.stack([e[features.NOISY] for e in examples]).astype(float)
    unclipped = (clean >= 3 * sigma) & (clean <= 255 - 3 * sigma)
    assert unclipped.sum() > 10_000
    return float((noisy - clean)[unclipped].std())


def parse_with_feature_spec(output: Path, split: str) -> list[dict]:
    """Reads the shards with tf.data and the project's parser, as the trainer does."""
    files = tf.io.gfile.glob(features.shard_glob(str(output), split))
    dataset = tf.data.TFRecordDataset(files).map(features.parse_examples)
    return [{key: value.numpy() for key, value in example.items()} for example in dataset]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    copy_samples(root / "photos", 0, 3)
    copy_samples(root / "photos" / "nested" / "deeper", 3)  # the other four, two levels down
    broken = write_broken_files(root / "broken")
    return root, broken


@pytest.fixture(scope="module")
def first_run(corpus, tmp_path_factory):
    root, _ = corpus
    output = tmp_path_factory.mktemp("prepared")
    summary = run_prepare(
        [f"{root}/photos/**", f"{root}/broken/*", f"{root}/missing/*.png"],
        output,
        "--noise=gaussian:25",
        "--seed=3",
        "--patch-size=64",
        "--patches-per-image=6",
        "--eval-fraction=0.3",
        "--num-shards=3",
        *IN_PROCESS,
    )
    return output, summary


def test_summary_adds_up_and_counts_every_reason(corpus, first_run):
    _, broken = corpus
    _, summary = first_run
    assert summary["matched"] == 7 + len(broken)
    assert summary["decoded"] == 7
    assert summary["matched"] == summary["decoded"] + summary["failed"]
    expected_reasons = {}
    for reason in broken.values():
        expected_reasons[reason] = expected_reasons.get(reason, 0) + 1
    assert summary["failed_by_reason"] == expected_reasons
    assert summary["images"]["train"] + summary["images"]["eval"] == 7
    assert summary["patches"]["train"] == 6 * summary["images"]["train"]
    assert summary["patches"]["eval"] == 6 * summary["images"]["eval"]
    assert summary["patterns_unmatched"] == [f"{corpus[0]}/missing/*.png"]


def test_every_broken_file_is_one_dead_letter_with_its_reason(corpus, first_run):
    root, broken = corpus
    output, _ = first_run
    letters = records.read_json_lines(str(output / "dead_letter*"))
    read_letters = [r for r in letters if r["stage"] == "read"]
    by_name = {os.path.basename(r["path"]): r["reason"] for r in read_letters}
    assert len(read_letters) == len(broken)
    assert by_name == broken
    assert [r["reason"] for r in letters if r["stage"] == "match"] == ["no_match"]


def test_shards_parse_with_the_feature_spec_and_splits_are_disjoint(first_run):
    output, summary = first_run
    train = parse_with_feature_spec(output, "train")
    evaluation = parse_with_feature_spec(output, "eval")
    assert len(train) == summary["patches"]["train"]
    assert len(evaluation) == summary["patches"]["eval"]
    assert train and evaluation, "a 0.3 eval fraction over 7 images should fill both splits"
    for example in train[:3]:
        assert example[features.CLEAN].shape == (64, 64, 3)
        assert example[features.CLEAN].dtype == np.uint8
        assert example[features.NOISE_MODEL] == b"gaussian"
        assert json.loads(example[features.NOISE_PARAMS]) == [{"model": "gaussian", "sigma": 25.0}]
    train_keys = {e[features.SOURCE_KEY] for e in train}
    eval_keys = {e[features.SOURCE_KEY] for e in evaluation}
    assert not train_keys & eval_keys
    assert b"nested/deeper/coffee.png" in train_keys | eval_keys  # '**' reached two levels down


def test_records_staged_for_the_shards_are_gone_once_they_are_written(first_run):
    """Each record passes through a staged file of its own on its way to a shard (so the
    shards' GroupByKey holds keys, not records); none is left behind."""
    output, summary = first_run
    for split in ("train", "eval"):
        assert not (output / split / tfrecord_shards.STAGING_DIR).exists()
        assert {p.suffix for p in (output / split).iterdir()} == {features.SHARD_SUFFIX}
    assert summary["patches"]["train"] == len(parse_with_feature_spec(output, "train"))


def test_gaussian_25_has_sigma_25_on_unclipped_pixels(first_run):
    output, _ = first_run
    examples = parse_with_feature_spec(output, "train") + parse_with_feature_spec(output, "eval")
    assert abs(residual_sigma(examples, 25.0) - 25.0) < 0.5


def test_transform_stats_equal_numpy_over_the_train_patches(first_run):
    output, _ = first_run
    clean = np.stack([e[features.CLEAN] for e in parse_with_feature_spec(output, "train")])
    pixels = clean.reshape(-1, 3).astype(np.float64) / 255.0
    stats = statistics.read_stats(str(output / features.TRANSFORM_DIR))
    assert stats == records.read_json(str(output / statistics.STATS_FILE))
    assert stats[statistics.PATCH_COUNT] == len(clean)
    np.testing.assert_allclose(stats[statistics.CHANNEL_MEAN], pixels.mean(0), atol=1e-4)
    np.testing.assert_allclose(stats[statistics.CHANNEL_STD], pixels.std(0), atol=1e-4)


def test_rerun_on_two_workers_is_byte_identical_and_other_seed_differs(corpus, first_run, tmp_path):
    root, _ = corpus
    output, _ = first_run
    common = [
        "--noise=gaussian:25",
        "--patch-size=64",
        "--patches-per-image=6",
        "--eval-fraction=0.3",
        "--num-shards=3",
    ]
    inputs = [f"{root}/photos/**", f"{root}/broken/*", f"{root}/missing/*.png"]
    run_prepare(inputs, tmp_path / "same", *common, "--seed=3", *TWO_WORKERS)
    original = shard_bytes(output)
    assert shard_bytes(tmp_path / "same") == original
    run_prepare(inputs, tmp_path / "other", *common, "--seed=4", *IN_PROCESS)
    other = shard_bytes(tmp_path / "other")
    assert other.keys() == original.keys()
    assert all(other[name] != original[name] for name in original)


def test_existing_shards_are_not_overwritten_without_the_flag(first_run):
    output, _ = first_run
    with pytest.raises(FileExistsError, match="--overwrite"):
        prepare.run(["--output", str(output), *IN_PROCESS])


@pytest.mark.slow
def test_cbsd432_with_broken_files(tmp_path):
    """The issue's acceptance run: the training corpus plus a folder of broken files."""
    cbsd432 = shared_dataset("CBSD432")
    broken = write_broken_files(tmp_path / "broken")
    output = tmp_path / "prepared"
    summary = run_prepare(
        [f"{cbsd432}/*.jpg", f"{tmp_path}/broken/*"],
        output,
        "--noise=gaussian:25",
        "--patches-per-image=2",
        "--patch-size=96",
        *TWO_WORKERS,
    )
    assert summary["matched"] == 432 + len(broken)
    assert summary["decoded"] == 432
    assert summary["failed"] == len(broken)
    letters = records.read_json_lines(str(output / "dead_letter*"))
    assert sorted(os.path.basename(r["path"]) for r in letters) == sorted(broken)
    examples = parse_with_feature_spec(output, "train")
    assert len(examples) == summary["patches"]["train"] > 700
    assert abs(residual_sigma(examples, 25.0) - 25.0) < 0.5


def test_strict_makes_a_failed_input_exit_nonzero(tmp_path):
    """prepare follows the stage rule: exit 0 while something was prepared, 1 when nothing
    was or, with --strict, when any input failed (a scheduler's alert)."""
    good = copy_samples(tmp_path / "good", 0, 2)
    (tmp_path / "good" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    common = ["--input", f"{tmp_path}/good/*", "--patch-size=32", "--patches-per-image=2"]
    assert len(good) == 2
    assert prepare.main([*common, f"--output={tmp_path}/lenient", *IN_PROCESS]) == 0
    strict = [*common, f"--output={tmp_path}/strict", "--strict", *IN_PROCESS]
    assert prepare.main(strict) == 1
    summary = records.read_json(str(tmp_path / "strict" / records.SUMMARY_FILE))
    assert summary["failed"] == 1 and summary["decoded"] == 2


def test_shards_are_the_same_bytes_whether_records_are_staged_or_shuffled(tmp_path):
    """Local runners stage each record as a file (their GroupByKey is memory); Dataflow
    shuffles the records themselves. Either way a shard is its records sorted by key."""
    rng = np.random.default_rng(0)
    keyed = [
        (f"image-{i % 7}\x1f{i:06d}", rng.bytes(int(rng.integers(1, 5000)))) for i in range(60)
    ]
    for staged in (True, False):
        with beam.Pipeline(options=PipelineOptions(IN_PROCESS)) as pipeline:
            _ = (
                pipeline
                | beam.Create(list(reversed(keyed)))
                | tfrecord_shards.WriteShards(
                    str(tmp_path / str(staged) / "train"), "train", 3, staged
                )
            )
    assert shard_bytes(tmp_path / "True") == shard_bytes(tmp_path / "False")
    assert len(shard_bytes(tmp_path / "True")) == 3
    assert os.listdir(tmp_path / "True") == ["train"]  # the staged records are gone
    read_back = [
        bytes(record.numpy())
        for path in sorted(glob.glob(str(tmp_path / "True" / "train" / "*")))
        for record in tf.data.TFRecordDataset(path)
    ]
    assert sorted(read_back) == sorted(record for _, record in keyed)
