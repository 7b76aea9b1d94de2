"""Per-partition delivery order (pure): admit a partition's records in order from its stored offset.

The stored offset (in the database, beside the data) says which records of a partition are
applied: every record below it. That holds only if each partition's records reach the Mirror
in order. After a rebalance of a worker with tables, faust-streaming 0.15.3 resumes the source
partitions before seeking them to their committed offsets, so a worker can first receive records
from a stale, later position; applied, they would move the stored offset past records never
applied (seen with three workers and a SIGKILL: 95 records never applied, their entities saved
only by later events).

So after every rebalance the agents seek each assigned partition to its stored offset, and this
guard admits that partition's records only in order from there. A record past the expected
offset is held back and the partition sought again; if the same record comes first after
:data:`GAP_CONFIRMATIONS` seeks, the offsets in between do not exist (transaction markers, a
compacted or expired log start) and it is admitted.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

#: Times the same record must come first after seeking back before a gap is believed.
GAP_CONFIRMATIONS = 3


class Verdict(StrEnum):
    """What to do with one delivered record."""

    ADMIT = "admit"
    """Apply it: it is the next record of its partition."""
    DROP = "drop"
    """Neither apply nor acknowledge it: not sought yet in this assignment, or already passed."""
    SEEK = "seek"
    """Drop it and seek the partition back to :meth:`DeliveryGuard.expected_offset`."""


@dataclass(slots=True)
class _Gap:
    expected: int
    first: int
    seen: int


@dataclass(slots=True)
class DeliveryGuard:
    """The next offset to admit per partition, for partitions sought in this assignment."""

    expected: dict[Hashable, int] = field(default_factory=dict)
    progress: dict[Hashable, float] = field(default_factory=dict)
    """When each partition was last sought or admitted a record (the caller's clock)."""
    _gaps: dict[Hashable, _Gap] = field(default_factory=dict)

    def sought(self, partition: Hashable, offset: int, now: float) -> None:
        """Note that ``partition`` was sought to ``offset``: admit from there."""
        self.expected[partition] = offset
        self.progress[partition] = now
        self._gaps.pop(partition, None)

    def resought(self, partition: Hashable, now: float) -> None:
        """Note that ``partition`` was sought again to its expected offset."""
        self.progress[partition] = now

    def stalled(self, now: float, after: float, ends: dict[Hashable, int]) -> list[Hashable]:
        """Return partitions behind their end (``ends``) that made no progress for ``after`` s.

        A seek can be undone by records already on their way (Faust then drops the ones it
        thinks it has read), so a partition that stops moving is sought again.
        """
        return [
            partition
            for partition, expected in self.expected.items()
            if ends.get(partition, 0) > expected
            and now - self.progress.get(partition, now) >= after
        ]

    def forget(self, partitions: Iterable[Hashable]) -> None:
        """Stop admitting the (revoked) ``partitions`` until they are sought again."""
        for partition in partitions:
            self.expected.pop(partition, None)
            self.progress.pop(partition, None)
            self._gaps.pop(partition, None)

    def expected_offset(self, partition: Hashable) -> int:
        """Return the offset ``partition`` must deliver next."""
        return self.expected[partition]

    def admit(self, partition: Hashable, offset: int, now: float) -> Verdict:
        """Decide about the record at ``offset`` of ``partition``, in delivery order."""
        expected = self.expected.get(partition)
        if expected is None or offset < expected:
            return Verdict.DROP
        if offset == expected:
            self.expected[partition] = offset + 1
            self.progress[partition] = now
            self._gaps.pop(partition, None)
            return Verdict.ADMIT
        gap = self._gaps.get(partition)
        if gap is None or gap.expected != expected:
            self._gaps[partition] = _Gap(expected, offset, 1)
            return Verdict.SEEK
        if offset != gap.first:
            return Verdict.DROP  # more of the stale run, already being sought past
        gap.seen += 1
        if gap.seen >= GAP_CONFIRMATIONS:
            self.expected[partition] = offset + 1
            self.progress[partition] = now
            del self._gaps[partition]
            return Verdict.ADMIT
        return Verdict.SEEK
