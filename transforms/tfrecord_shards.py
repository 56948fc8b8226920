"""``WriteShards``: deterministic TFRecord shards (same input -> byte-identical files).

Beam's own ``WriteToTFRecord`` assigns records to shards at random and orders them by bundle,
so a re-run differs.  Here the shard of a record is a hash of its sort key and each shard is
sorted before writing, which makes the bytes a function of the data alone.
"""

from __future__ import annotations

import os
import tempfile

import apache_beam as beam
import tensorflow as tf

from transforms.features import SHARD_SUFFIX
from transforms.patches import stable_hash
from transforms.records import join, write_atomically


def shard_name(split: str, index: int, num_shards: int) -> str:
    return f"{split}-{index:05d}-of-{num_shards:05d}{SHARD_SUFFIX}"


class _WriteShardFn(beam.DoFn):
    def __init__(self, directory: str, split: str, num_shards: int):
        self._directory = directory
        self._split = split
        self._num_shards = num_shards

    def process(self, shard_and_records):
        index, records = shard_and_records
        ordered = [record for _, record in sorted(records, key=lambda pair: pair[0])]
        # TFRecord framing (lengths and CRCs) comes from TensorFlow's writer on a local
        # file; the bytes then go through Beam's filesystems so gs:// works too.
        with tempfile.TemporaryDirectory() as scratch:
            local = os.path.join(scratch, "shard")
            with tf.io.TFRecordWriter(local) as writer:
                for record in ordered:
                    writer.write(record)
            with open(local, "rb") as handle:
                data = handle.read()
        path = join(self._directory, shard_name(self._split, index, self._num_shards))
        write_atomically(path, data)
        yield path, len(ordered)


class WriteShards(beam.PTransform):
    """(sort_key: str, serialized: bytes) -> ``num_shards`` files under ``directory``.

    Outputs (path, record count) per shard written; a shard that receives no record is not
    written.
    """

    def __init__(self, directory: str, split: str, num_shards: int):
        super().__init__()
        self._directory = directory
        self._split = split
        self._num_shards = num_shards

    def expand(self, keyed_records):
        num_shards = self._num_shards
        return (
            keyed_records
            | "AssignShard" >> beam.Map(lambda kr: (stable_hash(kr[0]) % num_shards, kr))
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.ParDo(_WriteShardFn(self._directory, self._split, num_shards))
        )
