"""Apply stage: denoise and/or compress a whole corpus with the trained models, in Beam.

Usage, locally (add ``--direct_num_workers=2 --direct_running_mode=multi_processing`` for two
worker processes)::

    latentpress apply --input 'photos/**' --output out/applied [--mode both]

and on Dataflow::

    latentpress apply --input 'gs://bucket/photos/**' --output gs://bucket/applied \
        --runner DataflowRunner --project P --region R --temp_location gs://bucket/tmp \
        --setup_file ./setup.py

Writes under ``--output`` (schema in ``transforms/manifest.py``):
  codes/<key>.lpc         one code file per input (modes compress, both)
  clean/<key>.png         one cleaned image per input (modes denoise, both)
  manifest-*.jsonl        one record per input, ok or failed
  dead_letter-*.jsonl     one record per failed input, with its reason
  summary.json            totals; matched = written + failed
<key> is the input's path relative to the pattern's fixed part, so names never collide.
"""

from __future__ import annotations

import argparse
import logging
import sys

import apache_beam as beam

from models import registry
from pipelines.options import (
    add_carry_args,
    add_corpus_args,
    add_ensemble_arg,
    add_model_args,
    corpus_main,
    decode_options,
    expected_inputs,
    make_handler,
    missed_targets_note,
    rate_target,
    run_outcome,
    run_pipeline,
    stage_parser,
    start_model_stage,
)
from transforms import manifest, reasons, records
from transforms.apply_models import (
    BOTH,
    COMPRESS,
    DENOISE,
    ProcessImages,
    WriteOutputs,
    safe_key,
)
from transforms.progress import ReportProgress
from transforms.read_images import ReadImages

LOG = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser(
        "latentpress apply",
        "Denoise and/or compress every image of a corpus with the trained models.",
    )
    add_corpus_args(parser)
    add_model_args(parser)
    add_ensemble_arg(parser)
    add_carry_args(parser)
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="Replace the outputs of an earlier run in --output (without it such a folder is "
        "refused, so a folder always holds exactly one run's files).",
    )
    return parser


def _summarize(counts: dict, totals: dict) -> dict:
    return totals  # the manifest's totals (matched, written, bytes, mean bpp and PSNR)


def _dead_letter_record(letter: dict, mode: str) -> dict:
    return manifest.failed(letter["path"], "", mode, letter["reason"], letter["detail"])


def _unsafe_record(image, mode: str) -> dict:
    return manifest.failed(
        image.path,
        image.key,
        mode,
        reasons.UNSAFE_PATH,
        f"relative path {image.key!r} would leave the output directory",
        content_sha256=image.sha256,
        bytes_in=image.size_bytes,
    )


class ApplyToImages(beam.PTransform):
    """{"images": DecodedImage, "dead_letter": ReadImages' failures} -> one manifest record per
    input: an image whose relative path would leave the output folder is refused, the others
    go through ``process`` (ProcessImages), and failed reads become failed records."""

    def __init__(self, process: ProcessImages, mode: str):
        super().__init__()
        self._process = process
        self._mode = mode

    def expand(self, read):
        safe, unsafe = read["images"] | "CheckRelativePaths" >> beam.Partition(
            lambda image, _: 0 if safe_key(image.key) else 1, 2
        )
        return (
            safe | "ProcessImages" >> self._process,
            read["dead_letter"]
            | "FailedReadsToManifest" >> beam.Map(_dead_letter_record, self._mode),
            unsafe | "UnsafePathsToManifest" >> beam.Map(_unsafe_record, self._mode),
        ) | "AllRecords" >> beam.Flatten()


class RecordApplyRun(beam.PTransform):
    """{"records": manifest records, "unmatched": patterns that matched nothing} -> the run's
    files under ``output``: the manifest, the dead letters and ``summary.json`` (whose
    PCollection it returns)."""

    def __init__(self, output: str, config: dict):
        super().__init__()
        self._output = output
        self._config = config

    def expand(self, inputs):
        manifest_records = inputs["records"]
        _ = manifest_records | "WriteManifest" >> records.WriteJsonLines(
            self._output, manifest.MANIFEST_PREFIX
        )
        return {
            "failures": manifest_records | "Failures" >> manifest.DeadLettersOfFailed("apply"),
            "unmatched": inputs["unmatched"],
            "totals": manifest_records
            | "Totals" >> beam.CombineGlobally(manifest.SummarizeManifest()),
        } | "RunRecords" >> records.WriteRunRecords(self._output, _summarize, self._config)


def _run_config(args, codec_fingerprint: str, denoiser_fingerprint: str) -> dict:
    return {
        "inputs": args.input,
        "mode": args.mode,
        "model": args.model,
        "quality": args.quality,
        "target": rate_target(args),
        "denoiser": args.denoiser,
        "denoise_ensemble": args.denoise_ensemble,
        "denoise_strength": args.denoise_strength,
        "model_fingerprint": codec_fingerprint,
        "denoiser_fingerprint": denoiser_fingerprint,
    }


def _report(args, summary: dict, summary_path: str) -> None:
    against = "cleaned images" if args.mode == BOTH else "inputs"
    print(
        f"apply: {summary['matched']} matched, {summary['written']} written, "
        f"{summary['failed']} failed; {summary['bytes_in']} bytes in -> "
        f"{summary['code_bytes']} bytes of codes ({summary['mean_bpp']:.4f} bpp, "
        f"{summary['mean_psnr_db']:.2f} dB PSNR against the {against})"
        + (f" and {summary['clean_bytes']} bytes of cleaned PNG" if summary["clean_bytes"] else "")
    )
    if summary.get("targets_missed"):
        print(missed_targets_note(summary["targets_missed"], args.model))
    outputs = [f"summary {summary_path}"]
    if summary["written"] and args.mode in (COMPRESS, BOTH):
        outputs.append(f"code files {records.join(args.output, manifest.CODES_DIR)}/")
    if summary["written"] and (args.mode == DENOISE or args.keep_cleaned and args.mode == BOTH):
        outputs.append(f"cleaned images {records.join(args.output, manifest.CLEAN_DIR)}/")
    print("wrote " + ", ".join(outputs))


def run(argv=None, save_main_session=True, test_pipeline=None):
    args, options, codec_fingerprint, denoiser_fingerprint = start_model_stage(
        build_parser(), argv, save_main_session
    )
    records.clear_earlier_run(
        args.output,
        [
            f"{manifest.MANIFEST_PREFIX}-*",
            f"{records.DEAD_LETTER_PREFIX}-*",
            records.SUMMARY_FILE,
            f"{manifest.CODES_DIR}/**",
            f"{manifest.CLEAN_DIR}/**",
        ],
        args.overwrite,
    )
    writer = WriteOutputs(
        args.output,
        args.mode,
        codec_fingerprint,
        denoiser_fingerprint,
        codec_setting=registry.codec_setting(args.quality, rate_target(args), args.refine_steps),
    )
    progress = ReportProgress(
        "apply",
        expected_inputs(args.input, options),
        manifest.is_failed,
        args.progress_every,
        unit="images done",
    )

    pipeline = test_pipeline or beam.Pipeline(options=options)
    read = pipeline | "ReadImages" >> ReadImages(
        args.input, max_pixels=args.max_pixels, options=decode_options(args)
    )
    manifest_records = {
        "images": read["images"],
        "dead_letter": read["dead_letter"],
    } | "Apply" >> ApplyToImages(ProcessImages(make_handler(args), writer, progress), args.mode)
    config = _run_config(args, codec_fingerprint, denoiser_fingerprint)
    _ = {"records": manifest_records, "unmatched": read["unmatched"]} | "RecordRun" >> (
        RecordApplyRun(args.output, config)
    )

    result, finished = run_pipeline(pipeline, options)
    if not finished:
        return result  # a launched job: the caller may inspect it
    summary_path = records.join(args.output, records.SUMMARY_FILE)
    summary = records.read_json(summary_path)
    _report(args, summary, summary_path)
    dead_letters = records.join(args.output, records.DEAD_LETTER_PREFIX + "-*.jsonl")
    return run_outcome("apply", summary, summary["written"], dead_letters, args.strict)


def main(argv=None) -> int:
    return corpus_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
