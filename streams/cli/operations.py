"""Operator commands: ``status``, ``verify KIND`` and ``rebuild KIND``.

``verify`` and ``rebuild`` read the entity topic from the beginning and run it through the
same core as the workers (route, version guard), so what they expect is exactly what the
workers must have produced.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete

from models.registry import EntitySpec
from models.store import offsets_table
from streams.apply.sql_applier import SqlApplier, fast_loads
from streams.cli.reports import Difference
from streams.core.decisions import Rejection
from streams.core.errors import MirrorError
from streams.core.guard import Current, resolve
from streams.core.keys import key_text
from streams.core.records import EntityKey, SourceRecord
from streams.core.routing import lift_to_floor, route
from streams.kafka import aiokafka_fixes
from streams.kafka.topics import consumer_options, partitions_of, with_admin
from streams.settings import Settings


async def ensure_topic(settings: Settings, topic: str) -> None:
    """Create ``topic`` with TOPIC_PARTITIONS and TOPIC_REPLICAS when it is missing.

    A broker that auto-creates topics would give it its default partition count, which a
    cached entity's changelog cannot be co-partitioned with.
    """
    from aiokafka.admin import NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    async def call(admin: Any) -> None:
        if topic in await admin.list_topics():
            return
        new = NewTopic(topic, settings.topic_partitions, settings.topic_replicas)
        with contextlib.suppress(TopicAlreadyExistsError):  # created meanwhile, by a worker
            await admin.create_topics([new])

    await with_admin(settings, call)


async def end_offsets(settings: Settings, topic: str, partitions: list[int]) -> dict[int, int]:
    """Return the end offset of each partition."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.broker_hosts,
        **consumer_options(settings),
    )
    await consumer.start()
    await asyncio.sleep(0)  # let aiokafka's coordinator task start before any stop()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: int(o) for tp, o in ends.items()}
    finally:
        await consumer.stop()


async def committed_offsets(settings: Settings, group: str, topic: str) -> dict[int, int]:
    """Return the consumer group's committed offsets on ``topic``."""

    async def call(admin: Any) -> dict[int, int]:
        offsets = await admin.list_consumer_group_offsets(group)
        return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}

    result: dict[int, int] = await with_admin(settings, call)
    return result


async def read_topic(
    settings: Settings, topic: str, progress: Progress | None = None
) -> AsyncIterator[list[SourceRecord]]:
    """Yield the topic's records in batches, from the beginning to its current end."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    aiokafka_fixes.install()  # records can carry header keys that are not UTF-8
    partitions = await partitions_of(settings, topic)
    if not partitions:
        raise MirrorError(f"topic {topic!r} does not exist")
    ends = await end_offsets(settings, topic, partitions)
    if progress is not None:
        progress.total = sum(ends.values())
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.broker_hosts,
        **consumer_options(settings),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        remaining = {p: end for p, end in ends.items() if end > 0}
        idle = 0
        while remaining and idle < 10:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            idle = 0 if batch else idle + 1
            records = []
            for tp, messages in batch.items():
                for m in messages:
                    if m.offset < ends[tp.partition]:
                        records.append(
                            SourceRecord(
                                m.topic,
                                m.partition,
                                m.offset,
                                m.timestamp,
                                m.key,
                                m.value,
                                tuple(m.headers or ()),
                            )
                        )
            for tp in parts:
                # The position, not the last record: a log can end with a transaction's marker.
                if tp.partition in remaining and await consumer.position(tp) >= ends[tp.partition]:
                    del remaining[tp.partition]
            if records:
                if progress is not None:
                    progress.advance(len(records))
                yield records
    finally:
        await consumer.stop()
        if progress is not None:
            progress.done()


@dataclass
class Progress:
    """A one-line progress bar on stderr (plain lines every 10 % when not a terminal)."""

    label: str
    total: int = 0
    seen: int = 0
    _last_decile: int = -1

    def advance(self, n: int) -> None:
        """Count ``n`` more records."""
        self.seen += n
        share = self.seen / self.total if self.total else 1.0
        if sys.stderr.isatty():
            bar = "#" * int(30 * share)
            print(
                f"\r{self.label} [{bar:<30}] {self.seen:,}/{self.total:,}",
                end="",
                file=sys.stderr,
                flush=True,
            )
        elif int(share * 10) != self._last_decile:
            self._last_decile = int(share * 10)
            print(f"{self.label}: {self.seen:,}/{self.total:,}", file=sys.stderr, flush=True)

    def done(self) -> None:
        """End the bar's line."""
        if sys.stderr.isatty():
            print(file=sys.stderr)


@dataclass(frozen=True, slots=True)
class StampedAhead:
    """A record stamped further ahead of the record after it in its partition (or of now, for
    the last) than MAX_TIMESTAMP_AHEAD: its producer's clock was ahead."""

    topic: str
    partition: int
    offset: int
    key: EntityKey | None
    seconds: float
    """How far ahead, in seconds."""

    def __str__(self) -> str:
        key = None if self.key is None else key_text(self.key)
        return (
            f"{self.topic}[{self.partition}]@{self.offset} (key {key!r}) is stamped "
            f"{self.seconds:.0f} s ahead of the record after it"
        )


async def expected_state(
    settings: Settings,
    mirror: SqlApplier,
    spec: EntitySpec,
    progress: Progress | None = None,
    ahead: list[StampedAhead] | None = None,
) -> dict[EntityKey, dict[str, Any]]:
    """Replay the entity topic through the core in memory: the rows the table must hold.

    Versions as the workers give them: timestamps believed up to MAX_TIMESTAMP_AHEAD past now,
    and at least the topic's version floor if it was found recreated. Records whose producer's
    clock ran ahead (see :class:`StampedAhead`) are added to ``ahead``.
    """
    state: dict[EntityKey, Current] = {}
    rows: dict[EntityKey, dict[str, Any]] = {}
    soft = spec.soft_delete
    topic = mirror.source_topic(spec)
    known = await asyncio.to_thread(mirror.store.known_logs)
    floor = known[topic].version_floor if topic in known else None
    tolerance = int(mirror.timestamps_ahead * 1000)
    last: dict[int, tuple[SourceRecord, EntityKey | None]] = {}

    def note_ahead(record: SourceRecord, key: EntityKey | None, next_stamp: int) -> None:
        if ahead is not None and record.timestamp - next_stamp > tolerance:
            seconds = (record.timestamp - next_stamp) / 1000
            ahead.append(StampedAhead(record.topic, record.partition, record.offset, key, seconds))

    async for records in read_topic(settings, topic, progress):
        clock = mirror.clock()
        decisions = [route(r, spec, fast_loads, clock) for r in records]
        if floor is not None and spec.version_field is None:
            decisions = lift_to_floor(decisions, floor)
        for record, decision in zip(records, decisions, strict=True):
            previous = last.get(record.partition)
            if previous is not None:
                note_ahead(*previous, record.timestamp)
            key = None if isinstance(decision, Rejection) else decision.key
            last[record.partition] = (record, key)
        plan = resolve(decisions, state, soft_deletes=soft is not None)
        for key in plan.recreated:
            rows.pop(key, None)
        for key, upsert in plan.upserts.items():
            rows[key] = {**rows.get(key, {}), **upsert.row}
            state[key] = Current(row=upsert.version)
        for key, patch in plan.patches.items():
            rows[key].update(patch.row)
            state[key] = Current(row=patch.version)
        for key, removal in plan.deletes.items():
            if soft is None:
                rows.pop(key, None)
                state[key] = Current(tombstone=removal.version)
            elif key in rows:  # the row stays, marked deleted
                rows[key][soft] = SOFT_DELETED
                state[key] = Current(row=removal.version, tombstone=removal.version)
            else:
                state[key] = Current(tombstone=removal.version)
    now = int(time.time() * 1000)
    for record, key in last.values():
        note_ahead(record, key, now)
    return rows


class _SoftDeleted:
    """What :func:`expected_state` says of a soft-deleted row's column: set (to any time)."""

    def __eq__(self, other: object) -> bool:
        return other is not None

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "<deleted>"


SOFT_DELETED = _SoftDeleted()


def differences(
    spec: EntitySpec,
    expected: dict[EntityKey, dict[str, Any]],
    actual: dict[EntityKey, dict[str, Any]],
) -> list[tuple[EntityKey, Difference]]:
    """Describe how the table differs from the expected rows (bookkeeping columns ignored),
    each difference with its key."""
    found: list[tuple[EntityKey, Difference]] = []
    for key in sorted(set(expected) | set(actual), key=key_text):
        want, got = expected.get(key), actual.get(key)
        text = key_text(key)
        if want is None:
            found.append((key, Difference(text, "extra", f"extra row {text!r}: {_visible(got)}")))
        elif got is None:
            found.append((key, Difference(text, "missing", f"missing row {text!r}: {want}")))
        else:
            changed = {c: (v, got.get(c)) for c, v in want.items() if got.get(c) != v}
            if changed:
                detail = ", ".join(
                    f"{c}: table {g!r}, topic {w!r}" for c, (w, g) in changed.items()
                )
                found.append((key, Difference(text, "differs", f"row {text!r} differs: {detail}")))
    return found


def _visible(row: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (row or {}).items() if not k.startswith("mirror_")}


async def rebuild(settings: Settings, mirror: SqlApplier, spec: EntitySpec) -> int:
    """Empty the entity's table and tombstones and apply its topic again from the start.

    Runs as its own consumer group (``<APP_ID>.rebuild``), through the same SqlApplier: safe
    while workers run, since the version guard keeps the newest state whoever applies it.
    """
    group = f"{settings.app_id}.rebuild"
    topic = mirror.source_topic(spec)
    mirror.store.create_tables([spec])
    with mirror.store.engine.begin() as conn:
        conn.execute(delete(spec.table))
        conn.execute(delete(spec.tombstone_table))
        conn.execute(
            delete(offsets_table).where(
                offsets_table.c.consumer_group == group, offsets_table.c.topic == topic
            )
        )
    rebuilder = SqlApplier(
        mirror.registry,
        mirror.store,
        group=group,
        topic_prefix=mirror.topic_prefix,
        timestamps_ahead=mirror.timestamps_ahead,
    )
    progress = Progress(f"rebuild {spec.kind}")
    applied = 0
    async for records in read_topic(settings, topic, progress):
        applied += len(records)
        await asyncio.to_thread(rebuilder.apply, spec, records)
    return applied


async def cache_state(settings: Settings, topic: str) -> dict[str, Any] | None:
    """Read a cached table's changelog: the last value per key in the partition its key hashes
    to, where reads look (None when the topic is absent). Entries elsewhere were placed before
    partitions were added, and are never read."""
    from tables.partitioner import key_partition

    partitions = await partitions_of(settings, topic)
    if not partitions:
        return None
    latest: dict[str, Any] = {}
    async for records in read_topic(settings, topic):
        for record in records:
            if record.key is None or key_partition(record.key, len(partitions)) != record.partition:
                continue
            key = record.key.decode()
            if record.value is None:
                latest.pop(key, None)
            else:
                latest[key] = fast_loads(record.value)
    return latest


def cache_differences(expected: dict[str, Any], cached: dict[str, Any]) -> list[Difference]:
    """Describe how a cached table differs from the values its SQL rows imply."""
    found = []
    for key in sorted(set(expected) | set(cached)):
        want, got = expected.get(key), cached.get(key)
        if want is None:
            text = f"cache has an entry the table lacks {key!r}: {got}"
            found.append(Difference(key, "extra", text))
        elif got is None:
            found.append(Difference(key, "missing", f"cache lacks {key!r}: {want}"))
        elif want != got:
            text = f"cache entry {key!r} differs: cache {got}, table {want}"
            found.append(Difference(key, "differs", text))
    return found


async def first_timestamps(
    settings: Settings,
    topic: str,
    offsets: Mapping[int, int],
    ends: Mapping[int, int],
    timeout: float = 5.0,
) -> dict[int, int | None]:
    """Return the timestamp (ms) of the first record at or after ``offsets[p]``, per partition
    (where it was first produced, for a record forwarded with a ``mirror-origin`` header); None
    for a partition read to ``ends[p]`` without a record (its last offsets are a transaction's
    markers, or an aborted transaction's records: nothing is left to apply).

    A short read, for ``status``: a partition whose record does not come within ``timeout``
    seconds is left out. An offset below the log start reads from the log start (the records
    in between are gone: the oldest one left is the oldest unapplied).
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    if not offsets:
        return {}
    aiokafka_fixes.install()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.broker_hosts,
        **consumer_options(settings),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    found: dict[int, int | None] = {}
    try:
        parts = {p: TopicPartition(topic, p) for p in offsets}
        consumer.assign(list(parts.values()))
        for p, tp in parts.items():
            consumer.seek(tp, offsets[p])
        deadline = asyncio.get_running_loop().time() + timeout
        while len(found) < len(parts):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            waiting = [tp for p, tp in parts.items() if p not in found]
            batch = await consumer.getmany(*waiting, timeout_ms=int(min(left, 1.0) * 1000))
            for tp in waiting:
                messages = batch.get(tp)
                if messages:
                    found[tp.partition] = _first_timestamp(messages[0])
                elif await consumer.position(tp) >= ends[tp.partition]:
                    found[tp.partition] = None
                else:
                    continue
                consumer.pause(tp)
    finally:
        await consumer.stop()
    return found


def _first_timestamp(message: Any) -> int:
    """Return when ``message`` was first produced (ms): its origin's, if forwarded."""
    from streams.core.records import ORIGIN_HEADER, Origin

    for name, raw in message.headers or ():
        if name == ORIGIN_HEADER and (origin := Origin.from_header(raw)) is not None:
            return origin.timestamp
    return int(message.timestamp)


async def scrape(settings: Settings, url: str) -> str:
    """Return the Prometheus text of a worker's ``/metrics`` (with API_TOKEN, if set)."""
    import aiohttp

    headers = {"Authorization": f"Bearer {settings.api_token}"} if settings.api_token else {}
    target = url.rstrip("/")
    target = target if target.endswith("/metrics") else f"{target}/metrics"
    try:
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(target, headers=headers) as response,
        ):
            if response.status != 200:
                raise MirrorError(f"{target} answered {response.status}")
            return await response.text()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise MirrorError(f"cannot read {target}: {exc!r}") from None


@dataclass(frozen=True, slots=True)
class DelaySummary:
    """The end-to-end delay histogram of one entity, summed over the workers read."""

    batches: int
    """Observations: one per applied batch (its oldest record's delay)."""
    mean: float
    """Mean delay, seconds."""
    p50: float
    """Upper bound of the bucket holding the median, seconds (inf: above the last bound)."""
    p99: float
    """Upper bound of the bucket holding the 99th percentile, seconds."""


def delay_summary(texts: Sequence[str], kind: str) -> DelaySummary | None:
    """Sum ``mirror_end_to_end_delay_seconds{entity=kind}`` over workers' metrics ``texts``
    and summarize it (None when no worker has applied a batch of ``kind``)."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[float, float] = {}
    count = total = 0.0
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name != "mirror_end_to_end_delay_seconds":
                continue
            for sample in family.samples:
                if sample.labels.get("entity") != kind:
                    continue
                if sample.name.endswith("_bucket"):
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
                elif sample.name.endswith("_count"):
                    count += sample.value
                elif sample.name.endswith("_sum"):
                    total += sample.value
    if not count:
        return None

    def quantile(q: float) -> float:
        for bound in sorted(buckets):
            if buckets[bound] >= q * count:
                return bound
        return math.inf

    return DelaySummary(int(count), total / count, quantile(0.5), quantile(0.99))
