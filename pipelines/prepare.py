"""Prepare stage: an image corpus -> noisy/clean TFRecord patches plus tf.Transform statistics.

Usage, locally (DirectRunner; add ``--direct_num_workers=2 --direct_running_mode=multi_processing``
for parallel workers)::

    latentpress prepare --input 'photos/**/*.jpg' --output out/prepared \
        --noise gaussian:0-55 --seed 0

and on Dataflow::

    latentpress prepare --input 'gs://bucket/photos/**' --output gs://bucket/prepared \
        --noise gaussian:0-55 --seed 0 --runner DataflowRunner --project P --region R \
        --temp_location gs://bucket/tmp --setup_file ./setup.py

Writes under ``--output``:
  train/train-*.tfrecord, eval/eval-*.tfrecord   tf.Example patches (``transforms.features``)
  transform_output/                              tf.Transform graph with the clean-patch stats
  transform_stats.json                           those stats as JSON
  dead_letter-*.jsonl                            one record per input that failed, with reason
  summary.json                                   matched = decoded + failed, patches per split
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile

import apache_beam as beam
from apache_beam.options.pipeline_options import GoogleCloudOptions

from pipelines.options import (
    add_corpus_args,
    corpus_main,
    expected_inputs,
    is_dataflow,
    run_outcome,
    run_pipeline,
    split_args,
    stage_parser,
)
from transforms import features, records, statistics
from transforms.noise import parse_spec
from transforms.noisy_patches import AddNoise, ExtractPatches
from transforms.patches import EVAL, TRAIN
from transforms.progress import ReportProgress
from transforms.read_images import ReadImages
from transforms.tfrecord_shards import WriteShards

LOG = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser(
        "latentpress prepare",
        "Cut noisy/clean patch pairs from an image corpus into TFRecord shards.",
    )
    add_corpus_args(parser)
    parser.add_argument(
        "--noise",
        default="gaussian:0-55",
        help="Noise SPEC, e.g. gaussian:25, gaussian:0-55, jpeg:10-40, "
        "mix:gaussian:5-50+jpeg:20-60 (see the README).",
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of every random draw.")
    parser.add_argument("--patch-size", type=int, default=128, help="Patch side in pixels.")
    parser.add_argument(
        "--patches-per-image", type=int, default=16, help="Random patches cut from each image."
    )
    parser.add_argument(
        "--eval-fraction",
        type=float,
        default=0.1,
        help="Fraction of images (picked by a hash of the key) whose patches go to eval.",
    )
    parser.add_argument(
        "--num-shards", type=int, default=8, help="TFRecord shards of the train split."
    )
    parser.add_argument(
        "--transform-temp-dir",
        help="Scratch directory of tf.Transform's analysis (default: <temp_location>/tft on "
        "Dataflow, a local temporary directory otherwise).",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="Replace shards an earlier run left in --output instead of refusing to start.",
    )
    return parser


def _check_args(args: argparse.Namespace) -> None:
    parse_spec(args.noise)  # raises ValueError with a readable message
    if args.patch_size < 8:
        raise ValueError("--patch-size must be at least 8")
    if args.patches_per_image < 1:
        raise ValueError("--patches-per-image must be at least 1")
    if not 0.0 <= args.eval_fraction < 1.0:
        raise ValueError("--eval-fraction must be in [0, 1)")
    if args.num_shards < 1:
        raise ValueError("--num-shards must be at least 1")


def _summarize(counts: dict, totals: None) -> dict:
    return {
        "matched": counts.get("matched", 0),
        "decoded": counts.get("decoded", 0),
        "images": {split: counts.get(f"images_{split}", 0) for split in (TRAIN, EVAL)},
        "patches": {split: counts.get(f"patches_{split}", 0) for split in (TRAIN, EVAL)},
    }


def _serialize(patch, noise_spec: str) -> tuple[str, bytes]:
    sort_key = f"{patch.key}\x1f{patch.index:06d}"
    example = features.make_example(
        patch.clean, patch.noisy, patch.applied, noise_spec, patch.key, patch.index
    )
    return sort_key, example


def _transform_dirs(output: str, options) -> tuple[str, str]:
    """Where tf.Transform writes, and where its output must end up.

    tf.Transform writes with TensorFlow's file I/O.  On Dataflow the workers write straight to
    the final gs:// directory.  Locally, TensorFlow cannot reach every Beam filesystem (nor a
    storage emulator), so a non-local output is written to local disk and copied after.
    """
    final = records.join(output, features.TRANSFORM_DIR)
    if "://" not in output or is_dataflow(options):
        return final, final
    return os.path.join(tempfile.mkdtemp(prefix="latentpress-tft-"), features.TRANSFORM_DIR), final


def _tft_temp_dir(args, options) -> str:
    if args.transform_temp_dir:
        return args.transform_temp_dir
    if is_dataflow(options):
        return records.join(options.view_as(GoogleCloudOptions).temp_location, "tft")
    return tempfile.mkdtemp(prefix="latentpress-tft-tmp-")


def _copy_tree(local_dir: str, remote_dir: str) -> None:
    for root, _, files in os.walk(local_dir):
        for name in files:
            local = os.path.join(root, name)
            relative = os.path.relpath(local, local_dir).replace(os.sep, "/")
            with open(local, "rb") as handle:
                records.write_atomically(records.join(remote_dir, relative), handle.read())


def run(argv=None, save_main_session=True, test_pipeline=None):
    """Builds and runs the prepare pipeline; returns the PipelineResult."""
    import tensorflow_transform.beam as tft_beam

    args, options = split_args(build_parser(), argv, save_main_session)
    _check_args(args)
    if not args.input:
        from latentpress.samples import sample_paths

        args.input = sample_paths()
    records.clear_earlier_run(
        args.output,
        [f"{split}/*" for split in (features.TRAIN_DIR, features.EVAL_DIR)],
        args.overwrite,
    )
    config = {
        "inputs": args.input,
        "noise": args.noise,
        "seed": args.seed,
        "patch_size": args.patch_size,
        "patches_per_image": args.patches_per_image,
        "eval_fraction": args.eval_fraction,
        "max_pixels": args.max_pixels,
    }
    transform_dir, transform_final = _transform_dirs(args.output, options)
    eval_shards = max(1, args.num_shards // 4)

    pipeline = test_pipeline or beam.Pipeline(options=options)
    with tft_beam.Context(temp_dir=_tft_temp_dir(args, options)):
        read = pipeline | "ReadImages" >> ReadImages(
            args.input, max_pixels=args.max_pixels, min_side=args.patch_size
        )
        _ = read["images"] | "ReportProgress" >> beam.ParDo(
            ReportProgress(
                "prepare",
                expected_inputs(args.input, options),
                lambda _: False,  # unreadable files are dead letters, counted at the end
                args.progress_every,
                unit="images read",
            )
        )
        patches = (
            read["images"]
            | "ExtractPatches"
            >> ExtractPatches(
                args.patch_size, args.patches_per_image, args.seed, args.eval_fraction
            )
            | "AddNoise" >> AddNoise(args.noise, args.seed)
        )
        by_split = patches | "SplitByImageKey" >> beam.Partition(
            lambda patch, _: 0 if patch.split == TRAIN else 1, 2
        )
        serialized = {}
        for split, split_patches, num_shards in (
            (TRAIN, by_split[0], args.num_shards),
            (EVAL, by_split[1], eval_shards),
        ):
            serialized[split] = split_patches | f"Serialize{split.title()}" >> beam.Map(
                _serialize, args.noise
            )
            _ = serialized[split] | f"Write{split.title()}Shards" >> WriteShards(
                records.join(args.output, split),
                split,
                num_shards,
                stage_records=not is_dataflow(options),  # a local runner's shuffle is memory
            )

        # tf.Transform reads the very examples written to the train shards.
        _ = (
            serialized[TRAIN]
            | "DropSortKeys" >> beam.Values()
            | "Analyze" >> statistics.AnalyzeExamples(transform_dir)
        )

        counted = (
            read["matched"] | "CountMatched" >> beam.Map(lambda _: "matched"),
            read["images"] | "CountDecoded" >> beam.Map(lambda _: "decoded"),
            patches | "CountPatches" >> beam.Map(lambda p: f"patches_{p.split}"),
            patches
            | "CountImagesPerSplit"
            >> beam.FlatMap(lambda p: [f"images_{p.split}"] if p.index == 0 else []),
        ) | "AllCounted" >> beam.Flatten()
        _ = {
            "failures": read["dead_letter"],
            "unmatched": read["unmatched"],
            "counted": counted,
        } | "RunRecords" >> records.WriteRunRecords(args.output, _summarize, config)
        summary_path = records.join(args.output, records.SUMMARY_FILE)

        result, finished = run_pipeline(pipeline, options)
    if not finished:
        return result

    if transform_dir != transform_final:
        _copy_tree(transform_dir, transform_final)
    stats = statistics.read_stats(records.local_copy(transform_dir))
    records.write_json(records.join(args.output, statistics.STATS_FILE), stats)
    summary = records.read_json(summary_path)
    LOG.info(
        "prepare: %d matched, %d decoded, %d failed; patches train=%d eval=%d; wrote %s",
        summary["matched"],
        summary["decoded"],
        summary["failed"],
        summary["patches"][TRAIN],
        summary["patches"][EVAL],
        args.output,
    )
    dead_letters = records.join(args.output, records.DEAD_LETTER_PREFIX + "-*.jsonl")
    return run_outcome("prepare", summary, summary["decoded"], dead_letters, args.strict)


def main(argv=None) -> int:
    return corpus_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
