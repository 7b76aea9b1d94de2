"""What the consumer hands the mirror: each fetched run of a mirrored partition, admitted in order.

The consumer (``streams.intake.faust_consumer``) calls :meth:`Handoff.deliver` with every
fetched run of records of a mirrored topic's partition, and asks :meth:`Handoff.fetchable`
which partitions to fetch. A run is admitted only in order from where its partition was positioned
(``streams.core.positions``) and goes to its topic's :class:`~streams.intake.feed.Feed`, which the
entity's agent takes batches from. Partitions not positioned yet, and partitions held (a full
feed, a dead letter that cannot be written, a failing batch), are not fetched.
"""

from __future__ import annotations

import bisect
import logging
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

from streams.core.positions import Jump, ReadPositions
from streams.intake.feed import Feed
from streams.ops import metrics

log = logging.getLogger(__name__)

#: Why a partition is held (not fetched); a partition may be held for several reasons.
BACKLOG = "backlog"

#: Why fetched records were not handed on (``mirror_discarded_records_total{reason}``); each is
#: read again, by this worker or by its partition's new owner.
NOT_POSITIONED = "not_positioned"
"""Its partition was not positioned (revoked, or to be positioned again)."""
FETCHED_BEFORE_POSITIONING = "fetched_before_positioning"
"""The fetch was issued before its partition's latest positioning (a stale position)."""
HANDED_ON_ALREADY = "handed_on_already"
"""A fetch overlapping one already handed on: the same records again."""
REPOSITIONED = "repositioned"
"""Waiting in a feed when its partition was revoked, held or positioned again."""
FLOW_STOPPED = "flow_stopped"
"""Fetched while a rebalance had stopped the flow."""
HELD = "held"
"""On its way in a batch when its partition was held from an earlier record."""


def discarded(tp: Any, count: int, reason: str) -> None:
    """Count ``count`` records of ``tp`` not handed on (or dropped on their way), for ``reason``."""
    if count:
        metrics.DISCARDED.labels(tp[0], reason).inc(count)


class Handoff:
    """Feeds of the mirrored topics, the read positions of their partitions, and holds."""

    def __init__(self, high_water: int) -> None:
        self.high_water = high_water
        self.feeds: dict[str, list[Feed]] = {}
        """The feeds of each mirrored topic: partition *p* goes to feed *p mod len(feeds)*."""
        self.positions = ReadPositions()
        self.held: dict[Hashable, dict[str, float | None]] = {}
        """Why each held partition is held, with when the hold ends (None: on release)."""
        self.fetched_at = 0
        """The position epoch noted before the fetch now under way was issued."""
        self.on_jump: Callable[[Jump], None] = lambda jump: None
        """Told when a partition's records skip offsets (to check for retention losses)."""
        self.on_refused: Callable[[Hashable], None] = lambda tp: None
        """Told when a positioned partition's run was refused: it must be positioned again.
        Both are given by :meth:`listen` (the positioner's, in ``streams.worker``)."""
        self.fetched_past: set[Hashable] = set()
        """Partitions whose fetch position may have moved past records not handed over.

        Records are consumed without being handed over when a run comes while its partition
        is not positioned (a fetch issued before a rebalance can return after the positioner's
        seek, with records from the new position), or when a fetch returns while the flow is
        stopped. A positioning under way for such a partition is redone
        (``streams.intake.positioner``).
        """

    def listen(
        self, on_jump: Callable[[Jump], None], on_refused: Callable[[Hashable], None]
    ) -> None:
        """Tell ``on_jump`` of partitions whose records skip offsets, ``on_refused`` of runs
        refused from positioned partitions (the positioner's checks)."""
        self.on_jump = on_jump
        self.on_refused = on_refused

    def add_topic(self, topic: str, lanes: int = 1) -> list[Feed]:
        """Mirror ``topic``: its records go to the returned feeds instead of Faust's streams,
        partition *p* to feed *p mod lanes* (a lane's batches never mix with another's)."""
        feeds = [Feed(self.high_water, self._backlog_changed) for _ in range(lanes)]
        self.feeds[topic] = feeds
        return feeds

    def feed_of(self, tp: Any) -> Feed:
        """Return the feed of partition ``tp`` of a mirrored topic."""
        feeds = self.feeds[tp.topic]
        feed: Feed = feeds[tp.partition % len(feeds)]
        return feed

    def is_mirrored(self, topic: str) -> bool:
        """Tell whether ``topic``'s records are handed over here."""
        return topic in self.feeds

    def hold(self, tp: Hashable, reason: str, until: float | None = None) -> None:
        """Stop fetching ``tp`` until :meth:`release` for ``reason`` (or the time ``until``)."""
        self.held.setdefault(tp, {})[reason] = until

    def release(self, tp: Hashable, reason: str) -> None:
        """Undo :meth:`hold` for ``reason``."""
        reasons = self.held.get(tp)
        if reasons is not None:
            reasons.pop(reason, None)
            if not reasons:
                del self.held[tp]

    def release_expired(self, now: float) -> list[Hashable]:
        """Release holds whose time has come; return the partitions no longer held at all."""
        freed = []
        for tp, reasons in list(self.held.items()):
            for reason, until in list(reasons.items()):
                if until is not None and until <= now:
                    del reasons[reason]
            if not reasons:
                del self.held[tp]
                freed.append(tp)
        return freed

    def unfetchable(self, assigned: Iterable[Any]) -> set[Any]:
        """Return the mirrored partitions of ``assigned`` not to fetch now."""
        positioned = self.positions.positioned()
        return {
            tp
            for tp in assigned
            if tp.topic in self.feeds and (tp not in positioned or tp in self.held)
        }

    def forget(self, tps: Iterable[Any], reason: str = REPOSITIONED) -> None:
        """Stop handing over ``tps`` (revoked, or to be positioned again); drop what waits
        (counted with ``reason``: it is read again, here or by the partition's new owner)."""
        mirrored = [tp for tp in tps if tp.topic in self.feeds]
        self.positions.forget(mirrored)
        self.fetched_past.update(mirrored)
        by_feed: defaultdict[int, list[Any]] = defaultdict(list)
        feeds = {}
        for tp in mirrored:
            feed = self.feed_of(tp)
            feeds[id(feed)] = feed
            by_feed[id(feed)].append(tp)
        for key, partitions in by_feed.items():
            for tp, count in feeds[key].drop(partitions).items():
                discarded(tp, count, reason)

    def read_past(self, tp: Any, offset: int) -> None:
        """Note where the fetch under way left ``tp``'s consumer position (after its runs were
        delivered): offsets it stepped over count as read (``ReadPositions.read_past``), and
        are checked for retention losses as a run's jump is."""
        jump = self.positions.read_past(tp, offset, self.fetched_at)
        if jump is not None:
            self.on_jump(jump)

    def deliver(self, tp: Any, records: Sequence[Any]) -> bool:
        """Hand on a fetched run of ``tp``'s records (offset order); False if it was refused."""
        if not records:
            return True
        admission = self.positions.admit(tp, records[0].offset, records[-1].offset, self.fetched_at)
        if admission is None:
            if self.positions.expected(tp) is not None:
                discarded(tp, len(records), FETCHED_BEFORE_POSITIONING)
                self.on_refused(tp)
            else:
                discarded(tp, len(records), NOT_POSITIONED)
                self.fetched_past.add(tp)
            return False
        if admission.jump is not None:
            self.on_jump(admission.jump)
        start = admission.from_offset
        if records[0].offset < start:
            index = bisect.bisect_left(records, start, key=_offset)
            discarded(tp, index, HANDED_ON_ALREADY)
            records = records[index:]
        self.feed_of(tp).put(tp, records, admission.continues_from)
        return True

    def _backlog_changed(self, tp: Hashable, full: bool) -> None:
        if full:
            self.hold(tp, BACKLOG)
        else:
            self.release(tp, BACKLOG)


def _offset(record: Any) -> int:
    return int(record.offset)
