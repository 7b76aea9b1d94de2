"""How old a partition's copy is (pure): the age of its oldest record not yet applied.

A worker knows the records it holds (batches in flight, then its feeds, oldest first), the
next offset to apply of each partition and the partition's high watermark. From them:

- caught up (no lag): 0;
- behind, with the oldest unapplied record known: now minus that record's first timestamp
  (exact; remembered while the partition's position stays where it was, so a partition held
  after its records were dropped keeps counting from the same record);
- behind, with that record not fetched yet: a lower bound, the time since this worker first
  saw the partition behind without knowing the record (it was produced before that).

A partition behind never reads 0 (at least :data:`BEHIND_FLOOR`): 0 means caught up, exactly
as for the lag.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

#: The least staleness of a partition that is behind, so that only a caught-up one reads 0.
BEHIND_FLOOR = 0.001


@dataclass(frozen=True, slots=True)
class Head:
    """The first record of one partition waiting in one place (a batch in flight, a feed)."""

    offset: int
    """Its offset in the partition."""
    timestamp_ms: int
    """Where it was first produced: its record timestamp, or its ``mirror-origin``'s (ms)."""


def oldest_unapplied(position: int, heads: Iterable[Head]) -> Head | None:
    """Return the first of ``heads`` (oldest place first) at or after ``position``.

    Records below ``position`` are applied (a batch committed, or a replay for the cache).
    """
    for head in heads:
        if head.offset >= position:
            return head
    return None


@dataclass(slots=True)
class Reading:
    """One partition's lag and staleness at one moment."""

    lag: int
    """Records not applied yet (high watermark minus the next offset to apply)."""
    seconds: float
    """Staleness: 0 when caught up, else the age of the oldest unapplied record."""
    exact: bool
    """False when that record was not fetched yet and ``seconds`` is a lower bound."""


@dataclass(slots=True)
class Staleness:
    """What a worker remembers of each partition between readings (no I/O, no clock)."""

    known: dict[Hashable, tuple[int, Head]] = field(default_factory=dict)
    """The oldest unapplied record last seen, with the position it was seen at."""
    behind_since: dict[Hashable, float] = field(default_factory=dict)
    """When a partition was first seen behind with that record unknown."""

    def read(
        self, partition: Hashable, position: int, highwater: int, head: Head | None, now: float
    ) -> Reading:
        """Return ``partition``'s reading at ``now`` (seconds since the epoch), given its next
        offset to apply, its high watermark and its oldest unapplied record if known."""
        lag = max(0, highwater - position)
        if not lag:
            self.forget([partition])
            return Reading(0, 0.0, True)
        if head is None:
            seen = self.known.get(partition)
            if seen is not None and seen[0] == position:
                head = seen[1]  # nothing applied since: still the oldest unapplied record
        if head is not None:
            self.known[partition] = (position, head)
            self.behind_since.pop(partition, None)
            return Reading(lag, max(now - head.timestamp_ms / 1000, BEHIND_FLOOR), True)
        since = self.behind_since.setdefault(partition, now)
        return Reading(lag, max(now - since, BEHIND_FLOOR), False)

    def forget(self, partitions: Iterable[Hashable]) -> None:
        """Drop what is remembered of ``partitions`` (caught up, or revoked)."""
        for partition in partitions:
            self.known.pop(partition, None)
            self.behind_since.pop(partition, None)


def stored_staleness(
    next_offset: int, end: int, first_timestamp_ms: int | None, now: float
) -> float | None:
    """Return a partition's staleness as the store and the broker tell it (``status``): 0 when
    the next offset to apply is the end, else the age of the record there (None: not read)."""
    if next_offset >= end:
        return 0.0
    if first_timestamp_ms is None or first_timestamp_ms < 0:
        return None
    return max(now - first_timestamp_ms / 1000, BEHIND_FLOOR)
