"""The one partition type (streams/core/records.py): it keys the same dicts as aiokafka's and
Faust's partition types, and the fast key of a record equals it."""

from __future__ import annotations

from aiokafka import TopicPartition
from faust.types import TP

from streams.core.records import Partition, SourceRecord, partition_key, partition_of


def test_a_partition_equals_and_hashes_as_aiokafkas_and_fausts() -> None:
    ours = Partition("planet-changed", 3)
    for theirs in (TopicPartition("planet-changed", 3), TP("planet-changed", 3)):
        assert ours == theirs and hash(ours) == hash(theirs)
        assert {theirs: 1}[ours] == 1


def test_a_records_fast_key_is_its_partition() -> None:
    record = SourceRecord("planet-changed", 3, 10, 0, None, None)
    assert partition_of(record) == partition_key(record) == Partition("planet-changed", 3)
    assert {partition_key(record): 1}[partition_of(record)] == 1
