"""Apply batches of source records to the SQL store: route, fold, write, count outcomes.

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
from streams.errors import StoreError
from streams.routing import (
    Decision,
    Outcome,
    Rejection,
    RejectReason,
    SourceRecord,
    Write,
    route_batch,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RecordResult:
    """The outcome of one source record, with its decision."""

    record: SourceRecord
    outcome: Outcome
    decision: Decision


@dataclass(slots=True)
class BatchResult:
    """Outcomes of one applied batch, in consumption order."""

    results: list[RecordResult] = field(default_factory=list)

    @property
    def rejections(self) -> list[Rejection]:
        """Return the rejections of this batch."""
        return [r.decision for r in self.results if isinstance(r.decision, Rejection)]

    def count(self, outcome: Outcome) -> int:
        """Count records with ``outcome``."""
        return sum(1 for r in self.results if r.outcome is outcome)


class Mirror:
    """Routes records through the core and applies them with the store, one batch at a time.

    ``apply`` either commits the batch's writes and returns an outcome for every record, or
    raises a retriable :class:`~streams.errors.MirrorError` having applied nothing, so the
    caller can retry the same batch without acknowledging its offsets.
    """

    def __init__(self, registry: Registry, store: SqlStore, *, topic_prefix: str = "") -> None:
        self.registry = registry
        self.store = store
        self.topic_prefix = topic_prefix
        self.counts: Counter[tuple[str, Outcome]] = Counter()

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
        folded = route_batch(records, spec)
        refused = self._write(spec, list(folded.writes.values()))
        result = BatchResult()
        for decision in folded.decisions:
            if not isinstance(decision, Rejection) and decision.key in refused:
                rejection = refused[decision.key]
                if rejection.record is not decision.record:
                    # An earlier event of a refused key: folded into the refused write.
                    rejection = Rejection(
                        RejectReason.STORE_REFUSED,
                        rejection.detail,
                        decision.record,
                        rejection.error_type,
                    )
                decision = rejection
            outcome = Outcome.REJECTED if isinstance(decision, Rejection) else Outcome.APPLIED
            result.results.append(RecordResult(decision.record, outcome, decision))
        for item in result.results:
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
        return result

    def _write(self, spec: EntitySpec, writes: list[Write]) -> dict[object, Rejection]:
        """Write the batch; when the database refuses it, find the refused writes one by one.

        Returns the refused writes by key. A retriable error propagates with nothing applied.
        """
        try:
            self.store.apply(spec, writes)
            return {}
        except StoreError as exc:
            if exc.retriable or len(writes) == 1:
                if exc.retriable:
                    raise
                return {writes[0].key: _refusal(writes[0], exc)}
        refused: dict[object, Rejection] = {}
        for write in writes:
            try:
                self.store.apply(spec, [write])
            except StoreError as exc:
                if exc.retriable:
                    raise
                refused[write.key] = _refusal(write, exc)
        return refused


def _refusal(write: Write, exc: StoreError) -> Rejection:
    return Rejection(RejectReason.STORE_REFUSED, str(exc), write.record, type(exc).__name__)
