"""Faust's consumer, handing mirrored partitions' records over in batches (workarounds 1-6).

Workarounds of faust-streaming 0.15.3, numbered across the ``faust_*`` modules (their index:
docs/internals.md, "Faust's workarounds").

1. **Per-record delivery is slow** (robinhood/faust#563: "ten times" slower than a bare
   aiokafka consumer). Faust hands every record to a stream one at a time
   (``Consumer._drain_messages`` awaits a callback per message, ``Conductor.on_message`` builds
   an ``Event`` and queues it): a bare agent read 5,000 to 15,000 records/s here, against about
   200,000 for the same consumer's raw ``getmany`` (BENCHMARKS.md, "What changed, measured").
   :meth:`MirrorConsumer.getmany` hands each fetched run of a mirrored partition to
   :class:`~streams.intake.handoff.Handoff` whole; other topics (changelogs) take Faust's own path.

2. **Faust seeks to the committed offset after resuming** (faust-streaming/faust#216):
   ``Recovery._resume_streams`` and ``Recovery.on_recovery_completed`` call
   ``resume_partitions`` before ``perform_seek``, so the first records can come from a stale
   position. :meth:`MirrorConsumer.perform_seek` leaves mirrored partitions to
   ``streams.intake.positioner`` (they are sought to the offsets stored with the data before
   they are fetched at all, :meth:`MirrorConsumer._getmany`). Test: the order in Faust's source.

3. **Seeking a partition a rebalance took away crashes the fetcher** (faust-streaming/faust#54,
   aiokafka's ``IllegalStateError``): :func:`_seek_to_committed` seeks only what aiokafka still
   has. Test: aiokafka raising, and the seek leaving such partitions out.

4. **Fetches wait 1,500 ms for records** (``AIOKafkaConsumerThread._create_worker_consumer``,
   ``fetch_max_wait_ms=1500``); the broker answers one connection's requests in order, so every
   offset query and commit queued behind an idle fetch waited too (1.3 s per positioning):
   :class:`MirrorConsumerThread` asks for 100 ms. Test: the value in Faust's source.

5. **Faust commits what its streams acknowledged** (``Consumer._new_offset``); mirrored records
   never pass its streams, and only what a batch lane applied may be committed:
   ``_new_offset`` returns None and :func:`commit_offsets` commits the applied offsets.

6. **Faust's slow-stream check assumes every record passes its streams**
   (``AIOKafkaConsumerThread.verify_event_path``; faust-streaming/faust#175): it would warn
   about every mirrored partition, so it runs for the other topics only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, Protocol, cast

from aiokafka.errors import KafkaError
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AiokafkaConsumer

from streams.intake.handoff import FLOW_STOPPED, Handoff, discarded
from streams.kafka.topics import ISOLATION_LEVEL

log = logging.getLogger(__name__)

#: Longest wait of one fetch for records, in seconds.
FETCH_WAIT = 0.2
#: Longest time the broker holds a fetch request open when there are no records. Faust sets
#: 1,500 ms (``AIOKafkaConsumerThread._create_worker_consumer``); the broker answers the
#: requests of one connection in order, so every offset query and commit waits behind it.
FETCH_MAX_WAIT_MS = 100


class MirrorConsumerThread(AIOKafkaConsumerThread):
    """Faust's consumer thread, with fetch requests the broker answers within 100 ms, reading
    committed records only (``streams.kafka.topics.ISOLATION_LEVEL``; Faust reads them only
    under its own exactly-once processing)."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Both read when the consumer starts (aiokafka's AIOKafkaConsumer.start).
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        consumer._isolation_level = ISOLATION_LEVEL
        return consumer


class MirrorHost(Protocol):
    """What the consumer needs of its app. Faust makes the consumer (``App._new_transport``),
    so the app is its only link to the rest: ``streams.faust_app.MirrorTransportApp`` declares
    both, and ``streams.worker.build_app`` gives the hand-off."""

    handoff: Handoff
    """Where fetched runs of mirrored partitions go."""

    async def on_mirror_revoked(self, revoked: set[Any]) -> None:
        """Finish the batches of ``revoked`` partitions in flight, before they move."""


class MirrorConsumer(AiokafkaConsumer):
    """Faust's aiokafka consumer, handing mirrored topics' records over in batches."""

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return MirrorConsumerThread(self, loop=self.loop, beacon=self.beacon)

    @property
    def host(self) -> MirrorHost:
        """Return the app, as what this consumer needs of it."""
        return cast(MirrorHost, self.app)

    @property
    def handoff(self) -> Handoff:
        """Return the app's hand-off."""
        return self.host.handoff

    def _new_offset(self, tp: Any) -> int | None:
        # Faust's commit timer asks this for the offset to commit; None: nothing, ever.
        return None

    async def _getmany(self, active_partitions: set[Any] | None, timeout: float) -> Any:
        # The consumer thread runs one call at a time: a fetch that waits Faust's 1 s for
        # records delays every seek and offset query queued behind it.
        timeout = min(timeout, FETCH_WAIT)
        handoff = self.handoff
        handoff.fetched_at = handoff.positions.epoch
        if active_partitions is not None:
            # A copy, always: the fetch filters by this set when it returns, and Faust changes
            # its own set meanwhile (resume_partitions adds the source partitions to it at the
            # end of a recovery), which let a fetch issued before positioning return records
            # of partitions positioned since.
            active_partitions = set(active_partitions)
            if self.settled:
                # Faust pauses the source partitions while it recovers tables; mirrored ones
                # are read all the same (the cache holds back what the recovery would undo).
                active_partitions |= {
                    tp for tp in self.assignment() if handoff.is_mirrored(tp.topic)
                }
            active_partitions -= handoff.unfetchable(active_partitions)
            if not active_partitions:
                # An empty set would make aiokafka return every partition's records.
                await asyncio.sleep(min(timeout, 0.05))
                return {}
        return await super()._getmany(active_partitions, timeout)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        """Hand mirrored partitions' runs over; yield the other topics' messages as Faust does."""
        records, active = await self._wait_next_records(timeout)
        if records is None or self.should_stop:
            return
        handoff = self.handoff
        if not self.flow_active:
            # Fetched while a rebalance stopped the flow: not delivered (as in Faust, which
            # then seeks back); mirrored partitions are positioned again from the store.
            mirrored = [tp for tp in records if handoff.is_mirrored(tp.topic)]
            for tp in mirrored:
                discarded(tp, len(records[tp]), FLOW_STOPPED)
            handoff.forget(mirrored)
            try:
                await self.perform_seek()
            except KafkaError as exc:
                # A rebalance is under way; Faust seeks these partitions again when its
                # recovery ends. An error here would crash the fetcher, and the worker.
                log.warning("could not seek back after a stopped flow (%r); a rebalance will", exc)
            return
        others = {}
        for tp, run in records.items():
            if handoff.is_mirrored(tp.topic):
                # Never filtered by Faust's set of active partitions: which mirrored partitions
                # are fetched is decided in _getmany, and a fetched run not handed on would
                # leave a gap (its records are consumed).
                handoff.deliver(tp, run)
            else:
                others[tp] = run
        positioned = handoff.positions.positioned()
        if positioned:
            # Where the fetch left each one: past the records it returned and the offsets it
            # stepped over (a transaction's markers, an aborted transaction's records).
            for tp, offset in _consumer_positions(self._thread, positioned).items():
                handoff.read_past(tp, offset)
        if not others:
            return
        # Faust's own delivery (faust/transport/consumer.py, Consumer.getmany), for the rest.
        generation_id = self.app.consumer_generation_id
        to_message = self._to_message
        for tp, record in self.scheduler.iterate(others):
            if not self.flow_active or self.app.consumer_generation_id != generation_id:
                break
            if active is None or tp in active or tp in self._buffered_partitions:
                self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                yield tp, to_message(tp, record)

    async def perform_seek(self) -> None:
        """Seek the partitions of other topics to their committed offsets, as Faust does."""
        handoff = self.handoff
        others = {tp for tp in self.assignment() if not handoff.is_mirrored(tp.topic)}
        if not others:
            return
        thread: Any = self._thread
        committed: Mapping[Any, int | None] = await thread.call_thread(
            _seek_to_committed, thread._ensure_consumer(), others
        )
        # Faust's bookkeeping, as Consumer.perform_seek keeps it.
        self._read_offset.update(
            {tp: o if o is not None and o >= 0 else None for tp, o in committed.items()}
        )
        self._committed_offset.update(
            {tp: o or None for tp, o in committed.items() if o is not None}
        )

    #: Set once an assignment is complete, cleared at each revocation: mirrored partitions
    #: are positioned and fetched from then on, while Faust may still recover tables (it
    #: counts the recovery as part of the rebalance and pauses them meanwhile).
    settled: bool = False

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        """Stop handing over revoked partitions; let the app finish their batches in flight."""
        self.settled = False
        self.handoff.forget(revoked)
        await self.host.on_mirror_revoked(revoked)
        await super().on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[Any], generation_id: int = 0) -> None:
        """Unposition the new assignment: each partition is positioned before it is fetched."""
        self.handoff.forget(assigned)
        await super().on_partitions_assigned(assigned, generation_id)
        self.settled = True

    def verify_event_path(self, now: float, tp: Any) -> None:
        """Check Faust's stream path, for the topics that still take it."""
        # Faust's check expects every record to pass its streams; mirrored ones never do.
        if not self.handoff.is_mirrored(tp.topic):
            super().verify_event_path(now, tp)


def _consumer_positions(thread: Any, partitions: Iterable[Any]) -> dict[Any, int]:
    """Return aiokafka's position of each of ``partitions`` that has one (the next offset it
    fetches: past what ``getmany`` returned and what it stepped over).

    Read from this thread, between fetches: aiokafka moves a position only when a fetch's
    records are handed out (``FetchResult._update_position``) or on a seek, and every seek of
    a mirrored partition is noted in the read positions' epoch before it is issued.
    """
    consumer = thread._consumer
    subscription = consumer._subscription.subscription if consumer is not None else None
    assignment = subscription.assignment if subscription is not None else None
    if assignment is None:
        return {}
    found = {}
    for tp in partitions:
        state = assignment.state_value(tp)  # aiokafka's TopicPartition equals Faust's TP
        if state is not None and state.has_valid_position:
            found[tp] = int(state.position)
    return found


async def _seek_to_committed(consumer: Any, partitions: Iterable[Any]) -> dict[Any, int | None]:
    """In the consumer's thread: aiokafka's ``seek_to_committed`` for ``partitions`` only."""
    from aiokafka import TopicPartition

    # Only those still assigned: the caller's view (Faust's) can lag behind aiokafka's during a
    # rebalance, and aiokafka raises IllegalStateError for any other (which crashed the fetcher).
    assigned = consumer.assignment()
    tps = [tp for p in partitions if (tp := TopicPartition(p.topic, p.partition)) in assigned]
    if not tps:
        return {}  # aiokafka would seek every assigned partition
    result: dict[Any, int | None] = await consumer.seek_to_committed(*tps)
    return result


async def position_partitions(
    consumer: Any,
    partitions: Iterable[Any],
    choose: Callable[[Any, int | None, int, int], int],
) -> dict[Any, int]:
    """Seek each partition to ``choose(tp, committed offset, log start, log end)``; return the
    offsets.

    One call into the consumer's thread for the offset queries and the seeks, so that no
    fetch runs in between and a partition is positioned in one round trip.
    """
    from aiokafka import TopicPartition

    thread: Any = consumer._thread
    aio = thread._ensure_consumer()
    tps = {TopicPartition(tp.topic, tp.partition): tp for tp in partitions}

    async def run() -> dict[Any, int]:
        starts = await aio.beginning_offsets(list(tps))
        ends = await aio.end_offsets(list(tps))
        chosen = {}
        for atp, tp in tps.items():
            offset = choose(
                tp, await aio.committed(atp), int(starts.get(atp) or 0), int(ends.get(atp) or 0)
            )
            aio.seek(atp, offset)
            chosen[tp] = offset
        return chosen

    result: dict[Any, int] = await thread.call_thread(run)
    return result


async def commit_offsets(consumer: Any, offsets: Mapping[Any, int]) -> bool:
    """Commit ``offsets`` (next offset to read per partition) for the consumer's group."""
    done: bool = await consumer._commit(offsets)
    return done


def assignment_settled(app: Any) -> bool:
    """Tell whether the app's mirrored partitions may be positioned, applied and committed:
    its assignment is complete, though Faust may still recover tables (see
    :attr:`MirrorConsumer.settled`); Faust's own flag for any other consumer."""
    consumer = app.consumer
    if isinstance(consumer, MirrorConsumer):
        return consumer.settled
    return not app.rebalancing


async def request_rejoin(consumer: Any) -> None:
    """Make the consumer rejoin its group (a rebalance), from the consumer's thread."""
    thread: Any = consumer._thread

    async def rejoin() -> None:
        thread._ensure_consumer()._coordinator.request_rejoin()

    await thread.call_thread(rejoin)
