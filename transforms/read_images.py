"""``ReadImages``: glob patterns (local or gs://) to decoded RGB images plus dead-letter records.

Each matched file is read through Beam's filesystems, so the same transform works on local
disk, ``gs://`` and anything else Beam mounts.  A file's *key* is its path relative to the
directory part of the pattern that matched it (the "matched root"); later stages use the key
as the image's identity and as its relative output path.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import re
from dataclasses import dataclass, field

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms import decode, metadata, reasons
from transforms.records import dead_letter

LOG = logging.getLogger(__name__)
DEAD_LETTER = "dead_letter"
UNMATCHED = "unmatched"
PROGRESS_EVERY = 25  # log a count every this many decoded images per worker

_WILDCARD = re.compile(r"[*?\[]")


def matched_root(pattern: str) -> str:
    """The directory part of ``pattern`` before its first wildcard, ending in '/'.

    ``data/**/*.jpg`` -> ``data/``; ``gs://b/x/a.png`` -> ``gs://b/x/``.
    """
    wildcard = _WILDCARD.search(pattern)
    fixed = pattern[: wildcard.start()] if wildcard else pattern
    return fixed[: fixed.rfind("/") + 1] if "/" in fixed else ""


def relative_key(path: str, root: str) -> str:
    return path[len(root) :] if root and path.startswith(root) else path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class MatchedFile:
    path: str
    key: str  # path relative to the matched root
    root: str
    size_bytes: int
    mtime: float = 0.0  # the listing's last-modified time (seconds), 0 when unknown


@dataclass
class DecodedImage:
    path: str
    key: str
    root: str
    pixels: np.ndarray  # (H, W, 3) uint8
    size_bytes: int
    sha256: str  # of the file's bytes
    mode: str = "RGB"  # the source's Pillow mode, e.g. "L" for grayscale
    # what travels with the pixels (EXIF, ICC, alpha, frame, ...: transforms.metadata)
    carried: metadata.Carried = field(default_factory=metadata.Carried)


def _unlisted_local_entries(pattern: str, seen: set[str]) -> list[str]:
    if "://" in pattern:
        return []
    return sorted(
        path
        for path in glob.glob(pattern, recursive=True)
        if path not in seen and os.path.lexists(path) and not os.path.isdir(path)
    )


class MatchPatterns(beam.DoFn):
    """Pattern -> MatchedFile per file; a pattern matching nothing goes to ``UNMATCHED``."""

    def process(self, pattern: str):
        root = matched_root(pattern)
        try:
            metadata = FileSystems.match([pattern])[0].metadata_list
        except Exception as e:  # noqa: BLE001 - a bad pattern must not stop the run
            yield beam.pvalue.TaggedOutput(UNMATCHED, {"pattern": pattern, "detail": str(e)})
            return
        if not metadata and not _unlisted_local_entries(pattern, set()):
            yield beam.pvalue.TaggedOutput(
                UNMATCHED, {"pattern": pattern, "detail": "pattern matched no files"}
            )
            return
        for item in metadata:
            yield MatchedFile(
                item.path,
                relative_key(item.path, root),
                root,
                item.size_in_bytes,
                item.last_updated_in_seconds,
            )
        # Beam's local listing skips entries it cannot stat (a dangling symlink, say); list
        # them too so that reading fails loudly as an unreadable path instead.
        seen = {item.path for item in metadata}
        for path in _unlisted_local_entries(pattern, seen):
            yield MatchedFile(path, relative_key(path, root), root, -1)


class DecodeImages(beam.DoFn):
    """Reads and decodes each file, one image per frame (key ``NAME.frame-N`` for a file of
    several); failures become dead-letter records with their reason."""

    def __init__(
        self, max_pixels: int, min_side: int, options: decode.DecodeOptions = decode.PIXELS_ONLY
    ):
        self._max_pixels = max_pixels
        self._min_side = min_side
        self._options = options
        self._decoded = Metrics.counter("read_images", "decoded")
        self._failed = Metrics.counter("read_images", "failed")
        self._count = 0

    def _fail(self, matched: MatchedFile, reason: str, detail: str):
        self._failed.inc()
        return beam.pvalue.TaggedOutput(
            DEAD_LETTER, dead_letter(matched.path, "read", reason, detail)
        )

    def process(self, matched: MatchedFile):
        try:
            with FileSystems.open(matched.path) as handle:
                data = handle.read()
        except Exception as e:  # noqa: BLE001 - any I/O failure is this input's dead letter
            yield self._fail(matched, reasons.UNREADABLE, f"{type(e).__name__}: {e}")
            return
        sha256 = hashlib.sha256(data).hexdigest()
        try:
            for frame in decode.decode_frames(data, self._max_pixels, self._options):
                yield from self._checked(matched, frame, len(data), sha256)
        except decode.DecodeError as e:  # frames already yielded stay; the file is counted
            yield self._fail(matched, e.reason, e.detail)

    def _checked(self, matched: MatchedFile, frame: decode.DecodedFrame, size: int, sha256: str):
        key = metadata.frame_key(matched.key, frame.carried)
        height, width = frame.pixels.shape[:2]
        if min(height, width) < self._min_side:
            detail = f"{width}x{height} is smaller than {self._min_side}"
            yield self._fail(matched, reasons.TOO_SMALL, detail)
            return
        self._decoded.inc()
        self._count += 1
        if self._count % PROGRESS_EVERY == 0:
            LOG.info("decoded %d images on this worker", self._count)
        yield DecodedImage(
            matched.path, key, matched.root, frame.pixels, size, sha256, frame.mode, frame.carried
        )


def _first_by_root(path_and_files):
    path, files = path_and_files
    return min(files, key=lambda f: f.root)


class MatchFiles(beam.PTransform):
    """Patterns -> {"files": MatchedFile, "unmatched": dict}; a file matched twice comes once."""

    def __init__(self, patterns: list[str]):
        super().__init__()
        self._patterns = list(patterns)

    def expand(self, pbegin):
        matches = (
            pbegin
            | "Patterns" >> beam.Create(self._patterns)
            | "Match" >> beam.ParDo(MatchPatterns()).with_outputs(UNMATCHED, main="files")
        )
        # Grouping by path removes files matched twice and spreads the reads over workers.
        files = (
            matches.files
            | "KeyByPath" >> beam.Map(lambda f: (f.path, f))
            | "GroupByPath" >> beam.GroupByKey()
            | "OnePerPath" >> beam.Map(_first_by_root)
        )
        return {"files": files, "unmatched": matches[UNMATCHED]}


class ReadImages(beam.PTransform):
    """Patterns -> {"images": DecodedImage, "dead_letter": dict, "matched": MatchedFile,
    "unmatched": dict}.

    A file matched by several patterns is read once.  Images smaller than ``min_side`` on
    either side are dead letters, so every matched file is either decoded or failed.
    """

    def __init__(
        self,
        patterns: list[str],
        max_pixels: int = decode.DEFAULT_MAX_PIXELS,
        min_side: int = 1,
        options: decode.DecodeOptions = decode.PIXELS_ONLY,
    ):
        super().__init__()
        self._patterns = list(patterns)
        self._max_pixels = max_pixels
        self._min_side = min_side
        self._options = options

    def expand(self, pbegin):
        matched = pbegin | "MatchFiles" >> MatchFiles(self._patterns)
        decoded = matched["files"] | "Decode" >> beam.ParDo(
            DecodeImages(self._max_pixels, self._min_side, self._options)
        ).with_outputs(DEAD_LETTER, main="images")
        return {
            "images": decoded.images,
            "dead_letter": decoded[DEAD_LETTER],
            "matched": matched["files"],
            "unmatched": matched["unmatched"],
        }
