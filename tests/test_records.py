"""transforms/records.py: the run-record helpers every stage writes through."""

from __future__ import annotations

import threading

from apache_beam.io.filesystems import FileSystems

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
