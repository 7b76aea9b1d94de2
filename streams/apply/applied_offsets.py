"""The offsets committed to the group: per source partition, the next one whose records have
had every effect here (step 5 of ``streams.apply.lane``'s order, and the forwarder's step 2).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from streams.core.positions import Gap, offset_gaps
from streams.core.records import Partition, partition_key, partition_of
from streams.intake.faust_consumer import commit_offsets


class AppliedOffsets:
    """Next offset per source partition whose records have had every effect here.

    Noted when a batch's lane has carried it through every effect, or when a partition is
    positioned (records below its start need nothing more). These are the only offsets
    committed to the group (forward only), which keeps its offsets, restarts and lag monitors
    right.
    """

    def __init__(self) -> None:
        self.next: dict[Any, int] = {}
        self.committed: dict[Any, int] = {}
        self._revoked: set[Partition] = set()
        """Partitions forgotten at a revocation and not positioned here since: a batch of
        theirs that finishes late must not note (and later commit) an offset another worker
        has moved past."""

    def note(self, records: Iterable[Any], starts: Mapping[Hashable, int]) -> list[Gap]:
        """Record the offsets after ``records`` (all applied), for each partition whose records
        follow on (``starts``: the offset each partition's records continue from) from what is
        noted already; return the partitions that do not (nothing of theirs is noted: a batch
        lost on its way must not be stepped over by the Kafka offset either)."""
        last: dict[Partition, int] = {}
        for record in records:
            key = partition_key(record)
            if record.offset >= last.get(key, -1):
                last[key] = record.offset
        noted = self.next
        gaps = offset_gaps([key for key in last if key not in self._revoked], starts, noted)
        refused = {partition_of(gap) for gap in gaps}
        for key, offset in last.items():
            if key not in self._revoked and key not in refused:
                self.applied_below(key, offset + 1)
        return gaps

    def positioned(self, tp: Any, offset: int) -> None:
        """Record that ``tp`` is read here from ``offset`` on (assigned): nothing below needs
        an effect of ours, and its batches note their offsets again."""
        self._revoked.discard(Partition(*tp))
        self.applied_below(tp, offset)

    def applied_below(self, tp: Any, offset: int) -> None:
        """Record that every record of ``tp`` below ``offset`` has had its effects."""
        key = Partition(*tp)
        if offset > self.next.get(key, -1):
            self.next[key] = offset

    def forget(self, tps: Iterable[Any]) -> None:
        """Drop revoked partitions: another worker's later progress must not be undone."""
        for tp in tps:
            key = Partition(*tp)
            self.next.pop(key, None)
            self.committed.pop(key, None)
            self._revoked.add(key)

    def due(self, assigned: Iterable[Any]) -> dict[Any, int]:
        """Return the offsets of ``assigned`` partitions ahead of what was committed."""
        found = {}
        for tp in assigned:
            key = Partition(*tp)
            offset = self.next.get(key)
            if offset is not None and offset > self.committed.get(key, -1):
                found[tp] = offset
        return found

    def committed_now(self, offsets: Mapping[Any, int]) -> None:
        """Note that ``offsets`` were committed."""
        for tp, offset in offsets.items():
            self.committed[Partition(*tp)] = offset

    async def commit(self, consumer: Any, tps: Iterable[Any] | None = None) -> None:
        """Commit the applied offsets of ``tps`` (default: every partition ``consumer`` has)."""
        due = self.due(consumer.assignment() if tps is None else tps)
        if due and await commit_offsets(consumer, due):
            self.committed_now(due)
