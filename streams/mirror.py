"""Apply batches of source records to the SQL store: route, guard, write, count outcomes.

This is the one code path every input adapter (Faust agents, the MSK/Lambda handler,
the command line) goes through, so the changeType semantics live in exactly one place.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from models.registry import EntitySpec, Registry
from models.store import SqlStore
from streams import metrics
from streams.errors import StoreRefusals
from streams.guard import Plan, resolve
from streams.routing import (
    Decision,
    EntityKey,
    Outcome,
    Record,
    Rejection,
    RejectReason,
    route_batch,
)

log = logging.getLogger(__name__)

#: orjson parses the ~450-byte benchmark events about four times faster than json.loads;
#: the pure core takes the parser as an argument so it still imports only the stdlib.
fast_loads = orjson.loads


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
    """Outcomes of one applied batch, in consumption order."""

    results: list[RecordResult] = field(default_factory=list)
    states: dict[EntityKey, dict[str, Any] | None] = field(default_factory=dict)
    """With ``read_back``: the committed row (None when absent) of every key the batch named,
    replays included, so a replayed batch can repair a cache that missed its first update."""

    @property
    def rejections(self) -> list[Rejection]:
        """Return the rejections of this batch."""
        return [r.decision for r in self.results if isinstance(r.decision, Rejection)]

    def count(self, outcome: Outcome) -> int:
        """Count first deliveries with ``outcome`` (replays are not counted)."""
        return sum(1 for r in self.results if r.outcome is outcome and not r.replayed)

    def first_delivery_counts(self) -> Counter[tuple[str, str]]:
        """Count first deliveries per (topic, outcome), as stored with the batch."""
        return Counter((r.record.topic, r.outcome.value) for r in self.results if not r.replayed)


class Mirror:
    """Routes records through the core and applies them with the store, one batch at a time.

    ``apply`` either commits the batch (writes, stored offsets, outcome counts) and returns
    an outcome for every record, or raises a retriable :class:`~streams.errors.MirrorError`
    having committed nothing, so the caller retries the same batch without acknowledging
    its offsets.
    """

    def __init__(
        self, registry: Registry, store: SqlStore, *, group: str, topic_prefix: str = ""
    ) -> None:
        self.registry = registry
        self.store = store
        self.group = group
        self.topic_prefix = topic_prefix
        #: Outcomes of this process (the durable totals are in the store).
        self.counts: Counter[tuple[str, Outcome]] = Counter()
        self.replayed = 0
        #: Next offset to apply per (topic, partition), as committed by this process.
        self.positions: dict[tuple[str, int], int] = {}

    def note_stored(self, partition: tuple[str, int], offset: int) -> None:
        """Note the offset stored for ``partition`` (read when it was positioned)."""
        self.positions[partition] = offset

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
        before_commit: Callable[[list[Rejection]], None] | None = None,
        *,
        read_back: bool = False,
        decisions: Sequence[Decision] | None = None,
        refused: Mapping[tuple[str, int, int], Rejection] | None = None,
    ) -> BatchResult:
        """Apply one batch of records of one entity in one transaction.

        ``decisions`` are the records' routes when the caller has them already. ``before_commit``
        gets the batch's new rejections inside the transaction, before it commits; if it
        raises, nothing is committed. With ``refused`` (positions the database refused before,
        dead-lettered since), a row the database refuses now rolls the transaction back with
        :class:`~streams.errors.StoreRefusals`, so the caller can dead-letter it first; without
        it such a row is rejected in the same transaction. With ``read_back``, the result's
        ``states`` hold the rows the transaction commits for every key the batch names (the
        agents put them in the cache after the commit).
        """
        if not records:
            return BatchResult()
        if decisions is None:
            decisions = route_batch(records, spec, fast_loads)  # pure work, before any lock
        if refused:
            decisions = [
                refused.get((d.record.topic, d.record.partition, d.record.offset), d)
                for d in decisions
            ]
        next_offsets = _next_offsets(records)
        started = time.perf_counter()
        with self.store.transaction(_describe(spec, records)) as tx:
            stored = {
                (topic, partition): offset
                for topic, ends in next_offsets.items()
                for partition, offset in tx.next_offsets(self.group, topic, list(ends)).items()
            }
            fresh = _first_deliveries(decisions, stored)
            keys = list({d.key: None for d in fresh if not isinstance(d, Rejection)})
            current = tx.current(spec, keys)
            rejected_here: dict[int, Rejection] = {}
            while True:
                # A write the database refuses is taken out and the batch resolved again, so
                # an older good event of the same key still applies, as it would one by one.
                # Writes that went through are repeated as no-ops (same version).
                plan = resolve([d for d in fresh if id(d.record) not in rejected_here], current)
                refusals = tx.write(spec, plan)
                if not refusals:
                    break
                if refused is not None:
                    raise StoreRefusals(
                        [
                            Rejection(
                                RejectReason.STORE_REFUSED,
                                refusal.message,
                                refusal.write.record,
                                "StoreError",
                            )
                            for refusal in refusals
                        ]
                    )
                for refusal in refusals:
                    rejected_here[id(refusal.write.record)] = Rejection(
                        RejectReason.STORE_REFUSED,
                        refusal.message,
                        refusal.write.record,
                        "StoreError",
                    )
            result = _results(decisions, plan, rejected_here)
            if read_back:
                named = list({d.key: None for d in decisions if not isinstance(d, Rejection)})
                rows = tx.rows_of(spec, named)
                result.states = {key: rows.get(key) for key in named}
            for topic, ends in next_offsets.items():
                tx.advance(self.group, topic, ends)
            tx.add_counts(self.group, result.first_delivery_counts())
            if before_commit is not None:
                fresh_rejections = [
                    r.decision
                    for r in result.results
                    if isinstance(r.decision, Rejection) and not r.replayed
                ]
                if fresh_rejections:
                    before_commit(fresh_rejections)
        metrics.SQL_SECONDS.labels(spec.kind).observe(time.perf_counter() - started)
        for topic, ends in next_offsets.items():
            for partition, offset in ends.items():
                key = (topic, partition)
                self.positions[key] = max(offset, self.positions.get(key, 0))
        self._note(spec, result)
        return result

    def _note(self, spec: EntitySpec, result: BatchResult) -> None:
        """Count (per batch, not per event: this is the hot path) and log the outcomes."""
        batch_counts: Counter[tuple[str, Outcome]] = Counter()
        replayed: Counter[str] = Counter()
        for item in result.results:
            if item.replayed:
                replayed[item.record.topic] += 1
                continue
            batch_counts[(item.record.topic, item.outcome)] += 1
            if isinstance(item.decision, Rejection):
                log.error(
                    "%s",
                    item.decision.message,
                    extra={
                        "topic": item.record.topic,
                        "partition": item.record.partition,
                        "offset": item.record.offset,
                        "reason": item.decision.reason.value,
                    },
                )
        self.counts.update(batch_counts)
        for (topic, outcome), n in batch_counts.items():
            metrics.EVENTS.labels(spec.kind, topic, outcome.value).inc(n)
        for topic, n in replayed.items():
            self.replayed += n
            metrics.REPLAYED.labels(spec.kind, topic).inc(n)


def _first_deliveries(
    decisions: Sequence[Decision], stored: Mapping[tuple[str, int], int]
) -> list[Decision]:
    """Keep decisions at or past the stored offset, each position once.

    A record below its partition's stored offset was applied by an earlier transaction; a
    position seen twice in one batch (Faust can deliver a record again around a rebalance)
    is one record, applied and counted once.
    """
    seen: set[tuple[str, int, int]] = set()
    fresh: list[Decision] = []
    for d in decisions:
        r = d.record
        position = (r.topic, r.partition, r.offset)
        if r.offset < stored.get((r.topic, r.partition), 0) or position in seen:
            continue
        seen.add(position)
        fresh.append(d)
    return fresh


def _next_offsets(records: Sequence[Record]) -> dict[str, dict[int, int]]:
    """Return, per topic and partition, the offset after the batch's last record."""
    ends: dict[str, dict[int, int]] = {}
    for r in records:
        per_topic = ends.setdefault(r.topic, {})
        per_topic[r.partition] = max(per_topic.get(r.partition, 0), r.offset + 1)
    return ends


def _results(
    decisions: Sequence[Decision], plan: Plan, refused: Mapping[int, Rejection]
) -> BatchResult:
    """Give every decision its outcome; decisions neither planned nor refused were replays."""
    outcome_of: dict[int, tuple[Decision, Outcome]] = {
        id(decision.record): (decision, outcome) for decision, outcome in plan.outcomes
    }
    for record_id, rejection in refused.items():
        outcome_of[record_id] = (rejection, Outcome.REJECTED)
    result = BatchResult()
    for decision in decisions:
        if id(decision.record) not in outcome_of:
            result.results.append(
                RecordResult(decision.record, Outcome.SKIPPED, decision, replayed=True)
            )
            continue
        final, outcome = outcome_of[id(decision.record)]
        result.results.append(RecordResult(final.record, outcome, final))
    return result


def _describe(spec: EntitySpec, records: Sequence[Record]) -> str:
    first, last = records[0], records[-1]
    return (
        f"apply {len(records)} {spec.kind} records "
        f"({first.topic}[{first.partition}]@{first.offset} .. "
        f"[{last.partition}]@{last.offset})"
    )
