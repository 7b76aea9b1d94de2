"""The aiokafka workarounds refuse an aiokafka they were not written for, in one line.

What they work around is tested against the real broker (tests/integration/test_headers.py).
"""

from __future__ import annotations

import aiokafka
import aiokafka.consumer.fetcher as fetcher
import crc32c
import pytest

from streams.core.errors import DependencyError, MirrorError
from streams.kafka import aiokafka_fixes
from streams.kafka.aiokafka_fixes import TESTED_AIOKAFKA, check_aiokafka


def test_the_installed_aiokafka_is_the_one_the_fixes_were_written_for() -> None:
    assert aiokafka.__version__ in TESTED_AIOKAFKA
    check_aiokafka()


def test_another_aiokafka_is_one_line_naming_both_versions_and_the_fix() -> None:
    with pytest.raises(DependencyError) as info:
        check_aiokafka("0.15.0")
    message = str(info.value)
    assert isinstance(info.value, MirrorError)  # the worker and the commands print "error: ..."
    assert "\n" not in message
    assert "aiokafka 0.15.0 is installed" in message
    assert all(version in message for version in TESTED_AIOKAFKA)
    assert "requirements.lock" in message


def test_install_patches_nothing_under_another_aiokafka(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiokafka, "__version__", "0.13.0")
    monkeypatch.setattr(fetcher, "MemoryRecords", fetcher.MemoryRecords)  # restored after
    before = fetcher.MemoryRecords
    with pytest.raises(DependencyError, match=r"aiokafka 0\.13\.0 is installed"):
        aiokafka_fixes.install()
    assert fetcher.MemoryRecords is before


def _fetched(*batches: list[bytes]) -> bytes:
    """Return a fetch's bytes for one partition: v2 record batches, one per list of values."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    data = b""
    offset = 0
    for values in batches:
        builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 20)  # v2, uncompressed
        for delta, value in enumerate(values):
            assert builder.append(delta, 1_764_000_000_000, b"k", value, []) is not None
        raw = bytearray(builder.build())
        raw[0:8] = offset.to_bytes(8, "big")  # the batch's base offset, as the broker sets it
        data += bytes(raw)
        offset += len(values)
    return data


def _records(data: bytes, check_crcs: bool = True) -> list[bytes]:
    """Read ``data`` as aiokafka's fetcher reads a partition's records (its CRC check too)."""
    records = aiokafka_fixes.TolerantMemoryRecords(data)
    partition = fetcher.PartitionRecords(
        aiokafka.TopicPartition("t", 0), records, None, 0, None, None, check_crcs, 0
    )
    return [record.value for record in partition]


def test_batches_crc_checked_by_the_cpu_instruction_read_as_aiokafka_reads_them() -> None:
    data = _fetched([b"a" * 4000, b"b"], [b"c" * 300])
    assert _records(data) == [b"a" * 4000, b"b", b"c" * 300]
    records = aiokafka_fixes.TolerantMemoryRecords(data)
    while (batch := records.next_batch()) is not None:
        assert batch.validate_crc() is True
        assert batch._batch.validate_crc() is True  # aiokafka's own software check agrees


def test_a_batch_whose_bytes_do_not_match_its_crc_is_corrupt_as_aiokafka_says() -> None:
    from aiokafka.errors import CorruptRecordException

    data = bytearray(_fetched([b"a" * 4000], [b"c" * 300]))
    data[-5] ^= 0x01  # one bit of the second batch's last value
    corrupt = bytes(data)
    records = aiokafka_fixes.TolerantMemoryRecords(corrupt)
    answers = []
    while (batch := records.next_batch()) is not None:
        answers.append((batch.validate_crc(), batch._batch.validate_crc()))
    assert answers == [(True, True), (False, False)]
    with pytest.raises(CorruptRecordException, match="Invalid CRC"):
        _records(corrupt)
    assert len(_records(corrupt, check_crcs=False)) == 2  # the consumer's own switch still rules


def _transaction(producer_id: int, base_offset: int, values: list[bytes], marker: int) -> bytes:
    """Return a transaction's bytes as a broker holds them: a transactional batch of ``values``
    at ``base_offset``, then its control batch (``marker``: 0 abort, 1 commit)."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    def batch(offset: int, items: list[tuple[bytes, bytes]], control: bool) -> bytes:
        builder = DefaultRecordBatchBuilder(2, 0, 1, producer_id, 0, 0, 1 << 20)
        for delta, (key, value) in enumerate(items):
            assert builder.append(delta, 1_764_000_000_000, key, value, []) is not None
        raw = bytearray(builder.build())
        raw[0:8] = offset.to_bytes(8, "big")
        if control:
            raw[21:23] = (int.from_bytes(raw[21:23], "big") | 0x20).to_bytes(2, "big")
            raw[17:21] = crc32c.crc32c(bytes(raw[21:])).to_bytes(4, "big")
        return bytes(raw)

    control_record = (0).to_bytes(2, "big") + marker.to_bytes(2, "big")  # version, type
    data = batch(base_offset, [(b"k", v) for v in values], control=False)
    return data + batch(base_offset + len(values), [(control_record, b"\0" * 6)], control=True)


def test_committed_records_are_read_past_an_aborted_transaction_as_aiokafka_reads_them() -> None:
    # aiokafka reads a control batch's record with next(batch) when it reads committed records;
    # the wrapped batch had no __next__, so every abort marker raised TypeError out of the fetch.
    from aiokafka.consumer.fetcher import READ_COMMITTED

    data = _transaction(7, 0, [b"aborted-1", b"aborted-2"], marker=0)
    data += _transaction(8, 3, [b"committed"], marker=1)
    records = aiokafka_fixes.TolerantMemoryRecords(data)
    partition = fetcher.PartitionRecords(
        aiokafka.TopicPartition("t", 0), records, [(7, 0)], 0, None, None, True, READ_COMMITTED
    )
    assert [(r.offset, r.value) for r in partition] == [(3, b"committed")]
    assert partition.next_fetch_offset == 5  # past the commit marker
