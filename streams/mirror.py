"""Apply batches of source records to the SQL store: route, guard, write, count outcomes.

This is the one code path every input adapter (Faust agents, the MSK/Lambda handler,
the command line) goes through, so the changeType semantics live in exactly one place.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from models.registry import EntitySpec, Registry
from models.store import SqlStore
from streams.guard import resolve
from streams.routing import (
    Decision,
    Outcome,
    Rejection,
    RejectReason,
    SourceRecord,
    route,
)

log = logging.getLogger(__name__)


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
        topics = sorted({r.topic for r in records})
        with self.store.transaction(_describe(spec, records)) as tx:
            stored: dict[tuple[str, int], int] = {}
            for topic in topics:
                partitions = [r.partition for r in records if r.topic == topic]
                for p, o in tx.next_offsets(self.group, topic, partitions).items():
                    stored[(topic, p)] = o
            decisions = [route(r, spec) for r in records]
            fresh = [
                d
                for d in decisions
                if d.record.offset >= stored.get((d.record.topic, d.record.partition), 0)
            ]
            keys = list({d.key: None for d in fresh if not isinstance(d, Rejection)})
            plan = resolve(fresh, tx.current(spec, keys))
            refused = {r.key: r.message for r in tx.write(spec, plan)}
            outcome_of = {
                id(decision.record): (decision, outcome) for decision, outcome in plan.outcomes
            }
            result = BatchResult()
            for decision in decisions:
                if id(decision.record) not in outcome_of:
                    result.results.append(
                        RecordResult(decision.record, Outcome.SKIPPED, decision, replayed=True)
                    )
                    continue
                final, outcome = outcome_of[id(decision.record)]
                if (
                    not isinstance(final, Rejection)
                    and outcome is Outcome.APPLIED
                    and final.key in refused
                ):
                    # The key's write was refused: every applied event of it is rejected.
                    final = Rejection(
                        RejectReason.STORE_REFUSED, refused[final.key], final.record, "StoreError"
                    )
                    outcome = Outcome.REJECTED
                result.results.append(RecordResult(final.record, outcome, final))
            for topic in topics:
                ends: dict[int, int] = {}
                for r in records:
                    if r.topic == topic:
                        ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
                tx.advance(self.group, topic, ends)
            counts = Counter(
                (item.record.topic, item.outcome.value)
                for item in result.results
                if not item.replayed
            )
            tx.add_counts(self.group, counts)
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


def _describe(spec: EntitySpec, records: Sequence[SourceRecord]) -> str:
    first, last = records[0], records[-1]
    return (
        f"apply {len(records)} {spec.kind} records "
        f"({first.topic}[{first.partition}]@{first.offset} .. "
        f"[{last.partition}]@{last.offset})"
    )
