"""Faust agents: one per declared entity, each handing its batches to the shared Mirror.

Offsets are acknowledged only after the batch's SQL transaction has committed. We read
with ``noack_take`` and ack by hand because ``take``/``take_events`` ack the whole batch in a
``finally`` after the yield, even when the body raised or the worker is stopping, which
would commit offsets of events never applied.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import faust
from faust.types import EventT

from models.registry import EntitySpec
from streams import metrics
from streams.deadletters import dead_letter_headers, dead_letter_topic
from streams.delivery import DeliveryGuard, Verdict
from streams.errors import DeadLetterError, MirrorError
from streams.mirror import BatchResult, Mirror, fast_loads
from streams.routing import ORIGIN_HEADER, Origin, Rejection, SourceRecord, entity_key_of
from streams.settings import Settings
from tables.cache import EntityCache

log = logging.getLogger(__name__)

MAX_BACKOFF = 30.0
#: A partition behind its end that admitted nothing for this long is sought again.
STALL_RESEEK_SECONDS = 5.0


def record_from_event(event: EventT[Any]) -> SourceRecord:
    """Convert a Faust event to the core's :class:`SourceRecord`."""
    message = event.message
    headers = message.headers
    items: list[tuple[Any, Any]] = (
        list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
    )
    pairs = tuple((str(k), v if isinstance(v, bytes) else str(v).encode()) for k, v in items)
    origin = None
    for name, raw in pairs:
        if name == ORIGIN_HEADER:
            origin = Origin.from_header(raw)
    return SourceRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        # Faust turns aiokafka's millisecond timestamps into float seconds; undo that.
        timestamp=round(message.timestamp * 1000),
        key=message.key,
        value=message.value,
        headers=pairs,
        origin=origin,
    )


async def retry_forever(
    what: str,
    call: Callable[[], Any] | None,
    *,
    coroutine: Callable[[], Awaitable[Any]] | None = None,
    first_delay: float = 0.5,
) -> Any:
    """Run the blocking ``call`` in a thread (or await ``coroutine``) until it succeeds.

    Used where giving up would lose events: the caller holds its offsets meanwhile, which is
    the back-pressure a failing database should cause.
    """
    delay = first_delay
    attempt = 0
    while True:
        attempt += 1
        try:
            if coroutine is not None:
                return await coroutine()
            assert call is not None
            return await asyncio.to_thread(call)
        except Exception as exc:  # every failure here must hold the offsets, never skip
            retriable = bool(getattr(exc, "retriable", False))
            if retriable:
                log.warning(
                    "%s failed (attempt %d), retrying in %.1fs: %s", what, attempt, delay, exc
                )
            else:
                log.exception(
                    "%s failed unexpectedly (attempt %d), retrying in %.1fs", what, attempt, delay
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)


async def apply_batch(
    mirror: Mirror,
    spec: EntitySpec,
    events: Sequence[EventT[Any]],
    before_commit: Callable[[list[Rejection]], None] | None = None,
    *,
    read_back: bool = False,
) -> BatchResult:
    """Apply one batch of Faust events, retrying until its transaction commits."""
    records = [record_from_event(event) for event in events]
    first = records[0]
    what = f"apply {len(records)} {spec.kind} events from {first.topic}"
    result: BatchResult = await retry_forever(
        what, lambda: mirror.apply(spec, records, before_commit, read_back=read_back)
    )
    return result


async def update_cache(app: faust.App, cache: EntityCache, result: BatchResult) -> None:
    """Put a committed batch's state in the cache, retrying until the changelog has it all."""
    started = time.perf_counter()
    await retry_forever(
        f"write {len(result.states)} {cache.spec.kind} entries to {cache.changelog}",
        None,
        coroutine=functools.partial(cache.put, app, result.states),
    )
    metrics.CACHE_SECONDS.labels(cache.spec.kind).observe(time.perf_counter() - started)


async def send_dead_letters(app: faust.App, topic: str, rejections: Sequence[Rejection]) -> None:
    """Send rejected records to ``topic`` and wait until the broker has them all."""
    futures = []
    for rejection in rejections:
        record = rejection.record
        futures.append(
            await app.producer.send(
                topic,
                record.key,
                record.value,
                partition=None,
                timestamp=None,
                headers=dead_letter_headers(rejection),
            )
        )
    await app.producer.flush()
    for future in futures:
        await future


def dead_letter_sender(
    app: faust.App, topic: str, loop: asyncio.AbstractEventLoop
) -> Callable[[list[Rejection]], None]:
    """Return the ``before_commit`` hook that sends a batch's dead letters from its thread."""

    def send(rejections: list[Rejection]) -> None:
        future = asyncio.run_coroutine_threadsafe(send_dead_letters(app, topic, rejections), loop)
        try:
            future.result(timeout=60)
        except Exception as exc:  # any failure: the batch must not commit without them
            future.cancel()
            raise DeadLetterError(
                f"could not write {len(rejections)} dead letters to {topic}: {exc!r}"
            ) from exc

    return send


class AppliedOffsets:
    """Next offset per source partition whose records are applied and acknowledged here.

    Faust would commit from its own acked-offset bookkeeping. Around a table recovery,
    faust-streaming 0.15.3 resumes the source partitions before seeking them and delivers some
    records twice; its bookkeeping then advanced the group's committed offset by one record
    per commit interval (seen with three workers and a SIGKILL), and acknowledging records
    dropped for being out of order would let it run ahead of what is applied. These offsets
    are exact instead: an offset is noted when its batch has committed in SQL, reached the cache
    and been acknowledged, or when the partition is sought to its stored offset. They are the
    only offsets committed (forward only; ``worker.AppliedOffsetsConsumer`` turns Faust's own
    commits off), which keeps the group's offsets, restarts and lag monitors right.
    """

    def __init__(self) -> None:
        self.next: dict[Any, int] = {}

    def note(self, events: Sequence[EventT[Any]]) -> None:
        """Record the offsets after ``events`` (all applied and acknowledged)."""
        for event in events:
            message = event.message
            self.applied_below(message.tp, message.offset + 1)

    def applied_below(self, tp: Any, offset: int) -> None:
        """Record that every record of ``tp`` below ``offset`` is applied (a stored offset)."""
        if offset > self.next.get(tp, -1):
            self.next[tp] = offset

    def forget(self, tps: Iterable[Any]) -> None:
        """Drop revoked partitions: another worker's later progress must not be undone."""
        for tp in tps:
            self.next.pop(tp, None)

    def due(self, assigned: Iterable[Any], committed: Mapping[Any, int | None]) -> dict[Any, int]:
        """Return the offsets of ``assigned`` partitions that are ahead of ``committed``."""
        found = {}
        for tp in assigned:
            offset = self.next.get(tp)
            known = committed.get(tp)
            if offset is not None and (known is None or offset > known):
                found[tp] = offset
        return found


async def seek_partition(app: faust.App, tp: Any, offset: int) -> bool:
    """Seek ``tp`` to ``offset`` through the consumer's thread; False (logged) when it fails.

    ``seek_wait``, not ``seek``: Faust's ``seek`` calls aiokafka from this thread while the
    consumer thread fetches, which raced (``KeyError: TopicPartition``) and killed the worker.
    A partition revoked meanwhile fails here; its new owner positions it.
    """
    try:
        await app.consumer.seek_wait({tp: offset})
    except Exception as exc:  # any failure leaves the partition to the next round or owner
        log.warning("could not seek %s to %d: %r", tp, offset, exc)
        return False
    return True


def register_positioning(
    app: faust.App,
    mirror: Mirror,
    guard: DeliveryGuard,
    applied: AppliedOffsets,
    topics: set[str],
) -> None:
    """After every rebalance, seek the mirrored partitions of ``topics`` to their stored offsets.

    The stored offsets are committed with the data, so they are exact; Kafka's committed offsets
    can lag them. Until a partition is sought, the guard drops its records (acknowledged, but
    never committed: they are read again from the stored offset).
    """

    async def forget_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked = args[0]
        applied.forget(revoked)
        guard.forget(revoked)

    app.on_partitions_revoked.connect(forget_revoked)

    async def position_partitions() -> None:
        while not app.should_stop:
            try:
                await position_pending()
                await reseek_stalled()
            except Exception:  # never let positioning stop: held-back partitions would stall
                log.exception("positioning partitions failed; retrying")
            await asyncio.sleep(0.1)

    async def position_pending() -> None:
        if app.rebalancing:
            return  # Faust seeks to Kafka's committed offsets at the end; we seek after
        pending = [
            tp
            for tp in app.consumer.assignment()
            if tp.topic in topics and tp not in guard.expected
        ]
        if not pending:
            return
        try:
            stored = await asyncio.to_thread(mirror.store.stored_offsets, mirror.group)
        except MirrorError as exc:  # the partitions stay held back; try again shortly
            log.warning("cannot read stored offsets to position partitions: %s", exc)
            return
        for tp in pending:
            offset = stored.get((tp.topic, tp.partition), 0)
            if not await seek_partition(app, tp, offset):
                continue  # still pending: the next round tries again
            guard.sought(tp, offset, time.monotonic())
            applied.applied_below(tp, offset)  # so Kafka's committed offset catches up too
            log.info("reading %s[%d] from its stored offset %d", tp.topic, tp.partition, offset)

    async def reseek_stalled() -> None:
        if app.rebalancing:
            return
        consumer: Any = app.consumer
        ends = {tp: consumer.highwater(tp) or 0 for tp in list(guard.expected)}
        stalled: list[Any] = guard.stalled(time.monotonic(), STALL_RESEEK_SECONDS, ends)
        for tp in stalled:
            offset = guard.expected_offset(tp)
            log.warning(
                "%s[%d] made no progress; reading again from %d", tp.topic, tp.partition, offset
            )
            await seek_partition(app, tp, offset)
            guard.resought(tp, time.monotonic())

    app.task(position_partitions)


def register_offset_commits(app: faust.App, applied: AppliedOffsets) -> None:
    """Commit ``applied`` offsets every commit interval."""

    async def commit_applied() -> None:
        if app.rebalancing:
            return
        consumer: Any = app.consumer
        # Faust's record of what is committed per partition (set from Kafka at each
        # assignment); kept up to date here so each offset is committed once.
        committed = consumer._committed_offset
        due = applied.due(consumer.assignment(), committed)
        if due and await consumer._commit(due):
            committed.update(due)

    interval = float(app.conf.broker_commit_interval)
    app.timer(interval, name=f"{app.conf.id}.commit-applied")(commit_applied)


def make_agent(
    app: faust.App,
    mirror: Mirror,
    spec: EntitySpec,
    settings: Settings,
    cache: EntityCache | None = None,
    applied: AppliedOffsets | None = None,
    guard: DeliveryGuard | None = None,
) -> Callable[[faust.Stream[Any]], Any]:
    """Build the agent function that mirrors ``spec``'s topic (and fills its ``cache``)."""
    dlq_name = dead_letter_topic(mirror.source_topic(spec), settings.dlq_suffix)

    async def mirror_entity(stream: faust.Stream[Any]) -> AsyncIterator[None]:
        await retry_forever(
            f"create table {spec.table.name}", lambda: mirror.store.create_tables([spec])
        )
        dlq = _raw_topic(app, dlq_name, settings)
        await retry_forever(f"create topic {dlq_name}", None, coroutine=dlq.maybe_declare)
        to_dead_letters = dead_letter_sender(app, dlq_name, asyncio.get_running_loop())
        # Pipelined: while one batch is applied (SQL, in a thread), the next one fills.
        # noack_take does not fill its buffer while its consumer holds a batch, so without
        # the hand-off the two steps would take turns. The queue holds at most one batch:
        # back-pressure. A batch is acked only after its own transaction committed, and
        # batches are applied in the order they were read.
        ready: asyncio.Queue[tuple[list[EventT[Any]], float]] = asyncio.Queue(maxsize=1)

        async def apply_in_order() -> None:
            while True:
                batch, read_at = await ready.get()
                result = await apply_batch(
                    mirror, spec, batch, to_dead_letters, read_back=cache is not None
                )
                if cache is not None:
                    # After the commit (the cache shows only committed state), before the
                    # acks (a crash in between replays the batch, which rewrites the cache).
                    await update_cache(app, cache, result)
                metrics.BATCH_SIZE.labels(spec.kind).observe(len(batch))
                metrics.BATCH_SECONDS.labels(spec.kind).observe(time.perf_counter() - read_at)
                for event in batch:
                    await stream.ack(event)
                if applied is not None:
                    applied.note(batch)

        applier = asyncio.create_task(apply_in_order(), name=f"apply-{spec.kind}")
        try:
            async for events in stream.noack_take(settings.batch_size, within=settings.batch_wait):
                if applier.done():
                    applier.result()  # re-raise what stopped it (never expected)
                batch = list(events) if guard is None else await admit(app, stream, guard, events)
                if batch:
                    await ready.put((batch, time.perf_counter()))
                yield None
        finally:
            applier.cancel()

    mirror_entity.__name__ = f"mirror_{spec.kind}"
    mirror_entity.__qualname__ = mirror_entity.__name__
    return mirror_entity


async def admit(
    app: faust.App, stream: Any, guard: DeliveryGuard, events: Sequence[EventT[Any]]
) -> list[EventT[Any]]:
    """Return the events the guard admits, in order; seek partitions it holds back."""
    admitted: list[EventT[Any]] = []
    for event in events:
        message = event.message
        verdict = guard.admit(message.tp, message.offset, time.monotonic())
        if verdict is Verdict.ADMIT:
            admitted.append(event)
            continue
        metrics.HELD_BACK.labels(message.topic).inc()
        if verdict is Verdict.SEEK:
            expected = guard.expected_offset(message.tp)
            log.warning(
                "%s[%d]: got offset %d while expecting %d; reading again from %d",
                message.topic,
                message.partition,
                message.offset,
                expected,
                expected,
            )
            await seek_partition(app, message.tp, expected)
        # Acknowledged so that Faust does not wait for it at the next rebalance or stop. Faust
        # commits nothing itself (worker.AppliedOffsetsConsumer): the record is read again from
        # the stored offset, and only applied offsets are committed.
        await stream.ack(event)
    return admitted


def make_forwarder(
    app: faust.App,
    mirror: Mirror,
    spec: EntitySpec,
    settings: Settings,
    target: str,
    applied: AppliedOffsets | None = None,
) -> Callable[[faust.Stream[Any]], Any]:
    """Build the agent that re-keys ``spec``'s topic by entity key into ``target``.

    Faust's ``group_by`` does the same one event at a time and loses the record's first
    position; this forwards a batch, carries the position in a ``mirror-origin`` header (the
    event's version), and acks the source only once every forwarded record is on the broker.
    A crash in between forwards some records twice: same origin, same version, so the copy
    is skipped as a duplicate where it is applied.
    """

    async def forward_entity(stream: faust.Stream[Any]) -> AsyncIterator[None]:
        async for events in stream.noack_take(settings.batch_size, within=settings.batch_wait):
            batch: list[EventT[Any]] = list(events)
            await retry_forever(
                f"forward {len(batch)} {spec.kind} events to {target}",
                None,
                coroutine=functools.partial(_forward, app, spec, target, batch),
            )
            for event in batch:
                await stream.ack(event)
            if applied is not None:
                applied.note(batch)
            yield None

    forward_entity.__name__ = f"forward_{spec.kind}"
    forward_entity.__qualname__ = forward_entity.__name__
    return forward_entity


async def _forward(
    app: faust.App, spec: EntitySpec, target: str, batch: Sequence[EventT[Any]]
) -> None:
    futures = []
    for event in batch:
        record = record_from_event(event)
        key = entity_key_of(record, spec, fast_loads)
        new_key = record.key if key is None else str(key).encode()
        headers = [*record.headers, (ORIGIN_HEADER, record.first.header())]
        futures.append(
            await app.producer.send(
                target,
                new_key,
                record.value,
                partition=None,
                timestamp=None,
                headers=headers,
            )
        )
    await app.producer.flush()
    for future in futures:
        await future


def register_tombstone_purge(app: faust.App, mirror: Mirror, settings: Settings) -> None:
    """Purge tombstones older than the retention, every tenth of it (at most hourly)."""
    interval = max(1.0, min(3600.0, settings.tombstone_retention / 10))

    async def purge_tombstones() -> None:
        cutoff = int((time.time() - settings.tombstone_retention) * 1000)
        for spec in mirror.registry:
            try:
                purged = await asyncio.to_thread(mirror.store.purge_tombstones, spec, cutoff)
            except MirrorError as exc:  # the next round retries; nothing is lost meanwhile
                log.warning("tombstone purge of %s failed: %s", spec.kind, exc)
                continue
            if purged:
                log.info("purged %d %s tombstones older than the retention", purged, spec.kind)

    app.timer(interval, name=f"{settings.app_id}.purge-tombstones")(purge_tombstones)


def register_agents(
    app: faust.App,
    mirror: Mirror,
    settings: Settings,
    caches: Mapping[str, EntityCache] | None = None,
) -> None:
    """Declare one topic and one agent per registered entity (filling its cache, if any)."""
    caches = caches or {}
    applied = AppliedOffsets()
    guard = DeliveryGuard()
    mirrored: set[str] = set()
    register_offset_commits(app, applied)
    register_positioning(app, mirror, guard, applied, mirrored)
    for spec in mirror.registry:
        topic = _raw_topic(app, mirror.source_topic(spec), settings)
        agent_fun: Any
        if spec.repartition or spec.kind in settings.repartition:
            target = repartition_topic(mirror, spec, settings)
            agent_fun = make_forwarder(app, mirror, spec, settings, target, applied)
            app.agent(topic, name=f"{settings.app_id}.forward-{spec.kind}", concurrency=1)(
                agent_fun
            )
            topic = _raw_topic(app, target, settings)
        mirrored.add(topic.get_topic_name())
        agent_fun = make_agent(app, mirror, spec, settings, caches.get(spec.kind), applied, guard)
        # One instance per agent: concurrency > 1 can commit past an event still in flight
        # (faust-streaming#606).
        app.agent(topic, name=f"{settings.app_id}.mirror-{spec.kind}", concurrency=1)(agent_fun)


def repartition_topic(mirror: Mirror, spec: EntitySpec, settings: Settings) -> str:
    """Return the name of ``spec``'s repartition topic (one per consumer group)."""
    return f"{settings.app_id}-{mirror.source_topic(spec)}-repartition"


def _raw_topic(app: faust.App, name: str, settings: Settings) -> Any:
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topic_partitions,
        replicas=settings.topic_replicas,
        # Faust creates only "internal" topics when they are missing; the flag has no
        # other effect, and an existing topic is left as it is.
        internal=True,
    )
