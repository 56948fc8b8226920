"""transforms/records.py: the run-record helpers every stage writes through."""

from __future__ import annotations

import threading

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms import records


def test_write_atomically_replaces_without_a_moment_of_no_file(tmp_path, monkeypatch):
    """A reader polling the target while it is replaced always finds a whole file, old or
    new: one rename, never delete-then-rename."""
    target = tmp_path / "summary.json"
    old, new = b"old" * 1000, b"new" * 1000
    target.write_bytes(old)

    def no_delete(paths):
        raise AssertionError(f"deleted {paths} before replacing it")

    monkeypatch.setattr(FileSystems, "delete", no_delete)
    seen, done = set(), threading.Event()

    def poll():
        while not done.is_set():
            try:
                seen.add(target.read_bytes())
            except FileNotFoundError:
                seen.add(b"missing")

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        for i in range(200):
            records.write_atomically(str(target), new if i % 2 else old)
    finally:
        done.set()
        reader.join()
    assert seen <= {old, new}
    assert target.read_bytes() == new and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_an_output_folder_is_created_and_proved_writable(tmp_path):
    records.check_output_folder(str(tmp_path / "a" / "b"))
    assert (tmp_path / "a" / "b").is_dir() and not list((tmp_path / "a" / "b").iterdir())


def _summarize_counts(counts, totals):
    return {"matched": counts.get("matched", 0), "bytes": totals["bytes"]}


def test_run_records_write_dead_letters_and_one_summary_counting_failures_by_reason(tmp_path):
    failures = [
        records.dead_letter("a.png", "apply", "decode_error", "truncated"),
        records.dead_letter("b.png", "apply", "decode_error", "truncated"),
        records.dead_letter("c.png", "apply", "too_many_pixels", "1e9 pixels"),
    ]
    unmatched = [{"pattern": "nothing/*.png", "detail": "no file matched"}]
    with TestPipeline() as pipeline:
        summary = {
            "failures": pipeline | "Failures" >> beam.Create(failures),
            "unmatched": pipeline | "Unmatched" >> beam.Create(unmatched),
            "counted": pipeline | "Counted" >> beam.Create(["matched"] * 5),
            "totals": pipeline | "Totals" >> beam.Create([{"bytes": 123}]),
        } | records.WriteRunRecords(str(tmp_path), _summarize_counts, {"mode": "both"})
        expected = {
            "matched": 5,
            "bytes": 123,
            "failed": 3,
            "failed_by_reason": {"decode_error": 2, "too_many_pixels": 1},
            "patterns_unmatched": ["nothing/*.png"],
            "config": {"mode": "both"},
        }
        assert_that(summary, equal_to([expected]))
    assert records.read_json(str(tmp_path / records.SUMMARY_FILE)) == expected
    letters = records.read_json_lines(str(tmp_path / "dead_letter*"))
    assert sorted(r["path"] for r in letters) == ["a.png", "b.png", "c.png", "nothing/*.png"]
    assert {r["reason"] for r in letters if r["path"] == "nothing/*.png"} == {"no_match"}


def test_a_clean_run_has_a_summary_of_zeros_and_no_dead_letter_file(tmp_path):
    with TestPipeline() as pipeline:
        _ = {
            "failures": pipeline | "Failures" >> beam.Create([]),
            "unmatched": pipeline | "Unmatched" >> beam.Create([]),
        } | records.WriteRunRecords(str(tmp_path), lambda counts, totals: {}, {})
    summary = records.read_json(str(tmp_path / records.SUMMARY_FILE))
    assert summary == {
        "failed": 0,
        "failed_by_reason": {},
        "patterns_unmatched": [],
        "config": {},
    }
    assert not list(tmp_path.glob("dead_letter*"))


def test_json_lines_skip_blank_lines_and_keep_unicode():
    text = '{"path": "é.png"}\n\n{"path": "b.png"}\n'
    assert records.parse_json_lines(text) == [{"path": "é.png"}, {"path": "b.png"}]
    assert records.parse_json_lines(text.encode()) == [{"path": "é.png"}, {"path": "b.png"}]
