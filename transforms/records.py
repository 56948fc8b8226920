"""Run records: the dead-letter record and summary-file helpers every stage shares.

A dead-letter record is one JSON line ``{"path", "stage", "reason", "detail"}`` in files named
``dead_letter*`` under the stage's output DIR.  ``reason`` is one of the stable strings in
``transforms.decode`` so summaries can count by it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import uuid
from typing import BinaryIO

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms import reasons

DEAD_LETTER_PREFIX = "dead_letter"
SUMMARY_FILE = "summary.json"
FAILED_PREFIX = "failed:"  # summary counter prefix, followed by the reason


def dead_letter(path: str, stage: str, reason: str, detail: str) -> dict:
    return {"path": path, "stage": stage, "reason": reason, "detail": detail}


def unmatched_dead_letter(unmatched: dict) -> dict:
    """The dead letter of a pattern that matched no file."""
    return dead_letter(unmatched["pattern"], "match", reasons.NO_MATCH, unmatched["detail"])


def failed_by_reason(counts: dict) -> dict:
    """{reason: count} from summary counters named FAILED_PREFIX + reason."""
    return dict(
        sorted(
            (key[len(FAILED_PREFIX) :], value)
            for key, value in counts.items()
            if key.startswith(FAILED_PREFIX)
        )
    )


class WriteJsonLines(beam.PTransform):
    """dicts -> ``DIR/<prefix>-SSSSS-of-NNNNN.jsonl`` (or one ``DIR/<prefix>.jsonl`` with
    ``single_file``, which a re-run replaces), one sorted-key JSON object a line, UTF-8 as
    is (a name with an é stays greppable).  ``skip_if_empty``: no file for no rows (dead
    letters of a clean run)."""

    def __init__(
        self, directory: str, prefix: str, single_file: bool = False, skip_if_empty: bool = False
    ):
        super().__init__()
        self._path = join(directory, prefix)
        self._single_file = single_file
        self._skip_if_empty = skip_if_empty

    def expand(self, rows):
        shards = {"num_shards": 1, "shard_name_template": ""} if self._single_file else {}
        return (
            rows
            | "ToJson" >> beam.Map(lambda row: json.dumps(row, sort_keys=True, ensure_ascii=False))
            | "Write"
            >> beam.io.WriteToText(
                self._path, file_name_suffix=".jsonl", skip_if_empty=self._skip_if_empty, **shards
            )
        )


def _run_summary(counts, unmatched, totals, summarize, config) -> dict:
    failed = failed_by_reason(counts)
    return {
        **summarize(counts, totals),
        "failed": sum(failed.values()),
        "failed_by_reason": failed,
        "patterns_unmatched": sorted(u["pattern"] for u in unmatched),
        "config": config,
    }


class WriteRunRecords(beam.PTransform):
    """The records every stage's run ends with: ``DIR/dead_letter*.jsonl`` and ``DIR/summary.json``.

    Input, a dict of PCollections:

    - ``failures``: dead-letter records (``dead_letter``) of the inputs that failed;
    - ``unmatched``: ``{"pattern", "detail"}`` of the input patterns that matched no file;
    - ``counted`` (optional): counter names, one element per event (``"matched"`` per file);
    - ``totals`` (optional): one dict, e.g. ``manifest.SummarizeManifest``'s.

    ``summarize(counts, totals)`` gives the stage's own fields (``counts`` maps each counter
    name to its count); every summary then gets the failures (``failed`` and
    ``failed_by_reason``), the ``patterns_unmatched`` and the run's ``config``.  Returns the
    summary PCollection (one dict).
    """

    def __init__(self, directory: str, summarize, config: dict):
        super().__init__()
        self._directory = directory
        self._summarize = summarize
        self._config = config

    def expand(self, inputs):
        failures, unmatched = inputs["failures"], inputs["unmatched"]
        _ = (
            (failures, unmatched | "UnmatchedToDeadLetter" >> beam.Map(unmatched_dead_letter))
            | "AllDeadLetters" >> beam.Flatten()
            | "WriteDeadLetters"
            >> WriteJsonLines(self._directory, DEAD_LETTER_PREFIX, skip_if_empty=True)
        )
        counted = [failures | "CountFailed" >> beam.Map(lambda r: FAILED_PREFIX + r["reason"])]
        if "counted" in inputs:
            counted.append(inputs["counted"])
        counts = (
            counted
            | "AllCounted" >> beam.Flatten()
            | "Count" >> beam.combiners.Count.PerElement()
            | "CountsToDict" >> beam.combiners.ToDict()
        )
        totals = beam.pvalue.AsSingleton(inputs["totals"]) if "totals" in inputs else None
        summary = counts | "Summarize" >> beam.Map(
            _run_summary,
            beam.pvalue.AsList(unmatched),
            totals,
            self._summarize,
            self._config,
        )
        path = join(self._directory, SUMMARY_FILE)
        _ = summary | "WriteSummary" >> beam.Map(lambda s: write_json(path, s))
        return summary


def join(directory: str, *names: str) -> str:
    return FileSystems.join(directory.rstrip("/"), *names)


def write_atomically(path: str, data: bytes) -> None:
    """Writes ``data`` under a temporary name and renames it, so ``path`` is never partial."""
    write_file_atomically(path, io.BytesIO(data))


def write_file_atomically(path: str, source: BinaryIO) -> None:
    """``write_atomically`` of what ``source`` reads, copied in chunks (a file of any size)."""
    temporary = f"{path}.tmp-{uuid.uuid4().hex}"
    with FileSystems.create(temporary) as handle:
        shutil.copyfileobj(source, handle, 8 << 20)
    if "://" not in path:
        os.replace(temporary, path)  # one rename: a reader sees the old file or the new one
    else:
        FileSystems.rename([temporary], [path])  # an object store's copy replaces the target


def write_json(path: str, value: object) -> None:
    write_atomically(
        path, (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
    )


def read_json(path: str) -> object:
    with FileSystems.open(path) as handle:
        return json.loads(handle.read())


def parse_json_lines(text: str | bytes) -> list[dict]:
    """The records of one JSON-lines file's text (blank lines skipped)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_json_lines(pattern: str) -> list[dict]:
    """All JSON-lines records in the files matching ``pattern`` (e.g. ``DIR/dead_letter*``)."""
    records = []
    for match in FileSystems.match([pattern])[0].metadata_list:
        with FileSystems.open(match.path) as handle:
            records.extend(parse_json_lines(handle.read()))
    return records


def local_copy(directory: str) -> str:
    """``directory`` itself if local, else a local copy of everything under it.

    TensorFlow's own file I/O cannot reach every Beam filesystem (nor a storage emulator), so
    what TensorFlow must read is copied down through Beam's filesystems first.
    """
    if "://" not in directory:
        return directory
    local = tempfile.mkdtemp(prefix="latentpress-stage-")
    prefix = directory.rstrip("/") + "/"
    for match in FileSystems.match([prefix + "**"])[0].metadata_list:
        target = os.path.join(local, match.path[len(prefix) :])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with FileSystems.open(match.path) as source, open(target, "wb") as sink:
            sink.write(source.read())
    return local


def refuse_to_overwrite(target: str, overwrite: bool, inputs: list[str]) -> str:
    """Why ``target`` must not be written ("" if it may): the one overwrite rule of the
    file-by-file commands.  An existing file is kept unless ``overwrite``; an input never is."""
    if not FileSystems.exists(target):
        return ""
    if "://" not in target and any(
        os.path.exists(i) and os.path.samefile(target, i) for i in inputs
    ):
        return f"{target} is one of the inputs; it is never overwritten"
    if not overwrite:
        return f"{target} exists (pass --overwrite to replace it)"
    return ""


def check_output_folder(output: str) -> None:
    """Creates a local output folder and proves it writable before a pipeline starts, so an
    unwritable path or one under a regular file is one OSError naming it (the command line
    prints it as one line), not a worker's traceback at the end of the run."""
    if "://" in output:
        return  # an object store has no folders to create; its permissions show on write
    os.makedirs(output, exist_ok=True)
    with tempfile.TemporaryFile(dir=output):
        pass


def clear_earlier_run(output: str, patterns: list[str], overwrite: bool) -> None:
    """The Beam stages' overwrite rule: an output folder holding an earlier run's files
    (``patterns`` under ``output``) is refused, or with ``overwrite`` cleared of exactly those
    files first, so what is there afterwards is one run's, described by its manifest."""
    check_output_folder(output)
    old = [
        m.path
        for pattern in patterns
        for m in FileSystems.match([join(output, pattern)])[0].metadata_list
    ]
    if old and not overwrite:
        raise FileExistsError(
            f"{output} already holds {len(old)} files of an earlier run; "
            "choose another --output or pass --overwrite to replace them"
        )
    if old:
        FileSystems.delete(old)
