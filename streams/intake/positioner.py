"""Positions each assigned mirrored partition before it is fetched, at its stored offset.

After each rebalance (and whenever the hand-off refuses a run), an assigned mirrored partition
is not positioned, so the consumer does not fetch it. This task positions such partitions: it
reads the offsets stored with the data (they say exactly what is applied), the group's Kafka
offsets and the partitions' log starts, decides where to start
(:func:`streams.core.positions.start_offset`), seeks, and only then lets the partition be
fetched. A stored offset below the log start means records deleted by retention before they
were applied: one error line per partition with the range and the count, and
``mirror_lost_records_total``. The same check runs when a partition's records skip offsets
while it is read (a worker that falls behind its topic's retention).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from streams.core.backoff import Backoff
from streams.core.errors import MirrorError
from streams.core.positions import Jump, lost_below_log_start, start_offset
from streams.core.records import partition_of
from streams.intake.faust_consumer import assignment_settled, position_partitions
from streams.intake.handoff import Handoff
from streams.kafka.topic_ids import TopicIds
from streams.ops import metrics

if TYPE_CHECKING:  # the apply room is above this one: its SqlApplier is only passed in
    from streams.apply.sql_applier import SqlApplier

log = logging.getLogger(__name__)

#: How often to look for partitions to position (a rebalance ending sets no event of ours).
POLL_SECONDS = 0.05
#: Seconds between two log-start checks of one partition after its records skipped offsets.
JUMP_CHECK_INTERVAL = 1.0


class Positioner:
    """The task that positions assigned, unpositioned mirrored partitions."""

    def __init__(
        self,
        app: Any,
        handoff: Handoff,
        mirror: SqlApplier,
        cached_topics: set[str],
        on_positioned: Callable[[Any, int], None],
        kafka_offset_topics: set[str] | None = None,
        topic_ids: TopicIds | None = None,
    ) -> None:
        self.app = app
        self.handoff = handoff
        self.mirror = mirror
        self.topic_ids = topic_ids
        """Reads which log each topic is now (None: offsets alone tell)."""
        self.cached_topics = cached_topics
        """Topics whose unconfirmed records (applied, not yet in the cache) are replayed."""
        self.on_positioned = on_positioned
        """Told each partition's start offset: records below it need no commit of their own."""
        self.kafka_offset_topics = kafka_offset_topics or set()
        """Topics whose progress is the group's Kafka offset (forwarded: nothing in SQL)."""
        self.wake = asyncio.Event()
        self._backoff = Backoff()
        self._jump_checked: dict[Any, float] = {}
        self._lost_until: dict[Any, int] = {}

    def refused(self, tp: Any) -> None:
        """Position ``tp`` again: a run of it was refused, so its fetch position moved on."""
        self.handoff.forget([tp])
        self.wake.set()

    async def run(self) -> None:
        """Position pending partitions until the app stops."""
        while not self.app.should_stop:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=POLL_SECONDS)
            self.wake.clear()
            if not assignment_settled(self.app):
                continue  # assignment under way
            self.handoff.release_expired(time.monotonic())
            pending = self.pending()
            if not pending:
                continue
            try:
                await self.position(pending)
                self._backoff = Backoff()
            except (MirrorError, OSError, TimeoutError) as exc:
                delay = self._backoff.next()
                log.warning(
                    "cannot position %d partitions yet, retrying in %.1fs: %s",
                    len(pending),
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)
            except Exception as exc:  # the broker's own errors (aiokafka) and the like
                delay = self._backoff.next()
                log.warning(
                    "cannot position %d partitions yet, retrying in %.1fs: %r",
                    len(pending),
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)

    def pending(self) -> list[Any]:
        """Return the assigned mirrored partitions that are neither positioned nor held."""
        handoff = self.handoff
        positioned = handoff.positions.positioned()
        return sorted(
            (
                tp
                for tp in self.app.consumer.assignment()
                if handoff.is_mirrored(tp.topic) and tp not in positioned and tp not in handoff.held
            ),
            key=partition_of,
        )

    async def position(self, tps: list[Any]) -> None:
        """Seek ``tps`` to where they start, then let them be fetched."""
        consumer = self.app.consumer
        fetched_past = self.handoff.fetched_past
        fetched_past.difference_update(tps)
        same_log = await self.check_logs(sorted({tp.topic for tp in tps}))
        stored = await asyncio.to_thread(self.mirror.store.stored_offsets, self.mirror.group)
        losses: list[tuple[Any, int, int]] = []
        follows: dict[Any, int] = {}
        replaced: list[tuple[Any, int, int, int, bool]] = []

        def choose(tp: Any, committed: int | None, log_start: int, log_end: int) -> int:
            key = partition_of(tp)
            kept = committed if tp.topic in self.kafka_offset_topics else stored.get(key)
            start = start_offset(
                kept,
                committed,
                log_start,
                replay_unconfirmed=tp.topic in self.cached_topics,
                log_end=log_end,
                same_log=tp.topic in same_log,
            )
            if start.lost:
                losses.append((tp, kept or 0, start.lost))
            if start.replaced is not None:
                replaced.append((tp, start.replaced, log_end, start.offset, tp.topic in same_log))
                kept = start.offset
            if kept is not None:
                self.mirror.note_stored(key, max(kept, start.offset))
            follows[tp] = start.continues
            return start.offset

        starts = await position_partitions(consumer, tps, choose)
        for tp, expected, count in losses:
            self.lost(tp, expected, count)
        for tp, was, log_end, offset, same in replaced:
            # Stored in place of the old log's offset before any record of it is admitted.
            if tp.topic not in self.kafka_offset_topics:
                await asyncio.to_thread(
                    self.mirror.store.reset_offset,
                    self.mirror.group,
                    tp.topic,
                    tp.partition,
                    offset,
                )
            self.replaced(tp, was, log_end, offset, same)
        assigned = consumer.assignment()
        for tp, offset in starts.items():
            if tp not in assigned:
                continue  # revoked meanwhile: its next owner positions it
            if tp in fetched_past:
                # Records from the new position were consumed but not handed over (a fetch
                # issued before the seek returned after it): seek again. No fetch of it is in
                # flight by then, so once more is enough.
                self.wake.set()
                continue
            self.handoff.positions.position(tp, offset, follows[tp])
            self.on_positioned(tp, offset)
            log.info("reading %s[%d] from offset %d", tp.topic, tp.partition, offset)

    async def check_logs(self, topics: list[str]) -> set[str]:
        """Compare each topic's id with the one its offsets were stored for; return the topics
        known to be the same log.

        A topic whose id changed was deleted and created again (or the broker is a fresh one):
        the offsets stored for its old log are dropped and versions of its new log's records
        rank above every row of the old one (``SqlStore.restart_log``), so the new log is
        applied from its start. One error line per topic, ``mirror_log_restarts_total``.
        """
        if self.topic_ids is None:
            return set()
        facts = await self.topic_ids.facts(topics)
        store = self.mirror.store
        known = await asyncio.to_thread(store.known_logs)
        same = set()
        for topic in topics:
            fact = facts.get(topic)
            if fact is None:
                continue  # gone meanwhile: positioned again once it is back
            now = fact.topic_id
            row = known.get(topic)
            if row is None or (row.topic_id is None and now is not None):
                await asyncio.to_thread(store.note_log, topic, now)
                continue
            if now is None or row.topic_id is None:
                continue  # a broker without topic ids: offsets alone tell (start_offset)
            if row.topic_id == now:
                same.add(topic)
                continue
            spec = self.mirror.entity_for_topic(topic)
            specs = [] if spec is None else [spec]
            restarted = await asyncio.to_thread(store.restart_log, topic, now, row.topic_id, specs)
            same.add(topic)
            if restarted is None:
                continue  # another worker found it first
            ours = {p: o for (g, p), o in restarted.dropped.items() if g == self.mirror.group}
            for p in ours:
                metrics.LOG_RESTARTS.labels(topic, str(p)).inc()
            log.error(
                "%s was deleted and created again (its id is %s, the offsets stored with the "
                "data were for %s): they are dropped (%s) and its new log is applied from its "
                "start; versions of its records rank above every row of the old log%s",
                topic,
                now,
                row.topic_id,
                ", ".join(f"[{p}] {o}" for p, o in sorted(ours.items())) or "none of this group",
                ""
                if restarted.version_floor is None
                else f" (their timestamps count as {restarted.version_floor} ms at least)",
                extra={"topic": topic},
            )
        return same

    def replaced(self, tp: Any, was: int, log_end: int, offset: int, same: bool) -> None:
        """Say that a partition's stored offset was above its log's end, and where it is read."""
        metrics.LOG_RESTARTS.labels(tp.topic, str(tp.partition)).inc()
        why = (
            "the broker lost the records past its end (the topic's id is the one the offset was "
            "stored with); reading on from its end, the records before it being those applied"
            if same
            else "the topic was created again or the broker is a new one; reading its new log "
            "from the start"
        )
        log.error(
            "%s[%d]: the offset stored for it (%d) is above its log's end (%d): %s (offset %d)",
            tp.topic,
            tp.partition,
            was,
            log_end,
            why,
            offset,
            extra={"topic": tp.topic, "partition": tp.partition, "offset": offset},
        )

    def lost(self, tp: Any, expected: int, count: int) -> None:
        """Say that ``count`` records of ``tp`` from ``expected`` on were gone before applied.

        Each lost offset is said once: positioning the partition again before any of its
        records is applied finds the same range.
        """
        end = expected + count
        expected = max(expected, self._lost_until.get(tp, expected))
        count = end - expected
        if count <= 0:
            return
        self._lost_until[tp] = end
        metrics.LOST.labels(tp.topic, str(tp.partition)).inc(count)
        log.error(
            "%s[%d]: %d records (offsets %d to %d) were deleted from the topic (retention) "
            "before they were applied; reading on from offset %d. Their entities may be stale "
            "until changed again: rebuild from the source if that matters",
            tp.topic,
            tp.partition,
            count,
            expected,
            expected + count - 1,
            expected + count,
            extra={"topic": tp.topic, "partition": tp.partition, "offset": expected},
        )

    def check_jump(self, jump: Jump) -> None:
        """Find out, in the background, whether a jump skipped records lost to retention."""
        tp = jump.partition
        now = time.monotonic()
        if now - self._jump_checked.get(tp, -JUMP_CHECK_INTERVAL) < JUMP_CHECK_INTERVAL:
            return
        self._jump_checked[tp] = now
        task = asyncio.ensure_future(self._check_jump(jump))
        task.add_done_callback(_log_failure)

    async def _check_jump(self, jump: Jump) -> None:
        tp: Any = jump.partition
        log_starts = await self.app.consumer.earliest_offsets(tp)
        lost = lost_below_log_start(jump.expected, jump.delivered, int(log_starts.get(tp) or 0))
        if lost:
            self.lost(tp, jump.expected, lost)


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("log start check failed: %r", task.exception())
