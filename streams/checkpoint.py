"""The order of one batch's effects, written down once.

For a batch of one entity's records (several partitions, each in order):

1. **Route** every record (pure: ``streams.core.routing``); rejections are known before any SQL.
2. **Dead letters** of the records rejected for the first time are sent, and confirmed by the
   broker, before the transaction that moves their partition's stored offset past them commits.
   A dead letter the broker will never take (too large) holds its partition from that record
   on (``mirror_held_partitions``), and the rest of the batch goes on.
3. **One SQL transaction** applies the batch with its stored offsets and outcome counts
   (``streams.mirror``). A row the database refuses rolls the transaction back; it is
   dead-lettered (step 2) and the transaction runs again without it.
4. **The cache**, after the commit: the committed state of the batch's keys goes to the cached
   table and its changelog, confirmed; so the cache never shows state the database does not
   have.
5. **Kafka offsets**: only then are the batch's offsets noted as applied; they are committed to
   the group every commit interval (``AppliedOffsets``).

A crash between two steps repeats the later ones when the batch is read again: a dead letter
may be sent twice, a replay changes nothing in SQL and rewrites the cache, and the Kafka offset
only lags. Errors that a retry can fix (the database or the broker unreachable) are retried
with backoff, holding the batch (back-pressure); an error no retry can fix holds the batch's
partitions for a while with one error line saying what failed, and they are read again after.

A repartitioned entity's source topic takes a shorter path (:class:`Forwarder`):

1. **Forward** every record to the repartition topic, keyed by its entity key, with the place
   it was first produced in a ``mirror-origin`` header; each confirmed by the broker.
2. **Kafka offsets**, as step 5 above: the source offsets are noted as applied only then.

A crash in between forwards some records twice: same origin, same version, so the copy is
skipped as a duplicate where it is applied. A record the repartition topic will never take
holds its partition from that record on, as a dead letter the broker refuses does.

Nothing else sends, writes or commits on a batch's behalf: the agents (``streams.agents``) only
build these and hand them their feeds, and the worker's commit timer and revocations call
:meth:`AppliedOffsets.commit`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, TypeVar

from aiokafka.errors import KafkaError

from models.registry import EntitySpec
from streams import metrics
from streams.aiokafka_fixes import needs_raw_headers, send_record
from streams.core.backoff import Backoff
from streams.core.errors import (
    CacheError,
    ForwardError,
    ForwardRefused,
    MirrorError,
    OffsetGap,
    StoreRefusals,
)
from streams.core.positions import Gap, offset_gaps
from streams.core.routing import (
    ORIGIN_HEADER,
    Decision,
    Rejection,
    entity_key_of,
    first_of,
    route_batch,
    stamped_ahead,
)
from streams.core.staleness import Head
from streams.deadletters import DeadLetterRefused, DeadLetterWriter
from streams.faust_bridge import commit_offsets
from streams.feed import Feed, Taken, heads_of, held_heads
from streams.handoff import HELD, Handoff, discarded
from streams.mirror import BatchResult, Mirror, fast_loads
from streams.producers import BROKEN_PRODUCER_ERRORS, OwnProducer, passing_failure
from streams.record_batches import RecordBatches
from tables.cache import EntityCache, Entry, cache_key, encode_value
from tables.partitioner import key_partition

log = logging.getLogger(__name__)

T = TypeVar("T")
#: How long the partitions of a batch that failed for good are held before they are read again.
FAILED_HOLD_SECONDS = 60.0
DEAD_LETTER = "dead_letter"
FAILED = "failed"
FORWARD = "forward"

Position = tuple[str, int, int]


class AppliedOffsets:
    """Next offset per source partition whose records have had every effect here.

    Noted when a batch's checkpoint is complete, or when a partition is positioned (records
    below its start need nothing more). These are the only offsets committed to the group
    (forward only), which keeps its offsets, restarts and lag monitors right.
    """

    def __init__(self) -> None:
        self.next: dict[Any, int] = {}
        self.committed: dict[Any, int] = {}
        self._revoked: set[tuple[str, int]] = set()
        """Partitions forgotten at a revocation and not positioned here since: a batch of
        theirs that finishes late must not note (and later commit) an offset another worker
        has moved past."""

    def note(self, records: Iterable[Any], starts: Mapping[Hashable, int]) -> list[Gap]:
        """Record the offsets after ``records`` (all applied), for each partition whose records
        follow on (``starts``: the offset each partition's records continue from) from what is
        noted already; return the partitions that do not (nothing of theirs is noted: a batch
        lost on its way must not be stepped over by the Kafka offset either)."""
        last: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic, record.partition)
            if record.offset >= last.get(key, -1):
                last[key] = record.offset
        noted = self.next
        gaps = offset_gaps([key for key in last if key not in self._revoked], starts, noted)
        refused = {(gap.topic, gap.partition) for gap in gaps}
        for key, offset in last.items():
            if key not in self._revoked and key not in refused:
                self.applied_below(key, offset + 1)
        return gaps

    def positioned(self, tp: Any, offset: int) -> None:
        """Record that ``tp`` is read here from ``offset`` on (assigned): nothing below needs
        an effect of ours, and its batches note their offsets again."""
        self._revoked.discard((tp[0], tp[1]))
        self.applied_below(tp, offset)

    def applied_below(self, tp: Any, offset: int) -> None:
        """Record that every record of ``tp`` below ``offset`` has had its effects."""
        key = (tp[0], tp[1])
        if offset > self.next.get(key, -1):
            self.next[key] = offset

    def forget(self, tps: Iterable[Any]) -> None:
        """Drop revoked partitions: another worker's later progress must not be undone."""
        for tp in tps:
            key = (tp[0], tp[1])
            self.next.pop(key, None)
            self.committed.pop(key, None)
            self._revoked.add(key)

    def due(self, assigned: Iterable[Any]) -> dict[Any, int]:
        """Return the offsets of ``assigned`` partitions ahead of what was committed."""
        found = {}
        for tp in assigned:
            key = (tp[0], tp[1])
            offset = self.next.get(key)
            if offset is not None and offset > self.committed.get(key, -1):
                found[tp] = offset
        return found

    def committed_now(self, offsets: Mapping[Any, int]) -> None:
        """Note that ``offsets`` were committed."""
        for tp, offset in offsets.items():
            self.committed[(tp[0], tp[1])] = offset

    async def commit(self, consumer: Any, tps: Iterable[Any] | None = None) -> None:
        """Commit the applied offsets of ``tps`` (default: every partition ``consumer`` has)."""
        due = self.due(consumer.assignment() if tps is None else tps)
        if due and await commit_offsets(consumer, due):
            self.committed_now(due)


@dataclass(slots=True, eq=False)
class _Batch:
    """One batch on its way through the stages."""

    records: list[Any]
    read_at: float
    heads: dict[Hashable, Any]
    """The first record of each partition in the batch (as fetched)."""
    starts: Mapping[Hashable, int]
    """The stored offset each partition's records follow on (checked by the transaction)."""
    decisions: list[Decision] = field(default_factory=list)
    result: BatchResult | None = None
    forwarded: bool = False
    """Whether some records carry the place they were first produced (``mirror-origin``)."""


class Checkpoint:
    """Carries one entity's batches through their effects, in the order above.

    Three stages, each taking one batch at a time and handing it on through a queue of one:
    routing (pure Python), the SQL transaction (mostly waiting on the database) and the
    cache with the offsets (mostly waiting on the broker). Batch *n+1* is routed while batch
    *n* is in the database and batch *n-1* reaches the changelog, each stage in batch order,
    so the order of effects above holds for every batch and across batches.
    """

    def __init__(
        self,
        mirror: Mirror,
        spec: EntitySpec,
        dead_letters: DeadLetterWriter,
        dlq_topic: str,
        handoff: Handoff,
        applied: AppliedOffsets,
        cache: EntityCache | None = None,
        prepare: Callable[[list[Any]], list[Any]] | None = None,
    ) -> None:
        self.mirror = mirror
        self.spec = spec
        self.dead_letters = dead_letters
        self.dlq_topic = dlq_topic
        self.handoff = handoff
        self.applied = applied
        self.cache = cache
        self.prepare = prepare
        """Turns fetched records into the core's (a repartition topic's origin headers)."""
        self._backoff = HoldBackoff()
        self._cut: dict[tuple[str, int], int] = {}
        """Partitions held from an offset on: their later records still on the way are dropped."""
        self.in_flight: list[_Batch] = []
        """The batches on their way, oldest first."""
        self.feed: Feed | None = None
        """The feed :meth:`run` takes batches from."""
        self.idle = asyncio.Event()
        """Set when no batch is on its way (a revocation waits for it)."""
        self.idle.set()
        self.wanted = asyncio.Event()
        """Set while the SQL stage waits for a batch: the next one is taken from the feed then,
        whatever its size (or once full): no fixed wait at low rates, full batches under load."""

    async def run(self, feed: Feed, batch_size: int, linger: float) -> None:
        """Take batches from ``feed`` and carry each through every stage, until cancelled.

        A stage that fails on a batch holds the batch's partitions and reads them again from
        the stored offsets (:meth:`_failed`); if a stage's own loop ever raises, every batch
        on its way is given up the same way before the error goes on (nothing is dropped:
        what was taken is read again).
        """
        self.feed = feed
        self.in_flight = []
        self.idle.set()
        routed: asyncio.Queue[_Batch] = asyncio.Queue(maxsize=1)
        applied: asyncio.Queue[_Batch] = asyncio.Queue(maxsize=1)
        stages = [
            asyncio.create_task(self._route_stage(feed, batch_size, linger, routed)),
            asyncio.create_task(self._apply_stage(routed, applied)),
            asyncio.create_task(self._finish_stage(applied)),
        ]
        try:
            done, _ = await asyncio.wait(stages, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a stage only ends by raising (a bug): re-raise it here
        finally:
            for task in stages:
                task.cancel()
            await asyncio.gather(*stages, return_exceptions=True)
            self._give_up_in_flight()

    async def _route_stage(
        self, feed: Feed, batch_size: int, linger: float, out: asyncio.Queue[_Batch]
    ) -> None:
        while True:
            records = await feed.take(batch_size, linger, self.wanted)
            batch = _Batch(records, time.perf_counter(), records.heads, records.starts)
            self._started(batch)
            try:
                await self._route(batch)
            except Exception as exc:  # a bug: say where, hold the partitions, read them again
                self._failed("routing", batch, exc)
                continue
            await _hand_on(out, batch)

    async def _apply_stage(self, source: asyncio.Queue[_Batch], out: asyncio.Queue[_Batch]) -> None:
        while True:
            self.wanted.set()
            batch = await _take(source)
            self.wanted.clear()
            if await self._apply(batch):
                await _hand_on(out, batch)
            else:
                self._done(batch)

    async def _finish_stage(self, source: asyncio.Queue[_Batch]) -> None:
        while True:
            batch = await _take(source)
            try:
                await self._finish(batch)
            except Exception as exc:  # committed in SQL; the cache and offsets are not done
                self._failed("caching", batch, exc)

    def _failed(self, doing: str, batch: _Batch, exc: Exception) -> None:
        """Hold the partitions of a batch a stage failed on (a bug: its traceback is logged),
        to read them again from the stored offsets (the Kafka offset, for the cache, of a
        cached topic); the batch is done."""
        self._hold_failed(batch.records, exc, doing, bug=True)
        self._done(batch)

    def _give_up_in_flight(self) -> None:
        """Read the partitions of every batch on its way again (the stages are gone)."""
        from aiokafka import TopicPartition

        tps = {(r.topic, r.partition) for batch in self.in_flight for r in batch.heads.values()}
        self.in_flight = []
        self.idle.set()
        if tps:
            log.error(
                "%s: giving up %d partitions' batches on their way; reading them again from "
                "the stored offsets",
                self.spec.kind,
                len(tps),
            )
            self.handoff.forget([TopicPartition(*tp) for tp in sorted(tps)])

    def _started(self, batch: _Batch) -> None:
        self.in_flight.append(batch)
        self.idle.clear()

    def _done(self, batch: _Batch) -> None:
        self.in_flight.remove(batch)
        if not self.in_flight:
            self.idle.set()

    def heads(self) -> Iterator[tuple[Hashable, Head]]:
        """Yield the first record of each partition held here, oldest place first: the
        batches on their way in order, then the feed (what staleness reads, not records)."""
        for tp, record in held_heads([batch.heads for batch in self.in_flight], self.feed):
            cut = self._cut.get((record.topic, record.partition))
            if cut is not None and record.offset > cut:
                continue  # dropped when it reaches the database stage
            yield tp, Head(record.offset, self._first_timestamp(record))

    def _first_timestamp(self, record: Any) -> int:
        """Return where ``record`` was first produced, as the core sees it (ms)."""
        if self.prepare is not None:
            record = self.prepare([record])[0]
        return first_of(record).timestamp

    async def _route(self, batch: _Batch) -> None:
        """Stage 1: route every record (pure), with timestamps believed up to MAX_TIMESTAMP_AHEAD
        past this worker's clock."""
        if self.prepare is not None:
            prepared = self.prepare(batch.records)
            batch.forwarded = prepared is not batch.records  # the same list: none has an origin
            batch.records = prepared
        clock = self.mirror.clock()
        ahead = stamped_ahead(batch.records, clock.ahead_limit, forwarded=batch.forwarded)
        if ahead:
            _say_ahead(ahead, clock.ahead_limit, self.mirror.timestamps_ahead)
        batch.decisions = await asyncio.to_thread(
            route_batch, batch.records, self.spec, fast_loads, clock
        )

    async def _apply(self, batch: _Batch) -> bool:
        """Stage 2: dead letters, then the transaction; False when nothing is left to finish."""
        self._drop_cut(batch)
        stored = self.mirror.positions
        before = {tp: stored.get((r.topic, r.partition), 0) for tp, r in batch.heads.items()}
        refused: dict[Position, Rejection] = {}
        sent: set[Position] = set()
        while batch.records:
            try:
                await self._dead_letter(batch.decisions, refused, sent)
                apply = functools.partial(
                    asyncio.to_thread,
                    self.mirror.apply,
                    self.spec,
                    batch.records,
                    decisions=batch.decisions,
                    refused=refused,
                    read_back=self.cache is not None,
                    starts=batch.starts,
                )
                batch.result = await _retrying(
                    f"apply {len(batch.records)} {self.spec.kind} records", apply
                )
                self._observe_delay(batch, before)
                return True
            except StoreRefusals as refusals:
                for rejection in refusals.rejections:
                    refused[_position(rejection.record)] = rejection
            except DeadLetterRefused as exc:
                self._hold_from(exc, batch)
            except OffsetGap as exc:
                self._read_again(exc.gaps, batch)
            except MirrorError as exc:  # not retriable: no retry can fix it soon
                self._hold_failed(batch.records, exc)
                return False
            except Exception as exc:  # a bug: say where, once, and keep the other partitions going
                self._hold_failed(batch.records, exc, "applying", bug=True)
                return False
        return False

    async def _finish(self, batch: _Batch) -> None:
        """Stage 3: the cache, then the offsets."""
        result = batch.result
        assert result is not None
        cache = self.cache
        if cache is not None:
            await _retrying(
                f"write {len(result.states)} {self.spec.kind} entries to {cache.changelog}",
                functools.partial(_write_cache, cache, result),
            )
        self._backoff.passed(batch.heads)
        gaps = self.applied.note(batch.records, batch.starts)
        if gaps:
            # A batch before this one failed after its commit (its partitions are held, and
            # read again from the Kafka offset): expected. Anything else is a bug, said loudly.
            unexpected = [g for g in gaps if (g.topic, g.partition) not in self._cut]
            if unexpected:
                self._read_again(unexpected, None)
        metrics.BATCH_SIZE.labels(self.spec.kind).observe(len(batch.records))
        metrics.BATCH_SECONDS.labels(self.spec.kind).observe(time.perf_counter() - batch.read_at)
        self._done(batch)

    def _observe_delay(self, batch: _Batch, before: Mapping[Hashable, int]) -> None:
        """Observe the delay from the batch's oldest record not applied before to now, its
        commit: once per batch (a C-level pass over timestamps), not per record."""
        records = batch.records
        if any(head.offset < before[tp] for tp, head in batch.heads.items()):
            # Replays of applied records (rare: a cached partition's unconfirmed tail).
            records = [r for r in records if r.offset >= before[(r.topic, r.partition)]]
        if not records:
            return
        if not batch.forwarded:
            oldest = min(map(attrgetter("timestamp"), records))
        else:  # some records carry their origin
            oldest = min(first_of(r).timestamp for r in records)
        if oldest >= 0:  # -1: a record without a timestamp (pre-0.10 message format)
            delay = max(0.0, time.time() - oldest / 1000)
            metrics.END_TO_END.labels(self.spec.kind).observe(delay)

    def _drop_cut(self, batch: _Batch) -> None:
        """Drop records of partitions held from an offset on, until they are read again."""
        if not self._cut:
            return
        cuts = self._cut

        def read_before_the_hold(record: Any) -> bool:
            tp = (record.topic, record.partition)
            cut = cuts.get(tp)
            if cut is None:
                return False
            if record.offset > cut:
                return True  # read before the hold: it comes again once the hold ends
            del cuts[tp]  # read again from the held record (or before): go on
            return False

        self._drop(batch, read_before_the_hold)

    def _drop(self, batch: _Batch, dropping: Callable[[Any], bool]) -> None:
        """Take the records ``dropping`` says out of ``batch`` (counted: they are read again)."""
        kept_records, kept_decisions = [], []
        gone: Counter[tuple[str, int]] = Counter()
        for record, decision in zip(batch.records, batch.decisions, strict=True):
            if dropping(record):
                gone[(record.topic, record.partition)] += 1
                continue
            kept_records.append(record)
            kept_decisions.append(decision)
        if gone:
            batch.records, batch.decisions = kept_records, kept_decisions
            batch.heads = heads_of(kept_records)
            for tp, count in gone.items():
                discarded(tp, count, HELD)

    async def _dead_letter(
        self,
        decisions: Sequence[Decision],
        refused: Mapping[Position, Rejection],
        sent: set[Position],
    ) -> None:
        """Send the dead letters of first deliveries not sent yet (before their commit)."""
        stored = self.mirror.positions
        due = []
        for decision in [*decisions, *refused.values()]:
            if not isinstance(decision, Rejection):
                continue
            record = decision.record
            position = _position(record)
            if position in sent:
                continue
            if record.offset < stored.get((record.topic, record.partition), 0):
                continue  # applied (and dead-lettered) by an earlier transaction
            due.append(decision)
            sent.add(position)
        if due:
            await _retrying(
                f"write {len(due)} dead letters to {self.dlq_topic}",
                lambda: self.dead_letters.write(self.dlq_topic, due),
            )

    def _hold_from(self, exc: DeadLetterRefused, batch: _Batch) -> None:
        """Hold the partition of a dead letter the broker refuses, from that record on."""
        bad = exc.rejection.record
        tp = (bad.topic, bad.partition)
        delay = self._backoff.next(tp)
        log.error(
            "%s; holding %s[%d] from offset %d for %.0f s, then trying again (raise the "
            "dead-letter topic's max.message.bytes, or fix the record's producer)",
            exc,
            bad.topic,
            bad.partition,
            bad.offset,
            delay,
            extra={"topic": bad.topic, "partition": bad.partition, "offset": bad.offset},
        )
        metrics.DEAD_LETTER_FAILURES.labels(bad.topic, str(bad.partition)).inc()
        self._hold(tp, DEAD_LETTER, delay, bad.offset)
        self._drop(batch, lambda r: (r.topic, r.partition) == tp and r.offset >= bad.offset)

    def _read_again(self, gaps: Sequence[Gap], batch: _Batch | None) -> None:
        """Read partitions whose batch did not follow on from the stored offsets again from
        there (nothing of theirs was stored), dropping their records from ``batch``."""
        for gap in gaps:
            key = (gap.topic, gap.partition)
            self._cut[key] = min(gap.stored, self._cut.get(key, gap.stored))
        _read_again(self.handoff, gaps)
        if batch is not None:
            gone = {(g.topic, g.partition) for g in gaps}
            self._drop(batch, lambda r: (r.topic, r.partition) in gone)

    def _hold_failed(
        self,
        records: Sequence[Any],
        exc: BaseException,
        doing: str = "applying",
        *,
        bug: bool = False,
    ) -> None:
        first: dict[tuple[str, int], int] = {}
        for r in records:
            tp = (r.topic, r.partition)
            first[tp] = min(r.offset, first.get(tp, r.offset))
        _say_failed(doing, len(records), self.spec.kind, first, exc, bug=bug)
        for tp, offset in first.items():
            self._hold(tp, FAILED, FAILED_HOLD_SECONDS, offset)

    def _hold(self, key: tuple[str, int], reason: str, seconds: float, cut: int) -> None:
        """Hold ``key`` a while; its records after ``cut`` already on their way are dropped."""
        self._cut[key] = min(cut, self._cut.get(key, cut))
        _hold(self.handoff, key, reason, seconds)


async def _write_cache(cache: EntityCache, result: BatchResult) -> None:
    """Write a batch's committed states to ``cache`` and its changelog, confirmed."""
    started = time.perf_counter()
    entries = []
    for key, (row, _) in result.states.items():
        # Placed by the key's hash, where reads look: a record's own partition is not always
        # its key's (partitions added, producers with another partitioner, records keyed
        # otherwise). The rows come with their public columns only: encoded as they are.
        entries.append(Entry(cache_key(key), None if row is None else encode_value(row), None))
    try:
        await cache.put(entries)
    except KafkaError as exc:
        raise CacheError(f"cannot write to {cache.changelog} yet: {exc!r}") from exc
    metrics.CACHE_SECONDS.labels(cache.spec.kind).observe(time.perf_counter() - started)


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
        self.batch: Taken | None = None
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
                sent = await _retrying(what, functools.partial(self._forward, batch))
            except MirrorError as exc:  # not retriable: no retry can fix it soon
                self._hold_failed(batch, exc)
            except Exception as exc:  # a bug: say where, hold the partitions, read them again
                self._hold_failed(batch, exc, bug=True)
            else:
                gaps = self.applied.note(sent, batch.starts)
                if gaps:
                    _read_again(self.handoff, gaps)
                self._backoff.passed((r.topic, r.partition) for r in sent)
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

        As record batches built per target partition (``streams.record_batches``), each at
        most FORWARD_BATCH_BYTES and what the target takes; records whose header keys
        aiokafka's builder cannot write (``streams.aiokafka_fixes``) are sent one by one, the
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
                await batches.add(partition, key, value, None, headers, size)
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
        cut: dict[tuple[str, int], int] = {}
        kept = []
        for record in batch:
            tp = (record.topic, record.partition)
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
        key = (record.topic, record.partition)
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
        _hold(self.handoff, key, FORWARD, delay)

    def _hold_failed(self, batch: Sequence[Any], exc: BaseException, *, bug: bool = False) -> None:
        tps = sorted({(r.topic, r.partition) for r in batch})
        _say_failed("forwarding", len(batch), self.spec.kind, tps, exc, bug=bug)
        for tp in tps:
            _hold(self.handoff, tp, FAILED, FAILED_HOLD_SECONDS)


class HoldBackoff:
    """How long a partition is held for a record the broker will not take: 5 s, doubling each
    time it is held again up to 60 s, and 5 s again once a batch of it has gone through."""

    def __init__(self) -> None:
        self._last: dict[Hashable, float] = {}

    def next(self, key: Hashable) -> float:
        """Return how long to hold ``key`` now (and remember it)."""
        delay = min(max(5.0, self._last.get(key, 0.0) * 2), 60.0)
        self._last[key] = delay
        return delay

    def passed(self, keys: Iterable[Hashable]) -> None:
        """Start over for ``keys``, whose records went through (nothing to do when none was
        ever held: the usual case, on every batch)."""
        if self._last:
            for key in keys:
                self._last.pop(key, None)


def _say_ahead(records: Sequence[Any], limit: int, seconds: float) -> None:
    """Say in one line that records are stamped ahead of this worker's clock; count them."""
    first = records[0]
    ahead = (first_of(first).timestamp - limit) / 1000 + seconds
    log.warning(
        "%s[%d]@%d%s is stamped %.0f s ahead of this worker's clock: its version counts it "
        "%.0f s ahead (MAX_TIMESTAMP_AHEAD), so it holds its entity against events from other "
        "partitions no longer than that; later events of its partition apply anyway. Fix the "
        "producer's clock",
        first.topic,
        first.partition,
        first.offset,
        f" and {len(records) - 1} more records of the batch" if len(records) > 1 else "",
        ahead,
        seconds,
        extra={"topic": first.topic, "partition": first.partition, "offset": first.offset},
    )
    counts = Counter(r.topic for r in records)
    for topic, count in counts.items():
        metrics.STAMPED_AHEAD.labels(topic).inc(count)


def _say_failed(
    doing: str,
    count: int,
    kind: str,
    tps: Iterable[tuple[str, int]],
    exc: BaseException,
    *,
    bug: bool = False,
) -> None:
    """Say in one line that a batch failed for good and its partitions are held (with the
    traceback when it is a bug of ours, not an error we raise on purpose); count it."""
    log.error(
        "%s %d %s records of %s failed and a retry will not fix it: %s; holding "
        "these partitions for %.0f s, then reading them again",
        doing,
        count,
        kind,
        ", ".join(f"{t}[{p}]" for t, p in sorted(tps)),
        exc if not bug else f"{type(exc).__name__}: {exc}",
        FAILED_HOLD_SECONDS,
        exc_info=exc if bug else None,
    )
    metrics.BATCH_FAILURES.labels(kind).inc()


def _read_again(handoff: Handoff, gaps: Sequence[Gap]) -> None:
    """Say that batches did not follow on from the noted offsets (a bug: one error line each,
    ``mirror_offset_gaps_total``) and read their partitions again from there."""
    from aiokafka import TopicPartition

    for gap in gaps:
        log.error(
            "%s; nothing of it was applied and the partition is read again from there. This is "
            "a bug: please report it with this line",
            gap,
            extra={"topic": gap.topic, "partition": gap.partition},
        )
        metrics.OFFSET_GAPS.labels(gap.topic, str(gap.partition)).inc()
    handoff.forget([TopicPartition(g.topic, g.partition) for g in gaps])


def _hold(handoff: Handoff, key: tuple[str, int], reason: str, seconds: float) -> None:
    """Stop reading ``key`` for ``seconds``; it is positioned again after, and read anew."""
    from aiokafka import TopicPartition

    tp = TopicPartition(*key)
    handoff.forget([tp])
    handoff.hold(tp, reason, until=time.monotonic() + seconds)


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
    new_key = record.key if key is None else str(key).encode()
    own = [(k, v if isinstance(v, bytes) else b"") for k, v in (record.headers or ())]
    return new_key, record.value, [*own, (ORIGIN_HEADER, first_of(record).header())]


async def _retrying(what: str, attempt: Callable[[], Awaitable[T]]) -> T:
    """Await ``attempt()`` until it succeeds, with backoff while its errors are retriable.

    A retriable error (the database or the broker unreachable) holds the batch: the
    back-pressure a failing dependency should cause. Any other error is raised to the caller.
    """
    backoff = Backoff()
    tries = 0
    while True:
        tries += 1
        try:
            return await attempt()
        except MirrorError as exc:
            if not exc.retriable:
                raise
            delay = backoff.next()
            log.warning("%s failed (attempt %d), retrying in %.1fs: %s", what, tries, delay, exc)
            metrics.BATCH_RETRIES.labels(what.split(" ", 1)[0]).inc()
        await asyncio.sleep(delay)


async def _hand_on(queue: asyncio.Queue[_Batch], batch: _Batch) -> None:
    """Give ``batch`` to the next stage and wait until it has taken it.

    So a stage starts its next batch only once the one it handed on is taken: each stage holds
    one batch and none waits in between, which keeps three batches a lane in memory, not five.
    """
    await queue.put(batch)
    await queue.join()


async def _take(queue: asyncio.Queue[_Batch]) -> _Batch:
    """Take the next batch from the stage before (releasing it, see :func:`_hand_on`)."""
    batch = await queue.get()
    queue.task_done()
    return batch


def _position(record: Any) -> Position:
    return (record.topic, record.partition, record.offset)
