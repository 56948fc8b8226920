"""``latentpress decompress``: code files back to PNG images.

    latentpress decompress [--model M] CODE [CODE ...] -o DIR
    latentpress decompress [--model M] --input 'GLOB' -o DIR [Beam options]
    latentpress decompress --models-dir ARCHIVE/models --input 'ARCHIVE/codes/**' -o DIR

Each PNG carries what its code file carries: EXIF, XMP, the ICC profile and alpha
(``transforms.metadata``).  Each file is decoded by the model its header names (its
fingerprint): ``--model``, a shipped model (any ``--quality``), or one in ``--models-dir`` (an
archive keeps every model that wrote into it in its ``models/``).

The first form decodes the files given, in this process, to ``DIR/<name>``: the code file's
name without ``.lpc``, with ``.png`` added unless it ends with it (``a.png.lpc`` -> ``a.png``,
``b.jpg.lpc`` -> ``b.jpg.png``; ``manifest.output_name``).  The second runs a Beam pipeline
over every file the pattern matches (local or gs://), naming by the same rule each file's key
(its path relative to the pattern's fixed part: ``codes/a/b.jpg.lpc`` under ``codes/**``
becomes ``DIR/a/b.jpg.png``), plus
``dead_letter-*.jsonl`` and ``summary.json`` (matched = written + failed).

A file that is not a code file, is truncated or corrupted, has an unknown format version or was
written by another model gets one line naming the problem (a dead-letter record in the
pipeline); the exit code is 1 if any failed.
"""

from __future__ import annotations

import argparse
import os
import sys

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from models import registry
from models.codefile import CodeFile, CodeFileError
from models.compressor import Compressor
from models.export import MODEL_CARD
from pipelines.options import (
    Refused,
    add_progress_arg,
    configure_logging,
    each_file,
    expected_inputs,
    only_launches,
    run_pipeline,
    split_args,
    stage_parser,
)
from transforms import metadata, records
from transforms.apply_models import safe_key
from transforms.manifest import output_name, output_names
from transforms.progress import ReportProgress
from transforms.read_images import DEAD_LETTER, MatchFiles
from transforms.reasons import BAD_CODE_FILE, UNREADABLE, UNSAFE_PATH
from transforms.records import refuse_to_overwrite, write_atomically


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("latentpress decompress", "Decompress latentpress code files to PNG.")
    parser.add_argument("codes", nargs="*", help="Code files (.lpc) to decompress.")
    parser.add_argument(
        "--input",
        action="append",
        help="Pattern of code files (local or gs://, '**' across folders) to decompress with "
        "a Beam pipeline; repeatable. Beam options go as --name=value.",
    )
    parser.add_argument("-o", "--output", required=True, help="Directory for the PNG files.")
    parser.add_argument(
        "--overwrite", action="store_true", help="Replace existing PNG files (never an input)."
    )
    parser.add_argument(
        "--model",
        default=registry.DEFAULT_CODEC,
        help="The model that wrote the files: shipped name or exported directory "
        "(default: %(default)s).",
    )
    parser.add_argument(
        "--models-dir",
        help="Folder of models named by fingerprint (an archive's models/, local or gs://): "
        "files written by other models than --model are decoded with theirs from there.",
    )
    add_progress_arg(parser)
    return parser


class ModelsByFingerprint:
    """The Compressor for each code file: --model, or the model its header's fingerprint names
    among the shipped models or in ``models_dir``.  Each model is loaded once."""

    def __init__(self, model: str, models_dir: str | None = None):
        self._default = Compressor(model)
        self._models_dir = models_dir
        self._loaded = dict.fromkeys(self._default.decodes_files_of, self._default)

    def for_code(self, data: bytes) -> Compressor:
        fingerprint = CodeFile.from_bytes(data).fingerprint
        if fingerprint not in self._loaded:
            shipped = registry.shipped_with_fingerprint(fingerprint)
            directory = records.join(self._models_dir, fingerprint) if self._models_dir else ""
            if shipped:
                self._loaded[fingerprint] = Compressor(shipped)
            elif directory and FileSystems.exists(records.join(directory, MODEL_CARD)):
                self._loaded[fingerprint] = Compressor(records.local_copy(directory))
            else:
                return self._default  # whose fingerprint check names both models
        return self._loaded[fingerprint]

    def decompress_png(self, data: bytes) -> tuple[bytes, tuple[int, int]]:
        """(PNG bytes with what the code file carries, (width, height))."""
        image, code = self.for_code(data).decode(data)
        return metadata.encode_png(image, metadata.from_code(code)), (code.width, code.height)


class DecodeCodeFiles(beam.DoFn):
    """MatchedFile of a code file -> PNG under the output directory, or a dead letter."""

    def __init__(self, output: str, model: str, models_dir: str | None = None):
        self._output = output
        self._model = model
        self._models_dir = models_dir
        self._written = Metrics.counter("decompress", "written")
        self._failed = Metrics.counter("decompress", "failed")

    def setup(self):
        self._compressor = ModelsByFingerprint(self._model, self._models_dir)

    def _fail(self, path: str, reason: str, detail: str):
        self._failed.inc()
        return beam.pvalue.TaggedOutput(
            DEAD_LETTER, records.dead_letter(path, "decompress", reason, detail)
        )

    def process(self, matched):
        key = output_name(matched.key, ".png")
        if not safe_key(key):
            yield self._fail(matched.path, UNSAFE_PATH, f"relative path {key!r} leaves DIR")
            return
        try:
            with FileSystems.open(matched.path) as handle:
                data = handle.read()
        except Exception as e:  # noqa: BLE001 - any I/O failure is this input's dead letter
            yield self._fail(matched.path, UNREADABLE, f"{type(e).__name__}: {e}")
            return
        try:
            png, _ = self._compressor.decompress_png(data)
        except CodeFileError as e:
            yield self._fail(matched.path, BAD_CODE_FILE, str(e))
            return
        target = records.join(self._output, key)
        if "://" not in target:
            os.makedirs(os.path.dirname(target), exist_ok=True)
        write_atomically(target, png)
        self._written.inc()
        yield {"path": matched.path, "output": target}


def run(argv=None, save_main_session=True, test_pipeline=None):
    """The Beam form: decompress every code file matching --input."""
    args, options = split_args(build_parser(), argv, save_main_session)
    if args.codes:
        raise ValueError("give code files or --input, not both (Beam options as --name=value)")
    registry.card(args.model, "codec")  # `--model denoiser` fails here, not on every worker
    records.check_output_folder(args.output)
    pipeline = test_pipeline or beam.Pipeline(options=options)
    matched = pipeline | "MatchCodeFiles" >> MatchFiles(args.input)
    decoded = matched["files"] | "Decompress" >> beam.ParDo(
        DecodeCodeFiles(args.output, args.model, args.models_dir)
    ).with_outputs(DEAD_LETTER, main="written")
    _ = decoded.written | "ReportProgress" >> beam.ParDo(
        ReportProgress(
            "decompress",
            expected_inputs(args.input, options),
            lambda _: False,  # failures are in the summary's count, not in this stream
            args.progress_every,
            unit="files written",
        )
    )
    counted = (
        matched["files"] | "CountMatched" >> beam.Map(lambda _: "matched"),
        decoded.written | "CountWritten" >> beam.Map(lambda _: "written"),
    ) | "AllCounted" >> beam.Flatten()
    _ = {
        "failures": decoded[DEAD_LETTER],
        "unmatched": matched["unmatched"],
        "counted": counted,
    } | "RunRecords" >> records.WriteRunRecords(
        args.output,
        _summarize,
        {"inputs": args.input, "model": args.model, "models_dir": args.models_dir},
    )
    summary_path = records.join(args.output, records.SUMMARY_FILE)
    result, finished = run_pipeline(pipeline, options)
    if not finished:
        return result
    summary = records.read_json(summary_path)
    print(
        f"decompress: {summary['matched']} matched, {summary['written']} written, "
        f"{summary['failed']} failed; images in {args.output}, summary {summary_path}"
    )
    return result


def _summarize(counts: dict, totals: None) -> dict:
    return {"matched": counts.get("matched", 0), "written": counts.get("written", 0)}


def main(argv=None) -> int:
    args, _ = build_parser().parse_known_args(argv)
    if args.input:
        configure_logging()
        run(argv)
        if only_launches(split_args(build_parser(), argv)[1]):
            return 0
        summary = records.read_json(records.join(args.output, records.SUMMARY_FILE))
        return 1 if summary["failed"] or summary["patterns_unmatched"] else 0
    args = build_parser().parse_args(argv)
    if not args.codes:
        raise ValueError("give code files to decompress, or --input PATTERN")
    names = output_names(args.codes, ".png")
    compressor = ModelsByFingerprint(args.model, args.models_dir)
    os.makedirs(args.output, exist_ok=True)

    def decompress_file(path: str, name: str):
        target = os.path.join(args.output, name)
        if refusal := refuse_to_overwrite(target, args.overwrite, args.codes):
            raise Refused(refusal)
        with open(path, "rb") as handle:
            png, (width, height) = compressor.decompress_png(handle.read())
        write_atomically(target, png)
        yield f"{target}: {width}x{height}"

    pairs = zip(args.codes, names, strict=True)
    return each_file("decompress", pairs, decompress_file, (OSError, CodeFileError))


if __name__ == "__main__":
    sys.exit(main())
