"""Where each mirrored partition is read from (pure): records in order from a known offset.

The offset stored with the data says which records of a partition are applied: every record
below it. That holds only if each partition's records reach the store in order from where the
partition was positioned. Kafka's fetcher keeps that order for one position: after a seek, a
fetch issued later returns the partition's records from the new position on, in order, and
never records fetched before the seek. What a consumer cannot tell from a record is which side
of a seek its fetch was issued on (faust-streaming 0.15.3 resumes partitions before seeking
them after a rebalance, so the first fetch can come from a stale position).

So every positioning takes the next number of one counter (an epoch), the consumer notes the
counter before it issues each fetch, and a fetch's records of a partition are admitted only if
the partition was positioned before that fetch was issued. Within one epoch records only move
forward; offsets they skip were compacted away, are transaction markers, or were deleted by
retention (:func:`lost_below_log_start` tells which, given the partition's log start).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Jump:
    """A partition's records went on past offsets that were expected but never delivered."""

    partition: Hashable
    expected: int
    """The offset that was due next."""
    delivered: int
    """The offset of the record delivered instead (greater than ``expected``)."""


@dataclass(frozen=True, slots=True)
class Admission:
    """What to do with one fetched run of a partition's records (offsets ``first..last``)."""

    from_offset: int
    """Hand on the records at or after this offset; earlier ones were handed on already."""
    jump: Jump | None = None
    """Set when the run starts past the expected offset."""


@dataclass(slots=True)
class _Position:
    expected: int
    epoch: int


class ReadPositions:
    """The next offset to hand on per positioned partition, with the epoch of its positioning."""

    def __init__(self) -> None:
        self._counter = 0
        self._at: dict[Hashable, _Position] = {}

    @property
    def epoch(self) -> int:
        """Return the current epoch: note it before issuing a fetch, pass it to :meth:`admit`."""
        return self._counter

    def position(self, partition: Hashable, offset: int) -> None:
        """Note that ``partition`` is (about to be) sought to ``offset``: admit from there.

        Call it before the seek is issued, so that a fetch issued after the seek carries an
        epoch at least as new as this positioning.
        """
        self._counter += 1
        self._at[partition] = _Position(offset, self._counter)

    def forget(self, partitions: Iterable[Hashable]) -> None:
        """Refuse the records of ``partitions`` until they are positioned again."""
        for partition in partitions:
            self._at.pop(partition, None)

    def positioned(self) -> set[Hashable]:
        """Return the partitions that are positioned."""
        return set(self._at)

    def expected(self, partition: Hashable) -> int | None:
        """Return the offset ``partition`` hands on next, or None when it is not positioned."""
        at = self._at.get(partition)
        return None if at is None else at.expected

    def admit(
        self, partition: Hashable, first: int, last: int, fetched_at: int
    ) -> Admission | None:
        """Decide about a fetched run of records ``first..last`` of ``partition``.

        ``fetched_at`` is the epoch noted before the fetch was issued. None means refuse the
        whole run: the partition is not positioned, or was positioned after the fetch was
        issued. Its fetch position has then moved past records not handed on, so the caller
        positions it again at :meth:`expected` (or wherever it is due to be positioned).
        """
        at = self._at.get(partition)
        if at is None or at.epoch > fetched_at:
            return None
        expected = at.expected
        if last + 1 > expected:
            at.expected = last + 1
        jump = Jump(partition, expected, first) if first > expected else None
        return Admission(expected, jump)


def lost_below_log_start(expected: int, delivered: int, log_start: int) -> int:
    """Count the records of a jump from ``expected`` to ``delivered`` deleted by retention.

    Offsets below the partition's log start are gone from the log (retention, or a
    ``delete_records``); offsets skipped above it were compacted away or are transaction
    markers, whose loss changes nothing. ``log_start`` may be read after the jump (it only
    grows), so it is capped at ``delivered``.
    """
    return max(0, min(log_start, delivered) - expected)


@dataclass(frozen=True, slots=True)
class Start:
    """Where to read a partition from after an assignment, and what retention took."""

    offset: int
    lost: int = 0
    """Records between the stored offset and the log start, deleted before being applied."""


def start_offset(
    stored: int | None, committed: int | None, log_start: int, *, replay_unconfirmed: bool
) -> Start:
    """Decide where a newly assigned partition is read from.

    ``stored`` is the offset stored with the data (None: nothing applied yet), ``committed``
    the consumer group's Kafka offset, which moves only once a batch's effects are all done
    (cache included). With ``replay_unconfirmed`` (a cached entity) reading starts at the
    committed offset when it is behind the stored one: those records are applied already (a
    replay changes nothing in SQL) but the cache may not have them, and their replay rewrites
    them. Reading never starts below the log start; stored records below it are lost.
    """
    offset = 0 if stored is None else stored
    if replay_unconfirmed and committed is not None and 0 <= committed < offset:
        offset = committed
    lost = 0 if stored is None else max(0, log_start - stored)
    return Start(max(offset, log_start), lost)
