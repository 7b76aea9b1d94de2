"""Workarounds of aiokafka 0.14.0 bugs, in one place, each naming the source line it works around.

**Header keys that are not UTF-8.** Kafka's protocol calls a header key a String, but brokers
never check it, so any producer can write arbitrary bytes there. aiokafka decodes every header
key strictly (``aiokafka/record/default_records.py``, ``_DefaultRecordBatchPy._read_msg``:
``h_key = buffer[pos : pos + h_key_len].decode("utf-8")``; its Cython reader does the same), so
one such record raises ``UnicodeDecodeError`` out of the consumer's fetch: Faust's fetcher
crashes, and again at every restart, on the same record. :func:`install` wraps the fetcher's
``MemoryRecords`` (``aiokafka/consumer/fetcher.py``: ``records = MemoryRecords(part_data[-1])``)
so that a record batch whose reading raises it is read again by aiokafka's pure-Python reader,
decoding header keys with ``surrogateescape`` into :class:`RawHeaderKey`, text that keeps its
bytes. The record is then mirrored or dead-lettered like any other.

**Writing such a key back.** aiokafka's record builder encodes header keys as UTF-8, and its
Cython builder takes only exact ``str`` (``TypeError: Expected str, got ...``), so a dead letter
or a redriven record would fail. :func:`send_with_raw_headers` builds such a record's batch with
aiokafka's pure-Python builder, whose ``h_key.encode("utf-8")`` gives a :class:`RawHeaderKey`'s
own bytes: the headers reach the dead-letter topic byte for byte. (aiokafka's
``BatchBuilder._set_producer_state`` asserts its builder is the Cython one; the batch class here
sets the producer state itself.)

**CRC32C in software.** aiokafka's Cython batch reader checks each record batch's CRC32C
(``_crecords/default_records.pyx``, ``validate_crc`` over its own ``crc32c.c``, a table-driven
software loop) at about 1 GB/s here: for Debezium's 4 KB records with their schemas, 3.5 us a
record, a fifth of a bare consumer's CPU. kafka-python took the same step
(dpkp/kafka-python#1389): the ``crc32c`` package computes it with the CPU's CRC32C instruction
(SSE 4.2, ARMv8; a C loop elsewhere) at about 20 GB/s, on a view of the fetched bytes (no copy).
:class:`TolerantMemoryRecords` computes each batch's CRC that way and its batches answer
``validate_crc`` with the result, so aiokafka's own check (``PartitionRecords._unpack_records``:
``if self._check_crcs and not next_batch.validate_crc()``) raises ``CorruptRecordException`` on
the same batches as before, sooner. The wrapped batches answer ``next()`` as aiokafka's own do:
reading committed records, aiokafka reads each control batch's record with it
(``PartitionRecords._contains_abort_marker``) to see whether a transaction was aborted.

**Only the version they were written for.** Both reach into aiokafka's private classes, which a
new release may change without notice: :func:`install` and :func:`send_with_raw_headers` refuse
any aiokafka but :data:`TESTED_AIOKAFKA` (pyproject.toml pins it; requirements.lock installs it)
with one line, rather than misread records.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, SupportsIndex

import aiokafka
import aiokafka.consumer.fetcher as _fetcher
import crc32c
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record import default_records as _records
from aiokafka.record.memory_records import MemoryRecords as _MemoryRecords

from streams.core.errors import DependencyError

#: The aiokafka releases whose private reader and builder these workarounds were read against
#: and tested with (tests/integration/test_headers.py).
TESTED_AIOKAFKA = ("0.14.0",)

#: Bytes before a record batch's length field, and the length field itself (baseOffset, length).
_LENGTH_END = 12
#: Where a (v2) record batch's CRC32C is, and where the bytes it covers begin (attributes on).
_CRC_START = 17
_CRC_END = 21


class RawHeaderKey(str):
    """A header key that is not UTF-8: text with its bytes escaped, which encodes back to them."""

    raw: bytes

    def __new__(cls, raw: bytes) -> RawHeaderKey:
        key = super().__new__(cls, raw.decode("utf-8", "surrogateescape"))
        key.raw = raw
        return key

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        """Return the key's own bytes (what the producer of the record wrote)."""
        return self.raw


def header_key_bytes(key: str) -> bytes:
    """Return the bytes of a header key as the record carries them."""
    return key.raw if isinstance(key, RawHeaderKey) else key.encode("utf-8")


def needs_raw_headers(headers: Sequence[tuple[str, Any]]) -> bool:
    """Tell whether a record's headers have a key aiokafka's own builder cannot write."""
    return any(type(key) is not str for key, _ in headers)


class _TolerantSlices(bytearray):
    """A record buffer whose slices decode as header keys that may not be UTF-8."""

    def __getitem__(self, index: SupportsIndex | slice) -> Any:
        item = super().__getitem__(index)
        return _TolerantBytes(item) if isinstance(index, slice) else item


class _TolerantBytes(bytearray):
    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        """Decode a header key; keep bytes that are not UTF-8 as a :class:`RawHeaderKey`."""
        raw = bytes(self)
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            return RawHeaderKey(raw)


class _TolerantBatch(_records._DefaultRecordBatchPy):  # type: ignore[misc]
    """aiokafka's pure-Python batch reader, reading header keys through :class:`_TolerantSlices`."""

    def _maybe_uncompress(self) -> None:
        super()._maybe_uncompress()
        buffer: Any = self._buffer  # type: ignore[has-type]
        if not isinstance(buffer, _TolerantSlices):
            self._buffer = _TolerantSlices(buffer)


def batch_crc_ok(data: bytes, start: int, end: int) -> bool:
    """Tell whether the v2 record batch at ``data[start:end]`` matches its CRC32C."""
    stored = int.from_bytes(data[start + _CRC_START : start + _CRC_END], "big")
    return bool(crc32c.crc32c(memoryview(data)[start + _CRC_END : end]) == stored)


class _Batch:
    """One record batch of a fetch: read as aiokafka reads it, again if a header key breaks it;
    its CRC checked by :func:`batch_crc_ok`."""

    def __init__(self, batch: Any, data: bytes, start: int, end: int) -> None:
        self._batch = batch
        self._data = data
        self._start = start
        self._end = end

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)

    def validate_crc(self) -> bool:
        """Tell whether the batch matches its CRC32C (aiokafka's own answer, sooner)."""
        return batch_crc_ok(self._data, self._start, self._end)

    def __next__(self) -> Any:
        # aiokafka reads a transaction's control record with next(batch) when it reads
        # committed records (PartitionRecords._contains_abort_marker); __getattr__ does not
        # serve special methods, so without this every abort marker raised TypeError.
        return next(self._batch)

    def __iter__(self) -> Iterator[Any]:
        last = -1
        try:
            for record in self._batch:
                last = record.offset
                yield record
        except UnicodeDecodeError:
            for record in _TolerantBatch(self._data[self._start : self._end]):
                if record.offset > last:
                    yield record


class TolerantMemoryRecords:
    """The records of one fetched partition, as aiokafka's ``MemoryRecords`` reads them."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._records = _MemoryRecords(data)
        self._pos = 0

    def size_in_bytes(self) -> int:
        """Return the size of the fetched data."""
        return int(self._records.size_in_bytes())

    def has_next(self) -> bool:
        """Tell whether another whole batch follows."""
        return bool(self._records.has_next())

    def next_batch(self) -> Any:
        """Return the next batch (None at the end), readable despite bad header keys."""
        start = self._pos
        batch = self._records.next_batch()
        if batch is None:
            return None
        length = int.from_bytes(self._data[start + 8 : start + _LENGTH_END], "big")
        self._pos = start + _LENGTH_END + length
        if getattr(batch, "magic", 2) < 2:
            return batch  # message formats 0 and 1 have no headers
        return _Batch(batch, self._data, start, self._pos)


def check_aiokafka(installed: str | None = None) -> None:
    """Refuse, in one line, an aiokafka these workarounds were not written for."""
    version = aiokafka.__version__ if installed is None else installed
    if version not in TESTED_AIOKAFKA:
        raise DependencyError(
            f"aiokafka {version} is installed, but streams/kafka/aiokafka_fixes.py patches the "
            f"private record reader and builder of aiokafka {' or '.join(TESTED_AIOKAFKA)} only; "
            "install "
            "the locked versions (pip install --require-hashes -r requirements.lock; ./run does)"
        )


def install() -> None:
    """Make the consumers of this process read records whose header keys are not UTF-8, and
    check record batches' CRC32C with the CPU's instruction."""
    check_aiokafka()
    _fetcher.MemoryRecords = TolerantMemoryRecords


async def send_record(
    producer: Any,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
) -> Any:
    """Send one record with aiokafka's ``producer`` (no compression); return its future.

    Records whose header keys are not UTF-8 go through :func:`send_with_raw_headers`.
    """
    if needs_raw_headers(headers):
        return await send_with_raw_headers(producer, topic, key, value, headers)
    return await producer.send(topic, value, key=key, headers=list(headers))


async def send_with_raw_headers(
    producer: Any,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
) -> Any:
    """Send one record whose header keys aiokafka's builder cannot write; return its future."""
    from aiokafka.partitioner import DefaultPartitioner

    check_aiokafka()
    partitions = sorted(await producer.partitions_for(topic))
    partition = DefaultPartitioner()(key, partitions, partitions)
    batch = _RawHeadersBatch(max(1024 * 1024, len(value or b"") + 64 * 1024))
    batch.append(key=key, value=value, timestamp=None, headers=list(headers))
    batch.close()
    return await producer.send_batch(batch, topic, partition=partition)


class _RawHeadersBatch(BatchBuilder):  # type: ignore[misc]
    """A producer batch built by aiokafka's pure-Python builder (uncompressed)."""

    def __init__(self, batch_size: int) -> None:
        super().__init__(batch_size, 0)
        self._builder = _records._DefaultRecordBatchBuilderPy(
            2,
            0,
            is_transactional=0,
            producer_id=-1,
            producer_epoch=-1,
            base_sequence=0,
            batch_size=batch_size,
        )

    def _set_producer_state(
        self, producer_id: int, producer_epoch: int, base_sequence: int
    ) -> None:
        # aiokafka asserts the builder is its own (message_accumulator.py, _set_producer_state).
        self._builder.set_producer_state(producer_id, producer_epoch, base_sequence)
