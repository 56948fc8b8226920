"""Progress of a corpus run: periodic counts in the log while it runs.

A Beam pipeline gives its driver no counts until it ends (the DirectRunner runs it inside
``run()``; Dataflow shows them in its console), so the counting happens where the work is: a
DoFn on each stage's per-input outcome records, fused with the step that makes them, logs
``done of total, failed, rate`` every ``--progress-every`` seconds and at each bundle's end.
In-process runs have one worker, so its counts are the run's; with several workers
(multi-processing, Dataflow) each worker reports its own share, and says so.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

LOG = logging.getLogger(__name__)
DEFAULT_EVERY_SECONDS = 10.0


def count_inputs(patterns: list[str]) -> int | None:
    """How many files the patterns match (a driver-side listing), or None if it fails."""
    try:
        return sum(len(m.metadata_list) for m in FileSystems.match(list(patterns)))
    except Exception:  # an unreachable bucket is the pipeline's error to report, not ours
        return None


class ReportProgress(beam.DoFn):
    """Passes outcome records through, counting them (``is_failure`` tells failed ones), and
    logs the counts.  Chained right after the step that does the work, so it runs fused with
    it: behind a Flatten or a shuffle it would only see the records once all were done."""

    def __init__(
        self,
        stage: str,
        total: int | None,
        is_failure: Callable[[dict], bool],
        every_seconds: float = DEFAULT_EVERY_SECONDS,
        unit: str = "inputs",
    ):
        self._stage = stage
        self._total = total
        self._is_failure = is_failure
        self._every = every_seconds
        self._unit = unit

    def setup(self):
        self._done = self._failed = self._reported = 0
        self._started = self._last = time.monotonic()

    def process(self, record):
        self._done += 1
        self._failed += bool(self._is_failure(record))
        now = time.monotonic()
        if self._done == 1 or now - self._last >= self._every:
            self._report(now)
        yield record

    def finish_bundle(self):
        if self._done != self._reported:
            self._report(time.monotonic())

    def _report(self, now: float) -> None:
        self._last, self._reported = now, self._done
        of = f" of {self._total}" if self._total is not None else ""
        rate = self._done / max(now - self._started, 1e-9)
        LOG.info(
            "%s: %d%s %s, %d failed, %.2f/s (worker %d)",
            self._stage,
            self._done,
            of,
            self._unit,
            self._failed,
            rate,
            os.getpid(),
        )
