"""The archive's layout: the one module that knows where things live in an archive DIR.

An archive (local or gs://) grows by one ``latentpress archive`` run at a time::

  DIR/codes/<codec fingerprint>/<sha[:2]>/<sha>.lpc        code file of the content <sha>
  DIR/clean/<denoiser fingerprint>/<sha[:2]>/<sha>.png     cleaned image of the content <sha>
  DIR/models/<fingerprint>/                                every model that wrote into DIR
  DIR/manifest/<run id>-SSSSS-of-NNNNN.jsonl               the records each run added
  DIR/runs/<run id>/summary.json, dead_letter-*.jsonl      what each run did
  DIR/listing/<run id>-SSSSS-of-NNNNN.jsonl                what the inputs' listing said when
                                                           a run read them (change detection)

Outputs are named by the SHA-256 of the input's bytes, so a renamed input is recognised, a
changed one is new, and a re-run after a crash rewrites the very same names (atomically)
instead of adding copies.  Manifest records use the schema of ``transforms.manifest``, with
``run_id`` set; only images processed successfully get one.  Run ids sort by start time.
"""

from __future__ import annotations

import logging
import os
import time
import uuid

from apache_beam.io.filesystems import FileSystems

from transforms.manifest import CLEAN_DIR, CODES_DIR
from transforms.records import join, write_atomically

LOG = logging.getLogger(__name__)
MODELS_DIR = "models"
MANIFEST_DIR = "manifest"
RUNS_DIR = "runs"
LISTING_DIR = "listing"
TEMP_MARKERS = (".tmp-", "beam-temp-")  # names only unfinished writes have


def new_run_id() -> str:
    """UTC start time, then a random suffix so two runs in one second never collide."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def content_name(fingerprint: str, sha256: str) -> str:
    """Relative name (without suffix) of an output: by model, then by content."""
    return f"{fingerprint}/{sha256[:2]}/{sha256}"


def run_dir(archive: str, run_id: str) -> str:
    return join(archive, RUNS_DIR, run_id)


def _match(pattern: str) -> list:
    try:
        return FileSystems.match([pattern])[0].metadata_list
    except Exception:  # noqa: BLE001 - Beam raises when nothing matches on some filesystems
        return []


def listing_pattern(archive: str) -> str:
    return join(archive, LISTING_DIR, "*.jsonl")


def listing_record(sha256: str, matched, run_id: str) -> dict:
    """What a run learnt about an input path by reading it: its listing entry and content."""
    return {
        "path": matched.path,
        "size": matched.size_bytes,
        "mtime": matched.mtime,
        "sha256": sha256,
        "run_id": run_id,
    }


def unchanged_since_listed(record: dict | None, matched) -> bool:
    """Whether the listing shows the file as it was when its content was hashed: same size
    and modification time (gs:// objects get a new one when rewritten), so its content hash
    can be reused without reading it.  A file with no known time is always read."""
    return (
        record is not None
        and matched.mtime > 0
        and record["size"] == matched.size_bytes
        and record["mtime"] == matched.mtime
    )


def manifest_pattern(archive: str) -> str:
    """The committed manifest files (not a running job's temporary ones)."""
    return join(archive, MANIFEST_DIR, "*.jsonl")


ARCHIVED = "archived"  # holds every output this run would make
OLDER = "older"  # holds them, but by older models or in an older code-file format, and
# --reprocess-older-models was given
INCOMPLETE = "incomplete"  # lacks an output this run's mode makes (e.g. denoised only)


HELD_FIELDS = (
    "model_fingerprint",
    "denoiser_fingerprint",
    "codec_setting",
    "code_format",
    "clean_bytes",
)


def held_outputs(record: dict) -> dict:
    """The part of a manifest record that ``archive_state`` needs: which models made what."""
    return {field: record.get(field) for field in HELD_FIELDS}


def archive_state(
    records: list[dict],
    mode: str,
    codec: str,
    denoiser: str,
    reprocess_older: bool,
    keep_cleaned: bool = False,
) -> str:
    """What the archive holds for one content hash, given all of its manifest records.

    Each output the mode makes must be held, from any earlier run: compress a code file,
    denoise a cleaned PNG, both a code file of the cleaned image (a record with both models;
    records before 2026-12-05 also held the PNG) and, with ``keep_cleaned``, the PNG too.
    ``codec`` is the codec's identity (its fingerprint and, for a variable-rate codec, its
    setting: see ``codec_identity``).  Without ``reprocess_older`` an output by any model
    counts (old codes stay decodable with the model that wrote them); with it, only one by
    exactly this run's models and setting, and a code in the format this latentpress writes
    (a newer format codes the same latents in fewer bytes; records without ``code_format``
    predate it and count as older).
    """
    from models.codefile import VERSION
    from models.registry import codec_identity

    def codec_of(record: dict) -> str:
        fingerprint = record["model_fingerprint"]
        return fingerprint and codec_identity(fingerprint, record.get("codec_setting", ""))

    def cleaned_png(record: dict, exact: bool) -> bool:
        made = record["denoiser_fingerprint"] and (record.get("clean_bytes") or 0) > 0
        return bool(made) and (not exact or record["denoiser_fingerprint"] == denoiser)

    def code(record: dict, exact: bool) -> bool:
        if not record["model_fingerprint"]:
            return False
        return not exact or (codec_of(record) == codec and record.get("code_format") == VERSION)

    def code_of_cleaned(record: dict, exact: bool) -> bool:
        by_denoiser = record["denoiser_fingerprint"] and (
            not exact or record["denoiser_fingerprint"] == denoiser
        )
        return code(record, exact) and bool(by_denoiser)

    wanted = {"compress": [code], "denoise": [cleaned_png], "both": [code_of_cleaned]}[mode]
    if mode == "both" and keep_cleaned:
        wanted.append(cleaned_png)
    if not all(any(held(r, False) for r in records) for held in wanted):
        return INCOMPLETE
    if reprocess_older and not all(any(held(r, True) for r in records) for held in wanted):
        return OLDER
    return ARCHIVED


def store_model(archive: str, model_dir: str, fingerprint: str) -> str:
    """Copies an exported model into ``DIR/models/<fingerprint>/`` unless it is already there.

    The model card is written last: a model directory with a card is complete.
    """
    from models.export import MODEL_CARD

    target = join(archive, MODELS_DIR, fingerprint)
    card = join(target, MODEL_CARD)
    if FileSystems.exists(card):
        return target
    for root, _, files in os.walk(model_dir):
        for name in sorted(files):
            if name == MODEL_CARD:
                continue
            relative = os.path.relpath(os.path.join(root, name), model_dir).replace(os.sep, "/")
            destination = join(target, relative)
            if "://" not in destination:
                os.makedirs(os.path.dirname(destination), exist_ok=True)
            with open(os.path.join(root, name), "rb") as source:
                write_atomically(destination, source.read())
    with open(os.path.join(model_dir, MODEL_CARD), "rb") as source:
        write_atomically(card, source.read())
    LOG.info("stored model %s in the archive", fingerprint)
    return target


def prune(archive: str, keep_runs: int, temp_max_age_hours: float) -> dict:
    """Retention: keeps the newest ``keep_runs`` run folders and deletes leftovers of killed
    runs (temporary files) older than ``temp_max_age_hours``.  Never touches codes, cleaned
    images, models or manifest records.  Returns what it deleted, by kind.
    """
    deleted = {"runs": 0, "temporary_files": 0}
    run_ids = sorted(
        {
            m.path[len(join(archive, RUNS_DIR)) + 1 :].split("/")[0]
            for m in _match(join(archive, RUNS_DIR, "**"))
        }
    )
    for run_id in run_ids[: max(0, len(run_ids) - keep_runs)]:
        paths = [m.path for m in _match(join(run_dir(archive, run_id), "**"))]
        if paths:
            FileSystems.delete(paths)
        if "://" not in archive and os.path.isdir(run_dir(archive, run_id)):
            _remove_empty_dirs(run_dir(archive, run_id))
        deleted["runs"] += 1
    cutoff = time.time() - temp_max_age_hours * 3600
    for folder in (CODES_DIR, CLEAN_DIR, MANIFEST_DIR, MODELS_DIR, RUNS_DIR, LISTING_DIR):
        # Local disk also keeps the temporary folders; judge their age before emptying them.
        stale_dirs = [] if "://" in archive else _temp_dirs(os.path.join(archive, folder), cutoff)
        stale = [
            m.path
            for m in _match(join(archive, folder, "**"))
            if any(marker in m.path for marker in TEMP_MARKERS)
            and (m.last_updated_in_seconds or 0) <= cutoff
        ]
        if stale:
            FileSystems.delete(stale)
            deleted["temporary_files"] += len(stale)
        for path in stale_dirs:
            if not os.listdir(path):
                os.rmdir(path)
    return deleted


def _temp_dirs(top: str, cutoff: float) -> list[str]:
    """Temporary folders under ``top`` last changed before ``cutoff``, deepest first."""
    found = []
    for root, dirs, _ in os.walk(top, topdown=False):
        for name in dirs:
            path = os.path.join(root, name)
            if any(marker in name for marker in TEMP_MARKERS) and os.path.getmtime(path) <= cutoff:
                found.append(path)
    return found


def _remove_empty_dirs(top: str) -> None:
    for root, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
        if not os.listdir(root):
            os.rmdir(root)
