"""Apply batches of source records to the SQL store: route, guard, write, count outcomes.

This is the one code path every input adapter (Faust agents, the MSK/Lambda handler,
the command line) goes through, so the changeType semantics live in exactly one place.
Work per record is kept to a few list and dict operations: a batch's outcomes are one list
aligned with its records, counted once per batch.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from models.registry import EntitySpec, Registry
from models.store import SqlStore
from streams.core.decisions import Decision, Outcome, Rejection, RejectReason
from streams.core.errors import BatchHookError, OffsetGap, StoreRefusals
from streams.core.guard import resolve
from streams.core.positions import offset_gaps
from streams.core.records import EntityKey, Partition, Record, partition_key
from streams.core.routing import Clock, lift_to_floor, route_batch
from streams.ops import metrics

log = logging.getLogger(__name__)

#: orjson parses the ~450-byte benchmark events about four times faster than json.loads;
#: the pure core takes the parser as an argument so it still imports only the stdlib.
fast_loads = orjson.loads

Position = tuple[str, int, int]


@dataclass(frozen=True, slots=True)
class RecordResult:
    """The outcome of one consumed record, with its decision."""

    record: Record
    outcome: Outcome
    decision: Decision
    replayed: bool = False
    """True when the record was below the stored offset: its outcome was counted when it
    was first applied, and this delivery changed nothing."""


@dataclass(slots=True)
class BatchResult:
    """Outcomes of one applied batch, aligned with its records (consumption order)."""

    decisions: list[Decision] = field(default_factory=list)
    """The final decision of each record (a row the database refused becomes a rejection)."""
    outcomes: list[Outcome | None] = field(default_factory=list)
    """Each record's outcome; None for a replay (below the stored offset: no effect)."""
    states: dict[EntityKey, tuple[Mapping[str, Any] | None, Record]] = field(default_factory=dict)
    """With ``read_back``: the committed row (its public columns; None: absent) of the keys the
    batch changed, and
    of the keys its replays name (the cache may have missed them), each with a record that
    named it."""

    @property
    def results(self) -> list[RecordResult]:
        """Return one :class:`RecordResult` per record (adapters that answer per record)."""
        return [
            RecordResult(d.record, Outcome.SKIPPED if o is None else o, d, replayed=o is None)
            for d, o in zip(self.decisions, self.outcomes, strict=True)
        ]

    def count(self, outcome: Outcome) -> int:
        """Count first deliveries with ``outcome`` (replays are not counted)."""
        return self.outcomes.count(outcome)

    def first_delivery_counts(self) -> Counter[tuple[str, str]]:
        """Count first deliveries per (topic, outcome), as stored with the batch."""
        counts: Counter[tuple[str, str]] = Counter()
        topics = {d.record.topic for d in self.decisions}
        if len(topics) == 1:
            (topic,) = topics
            for outcome, n in Counter(self.outcomes).items():
                if outcome is not None:
                    counts[(topic, outcome.value)] = n
            return counts
        for d, o in zip(self.decisions, self.outcomes, strict=True):
            if o is not None:
                counts[(d.record.topic, o.value)] += 1
        return counts


class SqlApplier:
    """Routes records through the core and applies them with the store, one batch at a time.

    ``apply`` either commits the batch (writes, stored offsets, outcome counts) and returns
    an outcome for every record, or raises a retriable :class:`~streams.core.errors.MirrorError`
    having committed nothing, so the caller retries the same batch without acknowledging
    its offsets.
    """

    def __init__(
        self,
        registry: Registry,
        store: SqlStore,
        *,
        group: str,
        topic_prefix: str = "",
        timestamps_ahead: float = 60.0,
    ) -> None:
        self.registry = registry
        self.store = store
        self.group = group
        self.topic_prefix = topic_prefix
        self.timestamps_ahead = timestamps_ahead
        """Seconds a record's timestamp is believed ahead of this process's clock
        (MAX_TIMESTAMP_AHEAD)."""
        #: Next offset to apply per (topic, partition), as committed by this process.
        self.stored_offsets: dict[Partition, int] = {}

    def clock(self) -> Clock:
        """Return how far timestamps are believed now (``streams.core.routing.Clock``)."""
        return Clock(int((time.time() + self.timestamps_ahead) * 1000))

    def note_stored(self, partition: Partition, offset: int) -> None:
        """Note the offset stored for ``partition`` (read when it was positioned)."""
        self.stored_offsets[partition] = offset

    def source_topic(self, spec: EntitySpec) -> str:
        """Return the real topic name of ``spec`` (with the configured prefix)."""
        return f"{self.topic_prefix}{spec.topic}"

    def entity_for_topic(self, topic: str) -> EntitySpec | None:
        """Return the entity mirrored from the real topic name ``topic``."""
        if self.topic_prefix:
            if not topic.startswith(self.topic_prefix):
                return None
            topic = topic[len(self.topic_prefix) :]
        return self.registry.by_topic(topic)

    def apply(
        self,
        spec: EntitySpec,
        records: Sequence[Record],
        *,
        read_back: bool = False,
        decisions: Sequence[Decision] | None = None,
        refused: Mapping[Position, Rejection] | None = None,
        starts: Mapping[Any, int] | None = None,
    ) -> BatchResult:
        """Apply one batch of records of one entity in one transaction.

        ``starts`` says, per partition, which stored offset the batch's records follow on
        (``streams.core.positions.Admission``): the transaction then stores a partition's next
        offset only if that is at most the offset stored before it, and otherwise raises
        :class:`~streams.core.errors.OffsetGap` having committed nothing. The worker always
        passes it; callers that read a topic in one loop of their own (the MSK adapter, the
        commands) may leave it out.

        ``decisions`` are the records' routes when the caller has them already. With
        ``refused`` (positions the database refused before, dead-lettered since), a row the
        database refuses now rolls the transaction back with
        :class:`~streams.core.errors.StoreRefusals`, so the caller can dead-letter it first; without
        it such a row is rejected in the same transaction. With ``read_back``, the result's
        ``states`` say what the cache needs.
        """
        if not records:
            return BatchResult()
        if decisions is None:
            # Pure work, before any lock.
            decisions = route_batch(records, spec, fast_loads, self.clock())
        decisions = list(decisions)
        if refused:
            for i, d in enumerate(decisions):
                r = d.record
                gone = refused.get((r.topic, r.partition, r.offset))
                if gone is not None:
                    decisions[i] = gone
        next_offsets = _next_offsets(records)
        started = time.perf_counter()
        keyed = _keyed_by_entity(decisions, range(len(decisions)))
        # The rows written come back for the cache, and for the model's batch hook.
        returning = read_back or spec.batch_hook is not None
        with self.store.transaction(_describe(spec, records)) as tx:
            # First, before any row lock: one key's writes must never run in two transactions
            # at once, and a batch not keyed by entity may share keys with other partitions.
            tx.serialize(spec, exclusive=not keyed)
            stored = {
                Partition(topic, partition): offset
                for topic, ends in next_offsets.items()
                for partition, offset in tx.next_offsets(self.group, topic, list(ends)).items()
            }
            if starts is not None:
                partitions = [(t, p) for t, ends in next_offsets.items() for p in ends]
                gaps = offset_gaps(partitions, starts, stored)
                if gaps:
                    raise OffsetGap(gaps)
            if spec.version_field is None:
                # Read here, not cached: a worker may have found the topic recreated since.
                floor = tx.version_floor(self.source_topic(spec))
                if floor is not None:
                    decisions = lift_to_floor(decisions, floor)
            fresh = _first_deliveries(decisions, stored)
            keys = list(
                {d.key: None for i in fresh if not isinstance(d := decisions[i], Rejection)}
            )
            # Partial updates need to know which keys have a row at all, so every version is
            # read; otherwise only versions at least as new as the batch's (see current()).
            at_least = None if spec.partial_updates else _oldest(decisions, fresh)
            current = tx.current(spec, keys, at_least=at_least)
            soft_deletes = spec.soft_delete is not None
            while True:
                # A write the database refuses is taken out and the batch resolved again, so
                # an older good event of the same key still applies, as it would one by one.
                # Writes that went through are repeated as no-ops (same version).
                plan = resolve([decisions[i] for i in fresh], current, soft_deletes=soft_deletes)
                refusals, written = tx.write(spec, plan, returning=returning)
                if not refusals:
                    break
                rejections = {
                    id(refusal.write.record): Rejection(
                        RejectReason.STORE_REFUSED,
                        refusal.message,
                        refusal.write.record,
                        "StoreError",
                    )
                    for refusal in refusals
                }
                if refused is not None:
                    raise StoreRefusals(list(rejections.values()))
                for i, d in enumerate(decisions):
                    rejection = rejections.get(id(d.record))
                    if rejection is not None:
                        decisions[i] = rejection
            if spec.batch_hook is not None and (written or plan.deletes):
                _call_batch_hook(spec, tx.conn, written, list(plan.deletes))
            outcomes: list[Outcome | None] = [None] * len(decisions)
            for i, (decision, outcome) in zip(fresh, plan.outcomes, strict=True):
                outcomes[i] = outcome
                if outcome is Outcome.REJECTED:  # the guard rejects a patch of a missing row
                    decisions[i] = decision
            result = BatchResult(decisions, outcomes)
            if read_back:
                result.states = self._states(tx, spec, plan, written, decisions, outcomes)
            for topic, ends in next_offsets.items():
                tx.advance(self.group, topic, ends)
            tx.add_counts(self.group, result.first_delivery_counts())
        metrics.SQL_SECONDS.labels(spec.kind).observe(time.perf_counter() - started)
        for topic, ends in next_offsets.items():
            for partition, offset in ends.items():
                key = Partition(topic, partition)
                self.stored_offsets[key] = max(offset, self.stored_offsets.get(key, 0))
        self._note(spec, result)
        return result

    def _states(
        self,
        tx: Any,
        spec: EntitySpec,
        plan: Any,
        written: Mapping[EntityKey, Mapping[str, Any]],
        decisions: Sequence[Decision],
        outcomes: Sequence[Outcome | None],
    ) -> dict[EntityKey, tuple[Mapping[str, Any] | None, Record]]:
        """Return what the cache needs: the rows the batch wrote, deleted keys, and the
        committed rows of keys named by replays or by upserts a newer row stopped."""
        states: dict[EntityKey, tuple[Mapping[str, Any] | None, Record]] = {}
        unknown: dict[EntityKey, Record] = {}
        for writes in (plan.upserts, plan.patches):
            for key, upsert in writes.items():
                row = written.get(key)
                if row is None:
                    unknown[key] = upsert.record
                else:
                    states[key] = (row, upsert.record)
        soft = spec.soft_delete is not None
        for key, delete in plan.deletes.items():
            # A soft delete keeps the row, marked: the cache holds what reads answer.
            states[key] = (written.get(key) if soft else None, delete.record)
        for d, o in zip(decisions, outcomes, strict=True):
            if o is None and not isinstance(d, Rejection) and d.key not in states:
                unknown.setdefault(d.key, d.record)
        if unknown:
            rows = tx.rows_of(spec, list(unknown))
            for key, record in unknown.items():
                states[key] = (rows.get(key), record)
        return states

    def _note(self, spec: EntitySpec, result: BatchResult) -> None:
        """Count (per batch, not per event: this is the hot path) and log the outcomes."""
        counts = result.first_delivery_counts()
        replayed = result.outcomes.count(None)
        for d, o in zip(result.decisions, result.outcomes, strict=True):
            if o is Outcome.REJECTED and isinstance(d, Rejection):
                log.error(
                    "%s",
                    d.message,
                    extra={
                        "topic": d.record.topic,
                        "partition": d.record.partition,
                        "offset": d.record.offset,
                        "reason": d.reason.value,
                    },
                )
        for (topic, outcome), n in counts.items():
            metrics.EVENTS.labels(spec.kind, topic, outcome).inc(n)
        if replayed:
            topic = result.decisions[0].record.topic
            metrics.REPLAYED.labels(spec.kind, topic).inc(replayed)


def _first_deliveries(decisions: Sequence[Decision], stored: Mapping[Partition, int]) -> list[int]:
    """Return the indexes of decisions at or past the stored offset, each position once.

    A record below its partition's stored offset was applied by an earlier transaction; a
    position seen twice in one batch (a record delivered again) is one record, applied and
    counted once.
    """
    fresh: list[int] = []
    last: dict[Partition, int] = {}
    seen: dict[Partition, set[int]] = {}
    for i, d in enumerate(decisions):
        r = d.record
        partition = partition_key(r)
        offset = r.offset
        if offset < stored.get(partition, 0):
            continue
        if offset > last.get(partition, -1):
            last[partition] = offset
            if partition in seen:
                seen[partition].add(offset)
            fresh.append(i)
            continue
        # A step back: a repeat, or an earlier offset (the MSK adapter orders by timestamp).
        offsets = seen.get(partition)
        if offsets is None:
            offsets = seen[partition] = {
                decisions[j].record.offset
                for j in fresh
                if (decisions[j].record.topic, decisions[j].record.partition) == partition
            }
        if offset in offsets:
            continue
        offsets.add(offset)
        fresh.append(i)
    return fresh


#: Below every version: a versionless delete needs the stored version, whatever it is.
_BOTTOM: tuple[int, int, int] = (-(2**63), -1, -1)


def _oldest(decisions: Sequence[Decision], fresh: Sequence[int]) -> dict[EntityKey, Any]:
    """Return the oldest version of each key among the fresh decisions."""
    oldest: dict[EntityKey, Any] = {}
    for i in fresh:
        d = decisions[i]
        if isinstance(d, Rejection):
            continue
        version = _BOTTOM if d.version is None else d.version
        known = oldest.get(d.key)
        if known is None or version < known:
            oldest[d.key] = version
    return oldest


def _keyed_by_entity(decisions: Sequence[Decision], indexes: Iterable[int]) -> bool:
    """Tell whether every record is keyed by its entity key (so each key has one partition)."""
    for i in indexes:
        d = decisions[i]
        if not isinstance(d, Rejection) and d.record.key != str(d.key).encode():
            return False
    return True


def _next_offsets(records: Sequence[Record]) -> dict[str, dict[int, int]]:
    """Return, per topic and partition, the offset after the batch's last record."""
    ends: dict[str, dict[int, int]] = {}
    for r in records:
        per_topic = ends.get(r.topic)
        if per_topic is None:
            per_topic = ends[r.topic] = {}
        offset = r.offset + 1
        if offset > per_topic.get(r.partition, 0):
            per_topic[r.partition] = offset
    return ends


def _describe(spec: EntitySpec, records: Sequence[Record]) -> str:
    first, last = records[0], records[-1]
    return (
        f"apply {len(records)} {spec.kind} records "
        f"({first.topic}[{first.partition}]@{first.offset} .. "
        f"[{last.partition}]@{last.offset})"
    )


def _call_batch_hook(
    spec: EntitySpec, conn: Any, written: Mapping[EntityKey, Any], deleted: list[EntityKey]
) -> None:
    """Call the model's ``on_batch`` in the batch's transaction; its failure is retriable."""
    assert spec.batch_hook is not None
    try:
        spec.batch_hook(conn, written, deleted)
    except Exception as exc:
        raise BatchHookError(
            f"{spec.model.__name__}.on_batch failed, the batch is retried: {exc!r}"
        ) from exc
