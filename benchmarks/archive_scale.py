"""The nightly archive job against a large archive, simulated: what grows with the manifest.

    python -m benchmarks.archive_scale [--records 10000,100000,300000] [--project 100000000]

A real archive run over two sample photographs makes a real archive; its manifest is then
padded with synthetic records (real schema, random content hashes) up to each size, and the
next run over the same (unchanged) photographs is timed in a fresh process.  That run reads
the whole manifest, reduces it to one state per content hash and joins those with its inputs
by key, so on Dataflow no worker holds more than one key's records.

Reported per size: the run's wall time and peak memory (the local runner keeps its whole
shuffle in memory, so its memory does grow; Dataflow's shuffle does not), the manifest bytes
read per record, and the bytes each record puts through the join's shuffle (Beam's own coder).
For the design the join replaced, a side input of every archived hash, the memory that dict
takes per entry, measured here, and projected to ``--project`` records: what every worker
would have had to hold.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid

RUN_ONE = """
import json, resource, sys, time
from pipelines import archive
start = time.perf_counter()
archive.run(sys.argv[1:], save_main_session=False)
print(json.dumps({"seconds": time.perf_counter() - start,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _archive_run(inputs: list[str], store: str) -> dict:
    argv = [f"--input={p}" for p in inputs] + [
        f"--archive={store}",
        "--mode=compress",
        "--runner=FnApiRunner",
    ]
    done = subprocess.run(
        [sys.executable, "-c", RUN_ONE, *argv], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"archive run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def pad_manifest(store: str, total: int, real: list[dict]) -> int:
    """Adds synthetic records (copies of a real one with fresh hashes) up to ``total``;
    returns the bytes per synthetic record."""
    from transforms import archive

    padding = os.path.join(store, archive.MANIFEST_DIR, "synthetic-00000-of-00001.jsonl")
    existing = sum(1 for _ in open(padding, encoding="utf-8")) if os.path.exists(padding) else 0
    with open(padding, "a", encoding="utf-8") as out:
        for i in range(existing + len(real), total):
            sha = uuid.uuid4().hex + uuid.uuid4().hex
            record = dict(real[0], content_sha256=sha, source_path=f"synthetic/{i}.jpg")
            out.write(json.dumps(record) + "\n")
    return os.path.getsize(padding) // max(total - len(real), 1)


def shuffle_bytes(element) -> int:
    """Bytes an element takes in a shuffle, by the coder Beam picks for it."""
    from apache_beam.coders import registry

    return len(registry.get_coder(type(element)).encode(element))


def latest_summary(store: str) -> dict:
    from transforms import archive, records

    pattern = os.path.join(store, archive.RUNS_DIR, "*", records.SUMMARY_FILE)
    return records.read_json(sorted(glob.glob(pattern))[-1])


def side_input_bytes_per_entry(entries: int = 200_000) -> float:
    """Memory of {sha: state} in a Python worker, per entry (what AsDict materialises)."""
    from transforms.archive import ARCHIVED

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held = {uuid.uuid4().hex + uuid.uuid4().hex: ARCHIVED for _ in range(entries)}
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(held) == entries
    return (after - before) / entries


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", default="10000,100000,300000", help="Manifest sizes.")
    parser.add_argument("--project", type=int, default=100_000_000, help="Projected size.")
    args = parser.parse_args(argv)
    sizes = sorted(int(n) for n in args.records.split(","))

    from latentpress.samples import sample_paths
    from transforms import archive, records
    from transforms.archive import ARCHIVED, held_outputs

    inputs = sample_paths()[:2]
    runs = []
    with tempfile.TemporaryDirectory(prefix="lp-archive-scale-") as scratch:
        store = os.path.join(scratch, "archive")
        first = _archive_run(inputs, store)  # makes the real records and the listing
        real = records.read_json_lines(archive.manifest_pattern(store))
        print(f"first run (2 images encoded): {first['seconds']:.1f} s", file=sys.stderr)
        for size in sizes:
            record_bytes = pad_manifest(store, size, real)
            started = time.perf_counter()
            measured = _archive_run(inputs, store)
            summary = latest_summary(store)
            if summary["already_archived"] != len(inputs) or summary["hashed"] != 0:
                raise RuntimeError(f"the unchanged inputs were not recognised: {summary}")
            runs.append(
                {
                    "manifest_records": size,
                    "seconds": round(measured["seconds"], 2),
                    "peak_rss_mb": round(measured["peak_rss_mb"], 1),
                    "manifest_bytes_per_record": record_bytes,
                }
            )
            print(f"{size} records: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    base = runs[0]
    for run in runs:
        extra = run["manifest_records"] - base["manifest_records"]
        run["seconds_vs_smallest"] = round(run["seconds"] / base["seconds"], 2)
        if extra:
            run["ms_per_1000_extra_records"] = round(
                1000 * 1000 * (run["seconds"] - base["seconds"]) / extra, 1
            )
    sha = uuid.uuid4().hex * 2
    join_bytes = shuffle_bytes((sha, ARCHIVED))
    group_bytes = shuffle_bytes((sha, held_outputs(real[0])))
    dict_bytes = side_input_bytes_per_entry()
    record_bytes = runs[-1]["manifest_bytes_per_record"]
    result = {
        "runs": runs,
        # per manifest record: grouping the held outputs by content, then the join's state
        "group_shuffle_bytes_per_record": group_bytes,
        "join_shuffle_bytes_per_record": join_bytes,
        "projection": {
            "records": args.project,
            "manifest_read_gb": round(args.project * record_bytes / 1e9, 1),
            "shuffle_gb": round(args.project * (group_bytes + join_bytes) / 1e9, 1),
            "side_input_gb_per_worker_process": round(args.project * dict_bytes / 1e9, 1),
            "side_input_bytes_per_entry": round(dict_bytes, 1),
        },
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
