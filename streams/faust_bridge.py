"""Every workaround of faust-streaming 0.15.3, in one module: the only one touching its internals.

Each entry names what it works around (an upstream issue, or the source line) and the test
that shows the bug, where one can be written (``tests/unit/test_faust_bridge.py`` unless
said otherwise).

1. **Per-record delivery is slow** (robinhood/faust#563: "ten times" slower than a bare
   aiokafka consumer). Faust hands every record to a stream one at a time
   (``Consumer._drain_messages`` awaits a callback per message, ``Conductor.on_message`` builds
   an ``Event`` and queues it): a bare agent read 5,000 to 15,000 records/s here, against about
   200,000 for the same consumer's raw ``getmany`` (BENCHMARKS.md, "What changed, measured").
   :meth:`MirrorConsumer.getmany` hands each fetched run of a mirrored partition to
   :class:`~streams.handoff.Handoff` whole; other topics (changelogs) take Faust's own path.
2. **Faust seeks to the committed offset after resuming** (faust-streaming/faust#216):
   ``Recovery._resume_streams`` and ``Recovery.on_recovery_completed`` call
   ``resume_partitions`` before ``perform_seek``, so the first records can come from a stale
   position. :meth:`MirrorConsumer.perform_seek` leaves mirrored partitions to
   ``streams.positioner`` (they are sought to the offsets stored with the data before they are
   fetched at all, :meth:`MirrorConsumer._getmany`). Test: the order in Faust's source.
3. **Seeking a partition a rebalance took away crashes the fetcher** (faust-streaming/faust#54,
   aiokafka's ``IllegalStateError``): :func:`_seek_to_committed` seeks only what aiokafka still
   has. Test: aiokafka raising, and the seek leaving such partitions out.
4. **Fetches wait 1,500 ms for records** (``AIOKafkaConsumerThread._create_worker_consumer``,
   ``fetch_max_wait_ms=1500``); the broker answers one connection's requests in order, so every
   offset query and commit queued behind an idle fetch waited too (1.3 s per positioning):
   :class:`MirrorConsumerThread` asks for 100 ms. Test: the value in Faust's source.
5. **Faust commits what its streams acknowledged** (``Consumer._new_offset``); mirrored records
   never pass its streams, and only what the checkpoint applied may be committed:
   ``_new_offset`` returns None and :func:`commit_offsets` commits the applied offsets.
6. **Faust's slow-stream check assumes every record passes its streams**
   (``AIOKafkaConsumerThread.verify_event_path``; faust-streaming/faust#175): it would warn
   about every mirrored partition, so it runs for the other topics only.
7. **A table cannot be written outside a stream event** (faust-streaming/faust#300, #497:
   ``Table._send_changelog`` raises "Cannot modify table key from outside of stream
   iteration"): :class:`LocalTable` writes the store the way Faust's recovery does, a batch at a
   time. Test: Faust's error, and LocalTable's write.
8. **A table recovery can stall for good** (faust-streaming/faust#74, #176: "No event received
   for active tp ... since recovery start"): :func:`recovery_watchdog` rejoins the group, then
   exits for the supervisor (docs/faust-0.15.3-rebalance-analysis.md, section 1.5). No test
   makes the stall happen on demand; ``tests/unit/test_recovery_watch.py`` tests its steps.
9. **The consumer class is chosen privately** (``App._new_transport``): :class:`MirrorTransportApp`
   gives the app :class:`MirrorConsumer`; :func:`recovery_remaining` reads the recovery service
   ``TableManagerT`` does not declare.
10. **Faust's settings take environment variables over the app's arguments**
    (``faust/types/settings/base.py``, ``SettingsRegistry._init_settings``: a setting's
    ``env_name`` read from ``Settings.env``, which ``Settings._init_env_prefix`` makes
    ``os.environ`` unless given one, replaces the keyword argument). ``BROKER_URL`` beside
    KAFKA_BROKER moved the worker to another cluster, ``WEB_BIND=0.0.0.0`` exposed the API on
    every interface, ``APP_DATADIR`` and ``NODE_CANONICAL_URL`` won over DATA_DIR and
    CANONICAL_URL, and ``APP_VERSION=1.2.3`` (a common variable) stops Faust with a ValueError.
    :data:`FAUST_OPTIONS` gives the app an empty environment: the worker's settings are the
    only source. Test: BROKER_URL winning over ``broker=``, and not with FAUST_OPTIONS.
11. **An unknown table on Faust's router pages is a 500** (``faust/app/router.py``,
    ``Router._get_table``: ``self.app.tables[name]`` raises KeyError, which
    ``faust/web/apps/router.py`` lets through in ``TableDetail.get``, a 500 with a traceback,
    and turns into a 503 to retry forever in ``TableKeyDetail.get``): :class:`MirrorRouter`
    raises Faust's ``NotFound`` there, a JSON 404 on both pages. Test: Faust's KeyError, and
    MirrorRouter's NotFound.
12. **Table files that do not match their changelog stop the worker**
    (``faust/tables/recovery.py``, ``Recovery._restart_recovery``: ``ConsistencyError`` when a
    partition's persisted offset is past the changelog's highwater, as after a Kafka reset;
    under the highwater of a log made again, the entries kept are the old log's).
    ``tables.local_store`` checks the files before Faust opens them, reading them with
    :func:`table_files` and :func:`persisted_offset` (``faust/stores/rocksdb.py``:
    ``Store.partition_path``, ``<tabledir>/<table>-<partition>.db``, and ``Store.offset_key``).
    Test: Faust's check in its source, and the offset read from files Faust's store wrote.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import faust
from aiokafka.errors import KafkaError
from faust.app.router import Router
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AiokafkaConsumer
from faust.types import TP
from faust.web.exceptions import NotFound

from streams import metrics
from streams.core.recovery import RecoveryProgress
from streams.handoff import FLOW_STOPPED, Handoff, discarded

log = logging.getLogger(__name__)

#: Longest wait of one fetch for records, in seconds.
FETCH_WAIT = 0.2
#: Longest time the broker holds a fetch request open when there are no records. Faust sets
#: 1,500 ms (``AIOKafkaConsumerThread._create_worker_consumer``); the broker answers the
#: requests of one connection in order, so every offset query and commit waits behind it.
FETCH_MAX_WAIT_MS = 100


class MirrorConsumerThread(AIOKafkaConsumerThread):
    """Faust's consumer thread, with fetch requests the broker answers within 100 ms."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts
        return consumer


class MirrorConsumer(AiokafkaConsumer):
    """Faust's aiokafka consumer, handing mirrored topics' records over in batches."""

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return MirrorConsumerThread(self, loop=self.loop, beacon=self.beacon)

    @property
    def handoff(self) -> Handoff:
        """Return the app's hand-off (set by ``streams.worker.build_app``)."""
        handoff: Handoff = self.app.handoff  # type: ignore[attr-defined]
        return handoff

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
        finish = getattr(self.app, "on_mirror_revoked", None)
        if finish is not None:
            await finish(revoked)
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


class LocalTable:
    """This worker's copy of a cached table (Faust's store), written a batch at a time.

    Faust's tables write through an event context (``table[key] = value`` during a stream
    event; its RocksDB store asserts one), so the cache writes the store the way Faust's own
    recovery does (``Store.apply_changelog_batch``): for RocksDB one write batch per partition
    and the changelog offset it now holds (``set_persisted_offset``, so a restart recovers only
    what came after); for the in-memory store its dict, and the partition of each key (Faust
    drops keys of partitions no longer assigned after each recovery, by that index).
    """

    def __init__(self, table: Any) -> None:
        self.table = table

    def size(self) -> int:
        """Count the entries of this worker's active partitions (RocksDB: its estimate, as
        counting would read every key)."""
        store: Any = self.table.data
        if hasattr(store, "_dbs_for_actives"):  # faust/stores/rocksdb.py
            return sum(
                int(db.property_int_value("rocksdb.estimate-num-keys") or 0)
                for db in store._dbs_for_actives()
            )
        return len(store)

    def get(self, key: bytes, partition: int) -> bytes | None:
        """Return the entry of ``key`` in ``partition`` of this worker's copy, or None.

        In that partition only: Faust's RocksDB store looks a key up in every partition's
        database when its index does not know it (``Store._get``, ``_dbs_for_key``), and an
        older entry of the key can sit in another partition (placed there before partitions
        were added); the in-memory store keeps one value per key, with its partition.
        """
        store: Any = self.table.data
        if hasattr(store, "_db_for_partition"):  # faust/stores/rocksdb.py
            value: bytes | None = store._db_for_partition(partition).get(key)
            return value
        data = store.data if hasattr(store, "data") else store  # faust/stores/memory.py
        partitions = getattr(store, "_key_partition", None)
        if partitions is not None and partitions.get(key, partition) != partition:
            return None
        found: bytes | None = data.get(key)
        return found

    def write(self, entries: Iterable[tuple[bytes, bytes | None, int, int]]) -> None:
        """Write ``(key, value or None to delete, partition, changelog offset)`` entries."""
        store: Any = self.table.data
        if hasattr(store, "_db_for_partition"):  # faust/stores/rocksdb.py
            from rocksdict import WriteBatch

            # Faust's key index (``Store._key_index``, an LRU of ``table_key_index_size`` keys
            # behind a lock) is left alone: it serves Faust's lookups of a key without its
            # partition, which this project never makes (``get`` reads the key's partition),
            # and keeping it cost about 2 % of the worker's time (one evicting insert an entry).
            batches: dict[int, Any] = {}
            last: dict[int, int] = {}
            for key, value, partition, offset in entries:
                batch = batches.get(partition)
                if batch is None:
                    batch = batches[partition] = WriteBatch(raw_mode=True)
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
                if offset > last.get(partition, -1):
                    last[partition] = offset
            topic = self.table.changelog_topic.get_topic_name()
            for partition, batch in batches.items():
                store._db_for_partition(partition).write(batch)
                store.set_persisted_offset(TP(topic, partition), last[partition])
            return
        data = store.data if hasattr(store, "data") else store  # faust/stores/memory.py
        partitions = getattr(store, "_key_partition", None)
        for key, value, partition, _ in entries:
            if value is None:
                data.pop(key, None)
                if partitions is not None:
                    partitions.pop(key, None)
            else:
                data[key] = value
                if partitions is not None:
                    partitions[key] = partition


def recovering_partitions(app: Any, changelog: str) -> set[int]:
    """Return the partitions of ``changelog`` this worker is still recovering (none when the
    tables are not recovering)."""
    if not app.in_recovery:
        return set()
    recovery = app.tables.recovery
    remaining = recovery.active_remaining()
    busy = {tp.partition for tp, n in remaining.items() if tp.topic == changelog and n > 0}
    if any(recovery.buffers.values()):  # read, not yet applied to the store
        busy |= {tp.partition for tp in recovery.active_tps if tp.topic == changelog}
    return busy


class MirrorTransportApp(faust.App):
    """A Faust app whose transport makes :class:`MirrorConsumer`s (this app's only)."""

    def _new_transport(self) -> Any:
        transport: Any = super()._new_transport()
        transport.Consumer = MirrorConsumer
        return transport


def recovery_remaining(app: Any) -> int | None:
    """Return the changelog records the app's table recovery still waits for (None: none runs).

    ``TableManagerT`` does not declare its recovery service; Faust's ``Recovery`` has it.
    """
    if not app.in_recovery:
        return None
    return int(app.tables.recovery.active_remaining_total())


#: Exit status of a worker whose table recovery stalled twice in a row.
RECOVERY_STALLED_EXIT = 3


def recovery_watchdog(app: faust.App, stall_seconds: float) -> Callable[[], Awaitable[None]]:
    """Return the check to run every second: rejoin, then exit, after ``stall_seconds`` stalls.

    A last resort (workaround 8): a recovery that makes no progress for RECOVERY_STALL_TIMEOUT
    is counted (``mirror_recovery_stalls_total``) and the worker asks its group to rebalance,
    which cleared the stall in under 100 ms when it was seen; if the next recovery stalls too,
    the worker exits with status 3 for its supervisor to restart it. Exiting is safe: every
    batch is one SQL transaction and the stored offsets say where to resume. Meanwhile the SQL
    mirror goes on; only reads by key of the recovering partitions answer 503.
    """
    progress = RecoveryProgress(stall_seconds)

    async def watch_recovery() -> None:
        remaining = recovery_remaining(app)
        action = progress.observe(remaining, time.monotonic())
        if action is None:
            return
        metrics.RECOVERY_STALLS.inc()
        if action == "rejoin":
            log.error(
                "cached table recovery made no progress for %.0f s (%d changelog records to "
                "go); rejoining the group (RECOVERY_STALL_TIMEOUT)",
                stall_seconds,
                remaining,
            )
            await request_rejoin(app.consumer)
            return
        message = (
            f"error: cached table recovery made no progress for {stall_seconds:.0f} s "
            f"({remaining} changelog records to go), again after rejoining the group; exiting "
            "so that the supervisor restarts this worker (RECOVERY_STALL_TIMEOUT)"
        )
        log.critical(message)
        print(message, file=sys.stderr, flush=True)
        os._exit(RECOVERY_STALLED_EXIT)

    return watch_recovery


class MirrorRouter(Router):
    """Faust's router, answering 404 (not a 500) for a table the app does not have."""

    def _get_table(self, name: str) -> Any:
        try:
            return super()._get_table(name)
        except KeyError:
            raise NotFound("unknown table", name=name) from None


#: Options every app of the worker gets for the workarounds above (10 and 11): no environment
#: for Faust's settings, and the router answering 404 for an unknown table.
FAUST_OPTIONS: Mapping[str, Any] = {"env": {}, "Router": MirrorRouter}

#: Where Faust's RocksDB store keeps the changelog offset a partition holds
#: (``faust/stores/rocksdb.py``, ``Store.offset_key``).
OFFSET_KEY = b"__faust\0offset__"


def table_files(tabledir: Path, table: str) -> dict[int, Path]:
    """Return the partition databases of ``table`` under ``tabledir``, by partition."""
    pattern = re.compile(rf"{re.escape(table)}-(\d+)\.db")
    if not tabledir.is_dir():
        return {}
    return {
        int(match.group(1)): path
        for path in tabledir.iterdir()
        if (match := pattern.fullmatch(path.name)) is not None
    }


def persisted_offset(path: Path) -> int | None:
    """Return the changelog offset a partition database holds (None: none), read-only."""
    from rocksdict import AccessType, Options, Rdict

    db = Rdict(str(path), Options(raw_mode=True), access_type=AccessType.read_only())
    try:
        raw = db.get(OFFSET_KEY)
    finally:
        db.close()
    return None if raw is None else int(raw)
