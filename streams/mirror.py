"""Apply batches of source records to the SQL store: route, guard, write, count outcomes.

This is the one code path every input adapter (Faust agents, the MSK/Lambda handler,
the command line) goes through, so the changeType semantics live in exactly one place.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import orjson

from models.registry import EntitySpec, Registry
from models.store import SqlStore
from streams.guard import Plan, resolve
from streams.routing import (
    Decision,
    EntityKey,
    Outcome,
    Rejection,
    RejectReason,
    SourceRecord,
    route_batch,
)

log = logging.getLogger(__name__)

#: orjson parses the ~450-byte benchmark events about four times faster than json.loads;
#: the pure core takes the parser as an argument so it still imports only the stdlib.
fast_loads = orjson.loads


@dataclass(frozen=True, slots=True)
class RecordResult:
    """The outcome of one consumed record, with its decision."""

    record: SourceRecord
    outcome: Outcome
    decision: Decision
    replayed: bool = False
    """True when the record was below the stored offset: its outcome was counted when it
    was first applied, and this delivery changed nothing."""


@dataclass(slots=True)
class BatchResult:
    """Outcomes of one applied batch, in consumption order."""

    results: list[RecordResult] = field(default_factory=list)

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

    def apply(self, spec: EntitySpec, records: Sequence[SourceRecord]) -> BatchResult:
        """Apply one batch of records of one entity in one transaction."""
        if not records:
            return BatchResult()
        decisions = route_batch(records, spec, fast_loads)  # pure work, before any lock
        next_offsets = _next_offsets(records)
        with self.store.transaction(_describe(spec, records)) as tx:
            stored = {
                (topic, partition): offset
                for topic, ends in next_offsets.items()
                for partition, offset in tx.next_offsets(self.group, topic, list(ends)).items()
            }
            fresh = [
                d
                for d in decisions
                if d.record.offset >= stored.get((d.record.topic, d.record.partition), 0)
            ]
            keys = list({d.key: None for d in fresh if not isinstance(d, Rejection)})
            plan = resolve(fresh, tx.current(spec, keys))
            refused = {r.key: r.message for r in tx.write(spec, plan)}
            result = _results(decisions, plan, refused)
            for topic, ends in next_offsets.items():
                tx.advance(self.group, topic, ends)
            tx.add_counts(self.group, result.first_delivery_counts())
        self._note(result)
        return result

    def _note(self, result: BatchResult) -> None:
        """Count and log a committed batch's outcomes."""
        for item in result.results:
            if item.replayed:
                self.replayed += 1
                continue
            self.counts[(item.record.topic, item.outcome)] += 1
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


def _next_offsets(records: Sequence[SourceRecord]) -> dict[str, dict[int, int]]:
    """Return, per topic and partition, the offset after the batch's last record."""
    ends: dict[str, dict[int, int]] = {}
    for r in records:
        per_topic = ends.setdefault(r.topic, {})
        per_topic[r.partition] = max(per_topic.get(r.partition, 0), r.offset + 1)
    return ends


def _results(
    decisions: Sequence[Decision], plan: Plan, refused: Mapping[EntityKey, str]
) -> BatchResult:
    """Give every decision its outcome; decisions the plan never saw were replays."""
    outcome_of = {id(decision.record): (decision, outcome) for decision, outcome in plan.outcomes}
    result = BatchResult()
    for decision in decisions:
        if id(decision.record) not in outcome_of:
            result.results.append(
                RecordResult(decision.record, Outcome.SKIPPED, decision, replayed=True)
            )
            continue
        final, outcome = outcome_of[id(decision.record)]
        if not isinstance(final, Rejection) and outcome is Outcome.APPLIED and final.key in refused:
            # The key's write was refused: every applied event of it is rejected.
            final = Rejection(
                RejectReason.STORE_REFUSED, refused[final.key], final.record, "StoreError"
            )
            outcome = Outcome.REJECTED
        result.results.append(RecordResult(final.record, outcome, final))
    return result


def _describe(spec: EntitySpec, records: Sequence[SourceRecord]) -> str:
    first, last = records[0], records[-1]
    return (
        f"apply {len(records)} {spec.kind} records "
        f"({first.topic}[{first.partition}]@{first.offset} .. "
        f"[{last.partition}]@{last.offset})"
    )
