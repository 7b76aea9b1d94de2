"""The forwarded path: a repartitioned entity's source records, re-keyed by entity key.

A repartitioned entity's source topic takes a shorter path (:class:`Forwarder`):

1. **Forward** every record to the repartition topic, keyed by its entity key, with the place
   it was first produced in a ``mirror-origin`` header; each confirmed by the broker.
2. **Kafka offsets**, as step 5 above: the source offsets are noted as applied only then.

A crash in between forwards some records twice: same origin, same version, so the copy is
skipped as a duplicate where it is applied. A record the repartition topic will never take
holds its partition from that record on, as a dead letter the broker refuses does.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator, Sequence
from typing import Any

from aiokafka.errors import KafkaError

from models.registry import EntitySpec
from streams.apply.applied_offsets import AppliedOffsets
from streams.apply.holds import (
    FAILED,
    FAILED_HOLD_SECONDS,
    FORWARD,
    HoldBackoff,
    hold,
    read_again,
    say_failed,
)
from streams.apply.retrying import retrying
from streams.apply.sql_applier import fast_loads
from streams.core.errors import (
    ForwardError,
    ForwardRefused,
    MirrorError,
)
from streams.core.keys import record_key_bytes
from streams.core.records import ORIGIN_HEADER, Partition, first_of, partition_of
from streams.core.routing import entity_key_of, json_record_keys
from streams.core.staleness import Head
from streams.intake.feed import Feed, FeedBatch, held_heads
from streams.intake.handoff import Handoff
from streams.kafka.aiokafka_fixes import needs_raw_headers, send_record
from streams.kafka.producers import BROKEN_PRODUCER_ERRORS, OwnProducer, passing_failure
from streams.kafka.record_batches import RecordBatches
from streams.ops import metrics
from tables.partitioner import key_partition

log = logging.getLogger(__name__)


class Forwarder:
    """Carries a repartitioned entity's source batches to its repartition topic, in the order
    of the module docstring (forward, confirmed; then the offsets).

    Faust's ``group_by`` does the same one event at a time and loses the record's first
    position. One lane: forwarding keeps each source partition's order.

    A record larger than the target takes is known before it is sent (the broker refusing a
    batch of an idempotent producer would break the producer's numbering for the partition):
    its partition is held from it, the rest of the batch goes on. A batch the broker refuses
    anyway (not allowed, a limit lowered meanwhile) holds the batch's partitions for a while.
    """

    def __init__(
        self,
        spec: EntitySpec,
        target: str,
        producer: OwnProducer,
        handoff: Handoff,
        applied: AppliedOffsets,
        read_limit: Callable[[], Awaitable[int]],
    ) -> None:
        self.spec = spec
        self.target = target
        self.producer = producer
        self.handoff = handoff
        self.applied = applied
        self.read_limit = read_limit
        """Reads the largest record the target takes now (``max.message.bytes``)."""
        self.limit: int | None = None
        """The largest record the target took when last read (None: not read yet)."""
        self.feed: Feed | None = None
        self.batch: FeedBatch | None = None
        """The batch being forwarded (staleness reads its heads)."""
        self._backoff = HoldBackoff()
        self._partitions: list[int] | None = None
        """The target's partitions, read once (a key's partition, as Kafka's default
        partitioner places it: ``tables.partitioner.key_partition``)."""
        self.idle = asyncio.Event()
        """Set when no batch is being forwarded (a revocation waits for it)."""
        self.idle.set()

    def heads(self) -> Iterator[tuple[Hashable, Head]]:
        """Yield the first record of each partition held here, oldest place first."""
        batches = [] if self.batch is None else [self.batch.heads]
        for tp, record in held_heads(batches, self.feed):
            yield tp, Head(record.offset, first_of(record).timestamp)

    async def run(self, feed: Feed, batch_size: int, linger: float) -> None:
        """Take batches from ``feed`` and forward each, until cancelled."""
        self.feed = feed
        while True:
            batch = self.batch = await feed.take(batch_size, linger)
            self.idle.clear()
            what = f"forward {len(batch)} {self.spec.kind} events to {self.target}"
            try:
                sent = await retrying(what, functools.partial(self._forward, batch))
            except MirrorError as exc:  # not retriable: no retry can fix it soon
                self._hold_failed(batch, exc)
            except Exception as exc:  # a bug: say where, hold the partitions, read them again
                self._hold_failed(batch, exc, bug=True)
            else:
                gaps = self.applied.note(sent, batch.starts)
                if gaps:
                    read_again(self.handoff, gaps)
                self._backoff.passed(partition_of(r) for r in sent)
            finally:
                self.batch = None
                self.idle.set()

    async def _forward(self, batch: Sequence[Any]) -> list[Any]:
        """Send ``batch`` but the records too large for the target (their partitions are held
        from them on); return the records sent, once the broker has confirmed each."""
        records = await self._fitting(batch)
        producer = await self.producer.get()
        futures: list[Any] = []
        try:
            await self._send(producer, [_forwarded(r, self.spec) for r in records], futures)
            outcomes = await asyncio.gather(*futures, return_exceptions=True)
        except KafkaError as exc:
            await asyncio.gather(*futures, return_exceptions=True)
            outcomes = [exc]
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if not failures:
            return records
        for failure in failures:
            if not isinstance(failure, KafkaError):
                raise failure  # a bug: the lane says where
        first = failures[0]
        if all(passing_failure(f) for f in failures):
            await self.producer.discard_if_broken(producer, first)
            raise ForwardError(f"cannot forward to {self.target} yet: {first!r}") from first
        refusal = next(f for f in failures if not passing_failure(f))
        await self.producer.discard(producer, refusal)  # its numbering has a gap now
        if isinstance(refusal, BROKEN_PRODUCER_ERRORS):
            raise ForwardError(f"cannot forward to {self.target} yet: {refusal!r}") from refusal
        raise ForwardRefused(f"{self.target} refused a batch: {type(refusal).__name__}: {refusal}")

    async def _send(
        self,
        producer: Any,
        records: Sequence[tuple[bytes | None, bytes | None, list[Any]]],
        futures: list[Any],
    ) -> None:
        """Send ``(key, value, headers)`` records to the target, their futures into ``futures``.

        As record batches built per target partition (``streams.kafka.record_batches``), each at
        most FORWARD_BATCH_BYTES and what the target takes; records whose header keys
        aiokafka's builder cannot write (``streams.kafka.aiokafka_fixes``) are sent one by one, the
        batch with them.
        """
        target = self.target
        if any(needs_raw_headers(headers) for _, _, headers in records):
            for key, value, headers in records:
                futures.append(await send_record(producer, target, key, value, headers))
            return
        if self._partitions is None:
            self._partitions = sorted(await producer.partitions_for(target))
        partitions = self._partitions
        count = len(partitions)
        room = min(FORWARD_BATCH_BYTES, self.limit or FORWARD_BATCH_BYTES)
        batches: RecordBatches[None] = RecordBatches(producer, target, room)
        try:
            for key, value, headers in records:
                # A record with no key at all (rejected where it is applied) goes to the first.
                partition = partitions[0 if key is None else key_partition(key, count)]
                size = _record_size(key, value, headers)
                if batches.add(partition, key, value, None, headers, size):
                    await batches.send_full()
            await batches.send_rest()
        finally:
            futures.extend(future for future, _ in batches.sent)

    async def _fitting(self, batch: Sequence[Any]) -> list[Any]:
        """Return ``batch`` without the records too large for the target and those after them
        in their partitions, holding each such partition from its first one."""
        largest = max(map(_forwarded_size, batch), default=0)
        if self.limit is not None and largest <= self.limit:
            return list(batch)
        try:
            self.limit = await self.read_limit()  # the target may take more now
        except (MirrorError, KafkaError, OSError) as exc:
            raise ForwardError(f"cannot read {self.target}'s max.message.bytes: {exc!r}") from exc
        if largest <= self.limit:
            return list(batch)
        cut: dict[Partition, int] = {}
        kept = []
        for record in batch:
            tp = partition_of(record)
            if tp in cut:
                continue
            if _forwarded_size(record) > self.limit:
                cut[tp] = record.offset
                self._hold_from(record)
                continue
            kept.append(record)
        return kept

    def _hold_from(self, record: Any) -> None:
        """Hold the partition of a record too large for the target, from that record on."""
        key = partition_of(record)
        delay = self._backoff.next(key)
        log.error(
            "%s[%d]@%d (%d bytes) is larger than %s takes (max.message.bytes %s); holding the "
            "partition from that offset for %.0f s, then trying again (raise %s's "
            "max.message.bytes to %d, or fix the record's producer)",
            record.topic,
            record.partition,
            record.offset,
            len(record.value or b""),
            self.target,
            self.limit,
            delay,
            self.target,
            _forwarded_size(record),
            extra={"topic": record.topic, "partition": record.partition, "offset": record.offset},
        )
        metrics.FORWARD_FAILURES.labels(record.topic, str(record.partition)).inc()
        hold(self.handoff, key, FORWARD, delay)

    def _hold_failed(self, batch: Sequence[Any], exc: BaseException, *, bug: bool = False) -> None:
        tps = sorted({partition_of(r) for r in batch})
        say_failed("forwarding", len(batch), self.spec.kind, tps, exc, bug=bug)
        for tp in tps:
            hold(self.handoff, tp, FAILED, FAILED_HOLD_SECONDS)


#: Largest record batch the forwarder builds (fewer, larger requests; within the 1 MB a topic
#: takes by default).
FORWARD_BATCH_BYTES = 256 * 1024
#: Bytes a record batch of one forwarded record takes beyond its key, value and headers: the
#: batch header (61), the record's own framing and the ``mirror-origin`` header, with room.
_FORWARD_OVERHEAD = 256


def _forwarded_size(record: Any) -> int:
    """Return about how many bytes ``record`` takes on the target, alone in a record batch."""
    return _record_size(record.key, record.value, record.headers or ())


def _record_size(
    key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, bytes | None]]
) -> int:
    """Return about how many bytes a record of these parts takes in a record batch."""
    size = _FORWARD_OVERHEAD + len(key or b"") + len(value or b"")
    for name, header in headers:
        size += len(name) + len(header or b"") + 8
    return size


def _forwarded(record: Any, spec: EntitySpec) -> tuple[bytes | None, bytes | None, list[Any]]:
    """Return the key, value and headers ``record`` is forwarded with."""
    key = entity_key_of(record, spec, fast_loads)
    if key is None:
        new_key = record.key
    elif json_record_keys(spec):  # read back as a tombstone's key is: a JSON object
        new_key = record_key_bytes(key, spec.key_columns)
    else:
        new_key = str(key).encode()
    own = [(k, v if isinstance(v, bytes) else b"") for k, v in (record.headers or ())]
    return new_key, record.value, [*own, (ORIGIN_HEADER, first_of(record).header())]
