"""``latentpress archive``: the nightly job that adds what is new in a corpus to an archive.

    latentpress archive --input 'gs://bucket/photos/**' --archive gs://bucket/archive \
        [--model M] [--denoiser D] [--reprocess-older-models] [Beam options]

Only inputs whose content (SHA-256 of the bytes) the archive does not hold yet are denoised
and compressed: a renamed file is not redone, a changed file is.  Outputs are named by
content, written atomically, and the run's manifest records are committed at the very end, so
a run killed part-way and run again leaves exactly one record and one code file per image.
Layout of the archive: ``transforms/archive.py``.

Each run writes ``DIR/runs/<run id>/summary.json`` with
matched = already_archived + duplicates + processed + failed, where duplicates are inputs with
the same content as another input of the same run (processed once).  Failed inputs get a
dead-letter record in the run folder and are tried again by the next run.

Do not run two archive jobs on one archive at the same time: both would process the same new
images (the result stays consistent, but the work is done twice).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import logging
import sys
import time

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems

from models import registry
from pipelines.options import (
    add_carry_args,
    add_corpus_args,
    add_model_args,
    corpus_main,
    decode_options,
    make_handler,
    missed_targets_note,
    rate_target,
    run_outcome,
    run_pipeline,
    stage_parser,
    start_model_stage,
)
from transforms import archive, manifest, metadata, reasons, records
from transforms.apply_models import ProcessImages, WriteOutputs
from transforms.archive import ARCHIVED, INCOMPLETE, OLDER
from transforms.progress import ReportProgress
from transforms.read_images import DEAD_LETTER, DecodeImages, MatchFiles

LOG = logging.getLogger(__name__)
DUPLICATE = "duplicate"
TO_HASH = "to_hash"  # inputs whose listing entry is new or changed


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser(
        "latentpress archive",
        "Denoise and compress the images an archive does not hold yet.",
    )
    add_corpus_args(parser, output=False)
    parser.add_argument(
        "--archive", required=True, help="Archive directory (local or gs://) to add to."
    )
    add_model_args(parser)
    add_carry_args(parser)
    parser.add_argument(
        "--reprocess-older-models",
        action="store_true",
        help="Also redo images the archive holds from other models than the ones given, "
        "or in an older code-file format.",
    )
    parser.add_argument(
        "--rehash",
        action="store_true",
        help="Read and hash every input, not only those whose listing entry (size, "
        "modification time) is new or changed since a run read it (e.g. weekly).",
    )
    parser.add_argument(
        "--keep-runs",
        type=int,
        default=30,
        help="Run folders (summaries, dead letters) to keep; older ones are deleted.",
    )
    parser.add_argument(
        "--temp-max-age-hours",
        type=float,
        default=24.0,
        help="Temporary files left by killed runs are deleted once this old.",
    )
    return parser


class HashFiles(beam.DoFn):
    """MatchedFile -> (content sha256, MatchedFile), or a dead letter if it cannot be read."""

    def process(self, matched):
        try:
            digest = hashlib.sha256()
            with FileSystems.open(matched.path) as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        except Exception as e:  # noqa: BLE001 - any I/O failure is this input's dead letter
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER,
                records.dead_letter(
                    matched.path, "hash", reasons.UNREADABLE, f"{type(e).__name__}: {e}"
                ),
            )
            return
        yield digest.hexdigest(), matched


def _reuse_listed_hash(item):
    """(path, {"file": [...], "listed": [...]}) -> (sha, file) when the listing is unchanged,
    else the file, tagged to be read and hashed."""
    _, joined = item
    for matched in joined["file"]:
        listed = max(joined["listed"], key=lambda r: r["run_id"], default=None)
        if archive.unchanged_since_listed(listed, matched):
            yield listed["sha256"], matched
        else:
            yield beam.pvalue.TaggedOutput(TO_HASH, matched)


def _triage_content(item):
    """(sha, {"files": [...], "held": [state]}) -> what to do with this content's inputs.

    Inputs whose content the archive holds in full are counted as archived; of the others one
    per content is processed and the rest are counted as duplicates.  Content the archive
    holds but this run did not list yields nothing.
    """
    sha, joined = item
    files = sorted(joined["files"], key=lambda f: f.path)
    if not files:
        return
    state = next(iter(joined["held"]), None)
    if state == ARCHIVED:
        for matched in files:
            yield beam.pvalue.TaggedOutput(ARCHIVED, matched.path)
        return
    first, *others = files
    for other in others:
        yield beam.pvalue.TaggedOutput(DUPLICATE, {"path": other.path, "same_as": first.path})
    if state in (OLDER, INCOMPLETE):
        yield beam.pvalue.TaggedOutput(state, sha)
    yield first


class ArchiveHoldings(beam.PTransform):
    """PBegin -> (content sha256, archive_state) for every content the archive's manifest holds.

    Read by the workers and joined by key with the run's inputs: no worker holds the whole
    manifest (100M records would not fit as a side input; see benchmarks/archive_scale.py).
    """

    def __init__(
        self,
        archive_dir,
        mode,
        codec_identity,
        denoiser_fingerprint,
        reprocess_older,
        keep_cleaned=False,
    ):
        super().__init__()
        self._pattern = archive.manifest_pattern(archive_dir)
        self._state = (mode, codec_identity, denoiser_fingerprint, reprocess_older, keep_cleaned)

    def expand(self, pbegin):
        state = self._state
        return (
            pbegin
            | "ManifestPattern" >> beam.Create([self._pattern])
            | "MatchManifest" >> fileio.MatchAll(fileio.EmptyMatchTreatment.ALLOW)
            | "OpenManifest" >> fileio.ReadMatches()
            | "ManifestRecords" >> beam.FlatMap(lambda f: records.parse_json_lines(f.read_utf8()))
            # Only the fields archive_state reads go through the shuffle (a tenth of a record).
            | "KeyByContent" >> beam.Map(lambda r: (r["content_sha256"], archive.held_outputs(r)))
            | "RecordsPerContent" >> beam.CombinePerKey(beam.combiners.ToListCombineFn())
            | "Classify"
            >> beam.MapTuple(lambda sha, held: (sha, archive.archive_state(held, *state)))
        )


class HashInputs(beam.PTransform):
    """MatchedFile -> {"hashed": (sha256, file), TO_HASH: files read to hash, DEAD_LETTER}.

    Change detection from the listing: a path whose size and modification time are as when a
    run last read it keeps its content hash; only new or changed paths are read (all of them
    with ``rehash``), and their hashes are appended to the listing.  A keyed join on the path,
    so no worker holds the whole listing.
    """

    def __init__(self, archive_dir: str, run_id: str, rehash: bool):
        super().__init__()
        self._archive_dir = archive_dir
        self._run_id = run_id
        self._rehash = rehash

    def expand(self, files):
        run_id = self._run_id
        listed = (
            files.pipeline
            | "ListingPattern"
            >> beam.Create([] if self._rehash else [archive.listing_pattern(self._archive_dir)])
            | "MatchListing" >> fileio.MatchAll(fileio.EmptyMatchTreatment.ALLOW)
            | "OpenListing" >> fileio.ReadMatches()
            | "ListingRecords" >> beam.FlatMap(lambda f: records.parse_json_lines(f.read_utf8()))
            | "KeyListingByPath" >> beam.Map(lambda r: (r["path"], r))
        )
        triage_listing = (
            {"file": files | "KeyFileByPath" >> beam.Map(lambda f: (f.path, f)), "listed": listed}
            | "JoinListing" >> beam.CoGroupByKey()
            | "ReuseListedHashes"
            >> beam.ParDo(_reuse_listed_hash).with_outputs(TO_HASH, main="listed")
        )
        hashed = triage_listing[TO_HASH] | "Hash" >> beam.ParDo(HashFiles()).with_outputs(
            DEAD_LETTER, main="hashed"
        )
        _ = (
            hashed.hashed
            | "ToListing" >> beam.MapTuple(lambda sha, f: archive.listing_record(sha, f, run_id))
            | "AppendToListing"
            >> records.WriteJsonLines(records.join(self._archive_dir, archive.LISTING_DIR), run_id)
        )
        return {
            "hashed": (triage_listing.listed, hashed.hashed) | "AllHashes" >> beam.Flatten(),
            TO_HASH: triage_listing[TO_HASH],
            DEAD_LETTER: hashed[DEAD_LETTER],
        }


class WriteArchiveOutputs(WriteOutputs):
    """Names outputs by model and content instead of by input path."""

    STAGE = "archive"

    def output_name(self, image, directory: str, suffix: str) -> str:
        codes = directory == manifest.CODES_DIR
        model = (
            registry.codec_identity(self.codec_fingerprint, self.codec_setting)
            if codes
            else self.denoiser_fingerprint
        )
        # a frame of a multi-frame source: its own name beside the content's
        frame = metadata.frame_suffix(image.carried)
        return archive.content_name(model, image.sha256) + frame + suffix


def _summarize(counts: dict, totals: dict, run_id: str) -> dict:
    return {
        "run_id": run_id,
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "matched": counts.get("matched", 0),
        # inputs read to hash them (new or changed in the listing, or all with --rehash)
        "hashed": counts.get("hashed", 0),
        "already_archived": counts.get(ARCHIVED, 0),
        "duplicates": counts.get(DUPLICATE, 0),
        # inputs (files) processed; a file of N frames made N images, N - 1 of them here
        "processed": totals["written"] - totals["frames_beyond_first"],
        "frames_beyond_first": totals["frames_beyond_first"],
        "reprocessed_from_older_models": counts.get(OLDER, 0),
        # Held before without an output this mode makes (e.g. denoised only, now --mode both).
        "completed_missing_outputs": counts.get(INCOMPLETE, 0),
        "bytes_in": totals["bytes_in"],
        "code_bytes": totals["code_bytes"],
        "clean_bytes": totals["clean_bytes"],
        "mean_bpp": totals["mean_bpp"],
        "mean_psnr_db": totals["mean_psnr_db"],
        "targets_missed": totals["targets_missed"],
        # Against everything the run stored, cleaned PNGs included: negative when they
        # outweigh what the codes save (mode both or denoise store a PNG per image).
        "bytes_saved": totals["bytes_in"] - totals["code_bytes"] - totals["clean_bytes"],
    }


class TriageInputs(beam.PTransform):
    """{"files": (sha256, MatchedFile) of the run, "held": (sha256, archive_state)} -> the
    files to process (main output) and, tagged, the contents ARCHIVED, DUPLICATE (a second
    file of a content this run processes), OLDER and INCOMPLETE (held, redone)."""

    def expand(self, inputs):
        return (
            inputs
            | "JoinWithArchive" >> beam.CoGroupByKey()
            | "TriageByContent"
            >> beam.ParDo(_triage_content).with_outputs(
                ARCHIVED, DUPLICATE, OLDER, INCOMPLETE, main="files"
            )
        )


class RecordArchiveRun(beam.PTransform):
    """Commits a run: its ok records appended to the archive's manifest, its failures as dead
    letters and ``summary.json`` in the run's folder (whose PCollection it returns).

    Input: {"written": manifest records, "failures": dead-letter records of the steps before,
    "unmatched": patterns that matched nothing, "counted": one event name per triaged input}.
    """

    def __init__(self, archive_dir: str, run_id: str, config: dict):
        super().__init__()
        self._archive_dir = archive_dir
        self._run_id = run_id
        self._config = config

    def expand(self, inputs):
        written = inputs["written"]
        ok = written | "OkOnly" >> beam.Filter(lambda r: r["status"] == manifest.OK)
        _ = ok | "AppendToManifest" >> records.WriteJsonLines(
            records.join(self._archive_dir, archive.MANIFEST_DIR), self._run_id
        )
        failed = written | "Failures" >> manifest.DeadLettersOfFailed("archive")
        return {
            "failures": (inputs["failures"], failed) | "AllFailures" >> beam.Flatten(),
            "unmatched": inputs["unmatched"],
            "counted": inputs["counted"],
            "totals": ok | "Totals" >> beam.CombineGlobally(manifest.SummarizeManifest()),
        } | "RunRecords" >> records.WriteRunRecords(
            archive.run_dir(self._archive_dir, self._run_id),
            functools.partial(_summarize, run_id=self._run_id),
            self._config,
        )


def _count(pcollection, event: str):
    return pcollection | f"Count_{event}" >> beam.Map(lambda _: event)


def _tidy_and_store_models(args, codec_fingerprint: str, denoiser_fingerprint: str) -> None:
    """Before a run: retention (old run folders, stale temporary files), and every model that
    writes into the archive stored there, so its codes stay decodable from the archive alone."""
    records.check_output_folder(args.archive)
    pruned = archive.prune(args.archive, args.keep_runs, args.temp_max_age_hours)
    if any(pruned.values()):
        LOG.info(
            "retention: deleted %(runs)d old run folders, %(temporary_files)d temp files", pruned
        )
    for name, fingerprint in (
        (args.model, codec_fingerprint),
        (args.denoiser, denoiser_fingerprint),
    ):
        if fingerprint:
            archive.store_model(args.archive, registry.resolve(name), fingerprint)


def _run_config(args, codec_fingerprint: str, denoiser_fingerprint: str) -> dict:
    return {
        "inputs": args.input,
        "archive": args.archive,
        "mode": args.mode,
        "model": args.model,
        "quality": args.quality,
        "denoiser": args.denoiser,
        "model_fingerprint": codec_fingerprint,
        "denoiser_fingerprint": denoiser_fingerprint,
        "reprocess_older_models": args.reprocess_older_models,
        "rehash": args.rehash,
    }


def run(argv=None, save_main_session=True, test_pipeline=None):
    args, options, codec_fingerprint, denoiser_fingerprint = start_model_stage(
        build_parser(), argv, save_main_session
    )
    codec_setting = registry.codec_setting(args.quality, rate_target(args), args.refine_steps)
    run_id = archive.new_run_id()
    _tidy_and_store_models(args, codec_fingerprint, denoiser_fingerprint)
    LOG.info("archive run %s into %s", run_id, args.archive)

    pipeline = test_pipeline or beam.Pipeline(options=options)
    known = pipeline | "ReadHoldings" >> ArchiveHoldings(
        args.archive,
        args.mode,
        registry.codec_identity(codec_fingerprint, codec_setting),
        denoiser_fingerprint,
        args.reprocess_older_models,
        args.keep_cleaned,
    )
    matched = pipeline | "MatchFiles" >> MatchFiles(args.input)
    hashed = matched["files"] | "HashInputs" >> HashInputs(args.archive, run_id, args.rehash)
    triaged = {"files": hashed["hashed"], "held": known} | "Triage" >> TriageInputs()
    # New files are read a second time here rather than carrying their bytes through the
    # JoinWithArchive shuffle; files already archived are read once, to hash them.
    decoded = triaged.files | "Decode" >> beam.ParDo(
        DecodeImages(args.max_pixels, min_side=1, options=decode_options(args))
    ).with_outputs(DEAD_LETTER, main="images")
    writer = WriteArchiveOutputs(
        args.archive, args.mode, codec_fingerprint, denoiser_fingerprint, run_id, codec_setting
    )
    # No total: what is new is known only after the join with the archive.
    progress = ReportProgress(
        "archive",
        None,
        manifest.is_failed,
        args.progress_every,
        unit="new images done",
    )
    written = decoded.images | "ProcessImages" >> ProcessImages(
        make_handler(args), writer, progress
    )
    counted = (
        _count(matched["files"], "matched"),
        _count(hashed[TO_HASH], "hashed"),
        *(_count(triaged[state], state) for state in (ARCHIVED, DUPLICATE, OLDER, INCOMPLETE)),
    ) | "AllCounted" >> beam.Flatten()
    _ = {
        "written": written,
        "failures": (hashed[DEAD_LETTER], decoded[DEAD_LETTER]) | "ReadFailures" >> beam.Flatten(),
        "unmatched": matched["unmatched"],
        "counted": counted,
    } | "RecordRun" >> RecordArchiveRun(
        args.archive, run_id, _run_config(args, codec_fingerprint, denoiser_fingerprint)
    )

    result, finished = run_pipeline(pipeline, options)
    if not finished:
        return result  # a launched job: the caller may inspect it
    run_folder = archive.run_dir(args.archive, run_id)
    summary_path = records.join(run_folder, records.SUMMARY_FILE)
    summary = records.read_json(summary_path)
    print(
        f"archive run {run_id}: {summary['matched']} matched, {summary['already_archived']} "
        f"already archived, {summary['duplicates']} duplicates, {summary['processed']} "
        f"processed, {summary['failed']} failed; summary {summary_path}"
    )
    if summary["targets_missed"]:
        print(missed_targets_note(summary["targets_missed"], args.model))
    done = summary["matched"] - summary["failed"]
    dead_letters = records.join(run_folder, records.DEAD_LETTER_PREFIX + "-*.jsonl")
    return run_outcome("archive", summary, done, dead_letters, args.strict)


def main(argv=None) -> int:
    return corpus_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
