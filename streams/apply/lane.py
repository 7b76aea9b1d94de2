"""The order of one batch's effects, in one function: :meth:`BatchLane.carry`.

Read it top to bottom: route, dead letters, one SQL transaction, the cache, the offsets noted as
applied, and where the Kafka commit happens. Everything else in this module is a step it calls
or the bookkeeping of batches on their way.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from aiokafka.errors import KafkaError

from models.registry import EntitySpec
from streams.apply.applied_offsets import AppliedOffsets
from streams.apply.deadletters import DeadLetterRefused, DeadLetterWriter
from streams.apply.holds import (
    DEAD_LETTER,
    FAILED,
    FAILED_HOLD_SECONDS,
    HoldBackoff,
    hold,
    read_again,
    say_failed,
)
from streams.apply.retrying import retrying
from streams.apply.sql_applier import BatchResult, SqlApplier, fast_loads
from streams.core.decisions import Decision, Rejection
from streams.core.errors import (
    CacheError,
    MirrorError,
    OffsetGap,
    StoreRefusals,
)
from streams.core.positions import Gap
from streams.core.records import Partition, first_of, partition_of
from streams.core.routing import route_batch, stamped_ahead
from streams.core.staleness import Head
from streams.intake.feed import Feed, heads_of, held_heads
from streams.intake.handoff import HELD, Handoff, discarded
from streams.ops import metrics
from tables.cache import EntityCache, Entry, cache_key, encode_value

log = logging.getLogger(__name__)


Position = tuple[str, int, int]


@dataclass(slots=True, eq=False)
class _Batch:
    """One batch on its way through the steps of :meth:`BatchLane.carry`."""

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


@dataclass(slots=True)
class _Turns:
    """Whose turn it is at each step of a lane: one batch at a time in each, in batch order."""

    routing: asyncio.Lock
    """Held from taking a batch from the feed until it has the applying turn."""
    applying: asyncio.Lock
    """Held through the dead letters and the transaction, until the finishing turn."""
    finishing: asyncio.Lock
    """Held through the cache and the offsets."""
    wanted: asyncio.Event
    """Set while the applying turn is free: the feed gives the next batch then, whatever its
    size (or once full)."""

    async def apply_next(self) -> None:
        """Wait for the applying turn, then give up the routing turn."""
        await self.applying.acquire()
        self.wanted.clear()
        self.routing.release()

    def applied(self) -> None:
        """Give up the applying turn (the batch went no further)."""
        self.applying.release()
        self.wanted.set()

    async def finish_next(self) -> None:
        """Wait for the finishing turn, then give up the applying turn."""
        await self.finishing.acquire()
        self.applied()


class BatchLane:
    """Carries one entity's batches (one lane of them) through their effects, in the order
    of :meth:`carry`: routing (pure Python), the SQL transaction (mostly waiting on the
    database), the cache with the offsets (mostly waiting on the broker), one batch at a time
    in each, in batch order."""

    def __init__(
        self,
        mirror: SqlApplier,
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
        self._held_from: dict[Partition, int] = {}
        """Partitions held from an offset on: their later records still on the way are dropped."""
        self.in_flight: list[_Batch] = []
        """The batches on their way, oldest first."""
        self.feed: Feed | None = None
        """The feed :meth:`run` takes batches from."""
        self.idle = asyncio.Event()
        """Set when no batch is on its way (a revocation waits for it)."""
        self.idle.set()
        self.wanted = asyncio.Event()
        """Set while the SQL step waits for a batch: the next one is taken from the feed then,
        whatever its size (or once full): no fixed wait at low rates, full batches under load."""

    async def run(self, feed: Feed, batch_size: int, linger: float) -> None:
        """Take batches from ``feed`` and :meth:`carry` each through its effects, until
        cancelled.

        Each batch is a task of its own, and takes each step's turn in the order it was taken
        (``asyncio.Lock`` wakes its waiters first come, first served), so the order of effects
        holds for every batch and across batches. A step that fails on a batch holds the
        batch's partitions and reads them again from the stored offsets (:meth:`_failed`); if
        a step ever raises past that (a bug), every batch on its way is given up the same way
        before the error goes on (nothing is dropped: what was taken is read again).
        """
        self.feed = feed
        self.in_flight = []
        self.idle.set()
        self.wanted.set()
        turns = _Turns(asyncio.Lock(), asyncio.Lock(), asyncio.Lock(), self.wanted)
        try:
            async with asyncio.TaskGroup() as lane:
                while True:
                    await turns.routing.acquire()  # the batch before has left step 1
                    records = await feed.take(batch_size, linger, self.wanted)
                    batch = _Batch(records, time.perf_counter(), records.heads, records.starts)
                    self._started(batch)
                    lane.create_task(self.carry(batch, turns))
        except BaseExceptionGroup as errors:  # a step raised past its own handling: a bug
            raise errors.exceptions[0] from None
        finally:
            self._give_up_in_flight()

    async def carry(self, batch: _Batch, turns: _Turns) -> None:
        """Carry one batch of one entity's records (several partitions, each in order) through
        its effects, in this order.

        A batch leaves a step only once the step after is free (it waits for that step's
        turn, then gives up its own): batch *n+1* is routed while batch *n* is in the database
        and batch *n-1* reaches the changelog, and at most three batches of a lane are on
        their way.

        A crash between two steps repeats the later ones when the batch is read again: a dead
        letter may be sent twice, a replay changes nothing in SQL and rewrites the cache, and
        the Kafka offset only lags. Errors that a retry can fix (the database or the broker
        unreachable) are retried with backoff, holding the batch (back-pressure); an error no
        retry can fix holds the batch's partitions for a while with one error line saying what
        failed, and they are read again after.
        """
        # 1. Route every record (pure: ``streams.core.routing``), in a thread: rejections are
        #    known before any SQL.
        try:
            await self._route(batch)
        except Exception as exc:  # a bug: say where, hold the partitions, read them again
            turns.routing.release()
            self._failed("routing", batch, exc)
            return
        await turns.apply_next()
        # 2. Dead letters of the records rejected for the first time, confirmed by the broker
        #    before the transaction that moves their partition's stored offset past them. One
        #    the broker will never take (too large) holds its partition from that record on.
        # 3. One SQL transaction applies the batch with its stored offsets and outcome counts
        #    (``streams.apply.sql_applier``). A row the database refuses rolls it back; the row is
        #    dead-lettered (step 2) and the transaction runs again without it.
        try:
            committed = await self._dead_letter_and_commit(batch)
        except BaseException:
            turns.applied()
            raise
        if not committed:
            turns.applied()
            self._done(batch)
            return
        await turns.finish_next()
        try:
            # 4. The cache, after the commit: the committed state of the batch's keys goes to
            #    the changelog, confirmed, then to this worker's copy; so the cache never
            #    shows state the database does not have.
            await self._write_cache(batch)
            # 5. The batch's offsets are noted as applied (``AppliedOffsets``), only now.
            self._note_applied(batch)
        except Exception as exc:  # committed in SQL; the cache and offsets are not done
            self._failed("caching", batch, exc)
        finally:
            turns.finishing.release()
        # 6. The Kafka commit is not per batch: the worker's commit timer commits the noted
        #    offsets every commit interval, and a revocation commits them before its
        #    partitions go (``AppliedOffsets.commit``). Nothing else sends, writes or commits
        #    on a batch's behalf: the agents (``streams.apply.agents``) only build lanes
        #    (and forwarders, ``streams.apply.forwarder``: the forwarded path's order) and hand
        #    them feeds.

    def _failed(self, doing: str, batch: _Batch, exc: Exception) -> None:
        """Hold the partitions of a batch a step failed on (a bug: its traceback is logged),
        to read them again from the stored offsets (the Kafka offset, for the cache, of a
        cached topic); the batch is done."""
        self._hold_failed(batch.records, exc, doing, bug=True)
        self._done(batch)

    def _give_up_in_flight(self) -> None:
        """Read the partitions of every batch on its way again (the lane is gone)."""
        from aiokafka import TopicPartition

        tps = {partition_of(r) for batch in self.in_flight for r in batch.heads.values()}
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
            cut = self._held_from.get(partition_of(record))
            if cut is not None and record.offset > cut:
                continue  # dropped when it reaches the database step
            yield tp, Head(record.offset, self._first_timestamp(record))

    def _first_timestamp(self, record: Any) -> int:
        """Return where ``record`` was first produced, as the core sees it (ms)."""
        if self.prepare is not None:
            record = self.prepare([record])[0]
        return first_of(record).timestamp

    async def _route(self, batch: _Batch) -> None:
        """Step 1: route every record (pure), with timestamps believed up to
        MAX_TIMESTAMP_AHEAD past this worker's clock."""
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

    async def _dead_letter_and_commit(self, batch: _Batch) -> bool:
        """Steps 2 and 3: dead letters, then the transaction, again without the rows the
        database refuses; False when nothing is left to finish."""
        self._drop_cut(batch)
        stored = self.mirror.stored_offsets
        before = {tp: stored.get(partition_of(r), 0) for tp, r in batch.heads.items()}
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
                batch.result = await retrying(
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

    async def _write_cache(self, batch: _Batch) -> None:
        """Step 4: the committed states of the batch's keys to the cache, confirmed."""
        result = batch.result
        assert result is not None
        cache = self.cache
        if cache is not None:
            await retrying(
                f"write {len(result.states)} {self.spec.kind} entries to {cache.changelog}",
                functools.partial(_write_cache, cache, result),
            )

    def _note_applied(self, batch: _Batch) -> None:
        """Step 5: note the batch's offsets as applied; the batch is done."""
        self._backoff.passed(batch.heads)
        gaps = self.applied.note(batch.records, batch.starts)
        if gaps:
            # A batch before this one failed after its commit (its partitions are held, and
            # read again from the Kafka offset): expected. Anything else is a bug, said loudly.
            unexpected = [g for g in gaps if partition_of(g) not in self._held_from]
            if unexpected:
                self._read_again(unexpected, None)
        metrics.BATCH_RECORDS.labels(self.spec.kind).observe(len(batch.records))
        metrics.BATCH_SECONDS.labels(self.spec.kind).observe(time.perf_counter() - batch.read_at)
        self._done(batch)

    def _observe_delay(self, batch: _Batch, before: Mapping[Hashable, int]) -> None:
        """Observe the delay from the batch's oldest record not applied before to now, its
        commit: once per batch (a C-level pass over timestamps), not per record."""
        records = batch.records
        if any(head.offset < before[tp] for tp, head in batch.heads.items()):
            # Replays of applied records (rare: a cached partition's unconfirmed tail).
            records = [r for r in records if r.offset >= before[partition_of(r)]]
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
        if not self._held_from:
            return
        cuts = self._held_from

        def read_before_the_hold(record: Any) -> bool:
            tp = partition_of(record)
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
        gone: Counter[Partition] = Counter()
        for record, decision in zip(batch.records, batch.decisions, strict=True):
            if dropping(record):
                gone[partition_of(record)] += 1
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
        stored = self.mirror.stored_offsets
        due = []
        for decision in [*decisions, *refused.values()]:
            if not isinstance(decision, Rejection):
                continue
            record = decision.record
            position = _position(record)
            if position in sent:
                continue
            if record.offset < stored.get(partition_of(record), 0):
                continue  # applied (and dead-lettered) by an earlier transaction
            due.append(decision)
            sent.add(position)
        if due:
            await retrying(
                f"write {len(due)} dead letters to {self.dlq_topic}",
                lambda: self.dead_letters.write(self.dlq_topic, due),
            )

    def _hold_from(self, exc: DeadLetterRefused, batch: _Batch) -> None:
        """Hold the partition of a dead letter the broker refuses, from that record on."""
        bad = exc.rejection.record
        tp = partition_of(bad)
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
        self._drop(batch, lambda r: partition_of(r) == tp and r.offset >= bad.offset)

    def _read_again(self, gaps: Sequence[Gap], batch: _Batch | None) -> None:
        """Read partitions whose batch did not follow on from the stored offsets again from
        there (nothing of theirs was stored), dropping their records from ``batch``."""
        for gap in gaps:
            key = partition_of(gap)
            self._held_from[key] = min(gap.stored, self._held_from.get(key, gap.stored))
        read_again(self.handoff, gaps)
        if batch is not None:
            gone = {partition_of(g) for g in gaps}
            self._drop(batch, lambda r: partition_of(r) in gone)

    def _hold_failed(
        self,
        records: Sequence[Any],
        exc: BaseException,
        doing: str = "applying",
        *,
        bug: bool = False,
    ) -> None:
        first: dict[Partition, int] = {}
        for r in records:
            tp = partition_of(r)
            first[tp] = min(r.offset, first.get(tp, r.offset))
        say_failed(doing, len(records), self.spec.kind, first, exc, bug=bug)
        for tp, offset in first.items():
            self._hold(tp, FAILED, FAILED_HOLD_SECONDS, offset)

    def _hold(self, key: Partition, reason: str, seconds: float, cut: int) -> None:
        """Hold ``key`` a while; its records after ``cut`` already on their way are dropped."""
        self._held_from[key] = min(cut, self._held_from.get(key, cut))
        hold(self.handoff, key, reason, seconds)


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


def _position(record: Any) -> Position:
    return (record.topic, record.partition, record.offset)
