"""Faust agents: one per declared entity, each carrying its batches through its batch lanes.

The agent subscribes its entity's topic, so Faust's consumer group and partition assignor
cover it, but its records never pass Faust's streams: the consumer hands each fetched run
over (``streams.intake.faust_consumer``, ``streams.intake.handoff``) and the agent takes
batches from its feed and hands them to ``streams.apply.lane``, which owns the order of a
batch's effects.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from operator import attrgetter
from typing import Any

import faust
from aiokafka.errors import KafkaError

from models.registry import EntitySpec
from streams.apply.applied_offsets import AppliedOffsets
from streams.apply.deadletters import DeadLetterWriter, dead_letter_topic
from streams.apply.forwarder import FORWARD_BATCH_BYTES, Forwarder
from streams.apply.lane import BatchLane
from streams.apply.sql_applier import SqlApplier
from streams.core.backoff import Backoff
from streams.core.errors import MirrorError
from streams.core.records import ORIGIN_HEADER, Origin, Partition, SourceRecord
from streams.core.staleness import Head
from streams.intake.feed import Feed
from streams.intake.handoff import Handoff
from streams.kafka.producers import OwnProducer, passing_failure
from streams.kafka.topics import fit_repartition_topic, max_message_bytes
from streams.ops import metrics
from streams.settings import Settings
from tables.cache import EntityCache

log = logging.getLogger(__name__)

#: Longest wait, at a revocation, for the batch in flight to finish its effects.
REVOKE_WAIT_SECONDS = 20.0


async def retrying(what: str, call: Callable[[], Any]) -> Any:
    """Run the blocking ``call`` in a thread until it succeeds (start-up steps: create tables)."""
    return await _until_done(what, functools.partial(asyncio.to_thread, call))


class EntityAgents:
    """Everything that carries the mirrored topics' batches: feeds, lanes, offsets."""

    def __init__(self, app: faust.App, mirror: SqlApplier, settings: Settings, handoff: Handoff):
        self.app = app
        self.mirror = mirror
        self.settings = settings
        self.handoff = handoff
        self.applied = AppliedOffsets()
        self.dead_letters = DeadLetterWriter(settings)
        self.forward_max_bytes = 1024 * 1024
        """The largest record a forwarded source topic takes (sizes the forwarding producer)."""
        self.forward_producer = OwnProducer(
            settings,
            "forwarding",
            lambda: {
                "max_request_size": self.forward_max_bytes,
                "max_batch_size": FORWARD_BATCH_BYTES,
            },
        )
        self.lanes: list[BatchLane] = []
        self.forwarders: list[Forwarder] = []
        self.kafka_offset_topics: set[str] = set()
        """Topics read from the group's Kafka offsets (forwarded, nothing stored in SQL)."""

    def held_heads(self) -> dict[Partition, list[Head]]:
        """Return, per partition, the first records of the places its unapplied records wait
        in (batches on their way, then feeds), oldest place first."""
        found: dict[Partition, list[Head]] = {}
        lanes: list[BatchLane | Forwarder] = [*self.lanes, *self.forwarders]
        for lane in lanes:
            for tp, head in lane.heads():
                found.setdefault(Partition(*tp), []).append(head)  # type: ignore[misc]
        return found

    def next_offset(self, key: Partition) -> int | None:
        """Return the next offset to apply of ``key``: stored with the data for the mirrored
        topics, the group's applied offset for the forwarded ones (None: not positioned)."""
        stored = self.mirror.stored_offsets.get(key)
        applied = self.applied.next.get(key)
        if stored is None or applied is None:
            return stored if applied is None else applied
        return max(stored, applied)

    async def commit_applied(self, tps: Sequence[Any] | None = None) -> None:
        """Commit the applied offsets of ``tps`` (default: every assigned partition), past the
        offsets the consumer stepped over after them (``ReadPositions.read_past``: a
        transaction's marker ends most transactional logs), so that the group's lag reads 0
        when the worker's does."""
        applied = self.applied
        read = self.handoff.positions
        for key, offset in list(applied.next.items()):
            applied.applied_below(key, read.read_to(key, offset))
        await applied.commit(self.app.consumer, tps)

    async def on_revoked(self, revoked: set[Any]) -> None:
        """Let the batches in flight finish, then commit what is applied of ``revoked``."""
        lanes: list[BatchLane | Forwarder] = [*self.lanes, *self.forwarders]
        waits = [lane.idle.wait() for lane in lanes if not lane.idle.is_set()]
        if waits:
            _, pending = await asyncio.wait(
                [asyncio.ensure_future(w) for w in waits], timeout=REVOKE_WAIT_SECONDS
            )
            for task in pending:
                task.cancel()
        try:
            await self.commit_applied(sorted(revoked))
        except Exception as exc:  # the next owner starts from the offsets stored with the data
            log.warning("could not commit applied offsets at revocation: %r", exc)
        self.applied.forget(revoked)


def make_agent(
    agents: EntityAgents,
    spec: EntitySpec,
    feeds: Sequence[Feed],
    cache: EntityCache | None = None,
) -> Callable[[Any], Awaitable[None]]:
    """Build the agent function that mirrors ``spec``'s topic (and fills its ``cache``).

    One batch lane per feed: lanes apply batches of disjoint partitions at once, each in
    its own transactions, so that while one lane's batch waits on round trips to PostgreSQL,
    another's is routed or cached.
    """
    mirror, settings = agents.mirror, agents.settings
    source = mirror.source_topic(spec)
    dlq = dead_letter_topic(source, settings.dlq_suffix)
    lanes = [
        BatchLane(
            mirror,
            spec,
            agents.dead_letters,
            dlq,
            agents.handoff,
            agents.applied,
            cache,
            prepare=with_origins,
        )
        for _ in feeds
    ]
    agents.lanes.extend(lanes)

    async def mirror_entity(stream: Any) -> None:
        # The stream stays empty: records come through the feeds (see the module docstring).
        await retrying(
            f"create table {spec.table.name}", lambda: mirror.store.create_tables([spec])
        )
        await _until_done(f"create topic {dlq}", lambda: agents.dead_letters.prepare(source, dlq))
        await asyncio.gather(
            *(
                lane.run(feed, settings.batch_size, settings.batch_wait)
                for lane, feed in zip(lanes, feeds, strict=True)
            )
        )

    mirror_entity.__name__ = f"mirror_{spec.kind}"
    mirror_entity.__qualname__ = mirror_entity.__name__
    return mirror_entity


async def _until_done(what: str, step: Callable[[], Awaitable[Any]]) -> Any:
    """Await ``step()`` until it succeeds: a start-up step the agent cannot go without.

    Passing failures (the database or the broker unreachable) back off from 0.5 s; one no
    retry fixes (a privilege missing, a topic the broker will not create) is an error line
    each 30 s, so the operator sees what to fix while the worker waits for it.
    """
    backoff = Backoff()
    while True:
        try:
            return await step()
        except (MirrorError, KafkaError, OSError) as exc:
            passing = exc.retriable if isinstance(exc, MirrorError) else passing_failure(exc)
            if passing:
                delay = backoff.next()
                log.warning("%s failed, retrying in %.1fs: %r", what, delay, exc)
            else:
                delay = backoff.longest()
                log.error(
                    "%s failed and a retry will not fix it: %s; trying again in %.0f s",
                    what,
                    exc,
                    delay,
                )
        await asyncio.sleep(delay)


def make_forwarder(
    agents: EntityAgents, spec: EntitySpec, feeds: Sequence[Feed], target: str
) -> Callable[[Any], Awaitable[None]]:
    """Build the agent that re-keys ``spec``'s topic by entity key into ``target``
    (``streams.apply.forwarder.Forwarder``: the order of a forwarded batch's effects)."""
    settings = agents.settings
    source = agents.mirror.source_topic(spec)
    (feed,) = feeds  # one lane: forwarding keeps each source partition's order
    forwarder = Forwarder(
        spec,
        target,
        agents.forward_producer,
        agents.handoff,
        agents.applied,
        read_limit=functools.partial(max_message_bytes, settings, target),
    )
    agents.forwarders.append(forwarder)

    async def size_producer() -> None:
        largest, forwarder.limit = await fit_repartition_topic(settings, source, target)
        # Room for the origin header and the batch framing around one record.
        agents.forward_max_bytes = max(agents.forward_max_bytes, largest + 64 * 1024)

    async def forward_entity(stream: Any) -> None:
        # The stream stays empty: records come through the feed (see the module docstring).
        await _until_done(f"read the limits of {source} and {target}", size_producer)
        await forwarder.run(feed, settings.batch_size, settings.batch_wait)

    forward_entity.__name__ = f"forward_{spec.kind}"
    forward_entity.__qualname__ = forward_entity.__name__
    return forward_entity


def with_origins(records: list[Any]) -> list[Any]:
    """Return ``records`` with the first positions their ``mirror-origin`` headers name.

    Every mirrored topic, not only repartition topics: a redriven dead letter goes back to its
    source topic with the header, and must keep its first version (and be skipped as stale if
    the entity changed since). The hot path: when no record has headers, or none names its
    origin, ``records`` itself is returned (callers tell by identity that nothing changed).
    """
    if not any(map(_headers_of, records)):
        return records
    out: list[Any] | None = None
    for i, record in enumerate(records):
        if record.headers:
            prepared = with_origin(record)
            if prepared is not record:
                if out is None:
                    out = list(records)
                out[i] = prepared
    return records if out is None else out


_headers_of = attrgetter("headers")


def with_origin(record: Any) -> Any:
    """Return ``record`` with the first position its ``mirror-origin`` header names, if any."""
    for name, raw in record.headers or ():
        if name == ORIGIN_HEADER:
            origin = Origin.from_header(raw)
            if origin is not None:
                return SourceRecord(
                    record.topic,
                    record.partition,
                    record.offset,
                    record.timestamp,
                    record.key,
                    record.value,
                    tuple((k, v if isinstance(v, bytes) else b"") for k, v in record.headers),
                    origin,
                )
    return record


def register_tombstone_purge(app: faust.App, mirror: SqlApplier, settings: Settings) -> None:
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
    mirror: SqlApplier,
    settings: Settings,
    handoff: Handoff,
    caches: Mapping[str, EntityCache] | None = None,
) -> EntityAgents:
    """Declare one topic and one agent per registered entity (filling its cache, if any)."""
    caches = caches or {}
    agents = EntityAgents(app, mirror, settings, handoff)
    for spec in mirror.registry:
        topic = _raw_topic(app, mirror.source_topic(spec), settings)
        if settings.repartitioned(spec):
            target = repartition_topic(mirror, spec, settings)
            forwarded = handoff.add_topic(topic.get_topic_name())
            agents.kafka_offset_topics.add(topic.get_topic_name())
            app.agent(topic, name=f"{settings.app_id}.forward-{spec.kind}", concurrency=1)(
                make_forwarder(agents, spec, forwarded, target)
            )
            topic = _raw_topic(app, target, settings)
        feeds = handoff.add_topic(topic.get_topic_name(), lanes=settings.apply_lanes)
        metrics.declare_entity(spec.kind, topic.get_topic_name())
        agent_fun = make_agent(agents, spec, feeds, caches.get(spec.kind))
        # One instance per agent: batches of one partition must be applied in order.
        app.agent(topic, name=f"{settings.app_id}.mirror-{spec.kind}", concurrency=1)(agent_fun)

    return agents


def repartition_topic(mirror: SqlApplier, spec: EntitySpec, settings: Settings) -> str:
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
