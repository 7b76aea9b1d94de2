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
retention (:func:`lost_below_log_start` tells which, given the partition's log start). Offsets
the consumer stepped over after a run's last record (a transaction's commit marker ends most
transactional logs) are noted too (:meth:`ReadPositions.read_past`), so that a partition whose
every record is applied reads as caught up.

Each admitted run also says which offset it **continues from**: the offset stored with the data
that its records follow on (for the first run after a positioning, what the positioner vouched
for: the stored offset, or below it; for later runs, the end of the run before). A batch's
transaction stores a partition's next offset only if the batch continues from at most the
offset stored before it (``streams.apply.sql_applier``): a run lost on the way between the consumer
and the database cannot be stepped over.

A partition's next offset is kept in five places, each for one reason, from the truth down:

1. **Stored with the data** (``mirror_offsets``, read by ``SqlStore.stored_offsets``): what is
   applied; written in each batch's transaction, the truth every other place defers to.
2. **The applier's copy** (``SqlApplier.stored_offsets``): what this process stored last, so
   the lanes tell records already applied (replays) from new ones without a query.
3. **The read position** (:class:`ReadPositions` in the hand-off): where the consumer was
   sought, and which fetched runs are admitted in order from there (this module).
4. **Noted as applied** (``AppliedOffsets.next``): below it every record has had every effect
   (the cache included); only these offsets are committed to Kafka (``AppliedOffsets.committed``:
   the last commit, so an unchanged offset is not committed again).
5. **The group's Kafka offset**: what monitors read and where a forwarded topic resumes; never
   ahead of 4.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any


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
    continues: int | None = None
    """The stored offset the run follows on (None: ``from_offset``)."""

    @property
    def continues_from(self) -> int:
        """Return the offset stored with the data that this run's records follow on."""
        return self.from_offset if self.continues is None else self.continues


@dataclass(slots=True)
class _Position:
    expected: int
    epoch: int
    continues: int | None
    """What the next admitted run continues from, when not ``expected`` (the first run after
    a positioning that started past the stored offset)."""


class ReadPositions:
    """The next offset to hand on per positioned partition, with the epoch of its positioning."""

    def __init__(self) -> None:
        self._counter = 0
        self._at: dict[Hashable, _Position] = {}

    @property
    def epoch(self) -> int:
        """Return the current epoch: note it before issuing a fetch, pass it to :meth:`admit`."""
        return self._counter

    def position(self, partition: Hashable, offset: int, continues: int | None = None) -> None:
        """Note that ``partition`` is (about to be) sought to ``offset``: admit from there.

        ``continues`` is the offset stored with the data that reading from ``offset`` follows
        on, when it is not ``offset`` itself: the stored offset when records between it and
        ``offset`` are known gone (retention, counted), 0 when nothing is stored yet. Call it
        before the seek is issued, so that a fetch issued after the seek carries an epoch at
        least as new as this positioning.
        """
        self._counter += 1
        claim = None if continues is None or continues == offset else continues
        self._at[partition] = _Position(offset, self._counter, claim)

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
        continues, at.continues = at.continues, None
        return Admission(expected, jump, continues)

    def read_past(self, partition: Hashable, offset: int, fetched_at: int) -> Jump | None:
        """Note that the fetch issued at epoch ``fetched_at`` left ``partition``'s consumer
        position at ``offset``, after its runs were admitted; return the jump when it moved
        past the expected offset.

        Offsets from the expected one up to it held no record to hand on: the consumer stepped
        over them itself (a transaction's markers, an aborted transaction's records, compacted
        ones, or records retention deleted before they were fetched: the jump says which, as a
        run's does). The next admitted run still continues from the offset before them, which
        is what the store has. A partition positioned since the fetch was issued is left alone.
        """
        at = self._at.get(partition)
        if at is None or at.epoch > fetched_at or offset <= at.expected:
            return None
        jump = Jump(partition, at.expected, offset)
        if at.continues is None:
            at.continues = at.expected
        at.expected = offset
        return jump

    def read_to(self, partition: Hashable, applied: int) -> int:
        """Return the offset below which ``partition`` holds nothing more to apply, given the
        next offset applied: ``applied``, or past the offsets the consumer stepped over since
        (:meth:`read_past`) when every record before them is applied.

        Without this, a partition whose log ends with a transaction's commit marker would read
        one record behind until its next record, and its staleness would grow meanwhile.
        """
        at = self._at.get(partition)
        if at is None or at.continues is None or at.continues > applied:
            return applied
        return max(applied, at.expected)


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
    continues: int = 0
    """The stored offset reading from ``offset`` follows on (see :class:`Admission`)."""
    replaced: int | None = None
    """A stored offset above the log's end, which does not belong to this log (the topic was
    created again, or the broker lost records): the caller stores ``offset`` in its place."""


def start_offset(
    stored: int | None,
    committed: int | None,
    log_start: int,
    *,
    replay_unconfirmed: bool,
    log_end: int | None = None,
    same_log: bool = False,
) -> Start:
    """Decide where a newly assigned partition is read from.

    ``stored`` is the offset stored with the data (None: nothing applied yet), ``committed``
    the consumer group's Kafka offset, which moves only once a batch's effects are all done
    (cache included). With ``replay_unconfirmed`` (a cached entity) reading starts at the
    committed offset when it is behind the stored one: those records are applied already (a
    replay changes nothing in SQL) but the cache may not have them, and their replay rewrites
    them. Reading never starts below the log start; stored records below it are lost.

    A stored offset above ``log_end`` was not stored for this log: a log's offsets only grow.
    The partition is then read from its log start, the new log whole, unless ``same_log`` (the
    topic's id is the one the offset was stored with: the broker lost the records past its end,
    and the ones before it are those applied), when it is read from the end.
    """
    if log_end is not None:
        if committed is not None and committed > log_end:
            committed = None  # the group's offset of another log, or of lost records
        if stored is not None and stored > log_end:
            offset = log_end if same_log else log_start
            return Start(offset, continues=offset, replaced=stored)
    offset = 0 if stored is None else stored
    if replay_unconfirmed and committed is not None and 0 <= committed < offset:
        offset = committed
    lost = 0 if stored is None else max(0, log_start - stored)
    # Records below the log start are gone (counted when some were stored ones): reading from
    # the log start follows on from where the stored offset (or nothing stored: 0) left off.
    return Start(max(offset, log_start), lost, continues=offset)


@dataclass(frozen=True, slots=True)
class Gap:
    """A batch's records of a partition do not follow on from the offset stored before it."""

    topic: str
    partition: int
    continues: int | None
    """The stored offset the batch's records follow on (None: the batch did not say)."""
    stored: int
    """The offset stored with the data (0: nothing stored yet)."""

    def __str__(self) -> str:
        said = (
            "says nothing of where it starts"
            if self.continues is None
            else (f"follows on from offset {self.continues}")
        )
        return (
            f"{self.topic}[{self.partition}]: the batch {said} but the offset stored with the "
            f"data is {self.stored}"
        )


def offset_gaps(
    partitions: Iterable[tuple[str, int]],
    continues: Mapping[Any, int],
    stored: Mapping[Any, int],
) -> list[Gap]:
    """Return the partitions of a batch whose records do not follow on from the stored offset.

    A batch may store a partition's next offset only if its records continue from at most the
    offset stored before it (records below it are replays, changing nothing): otherwise records
    in between, never applied, would be stepped over for good. Nothing stored counts as 0.
    """
    gaps = []
    for key in partitions:
        claim = continues.get(key)
        before = stored.get(key, 0)
        if claim is None or claim > before:
            gaps.append(Gap(key[0], key[1], claim, before))
    return gaps
