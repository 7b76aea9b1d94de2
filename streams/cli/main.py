"""Command line: ``python -m streams status | verify | rebuild | dlq | sample-events | show``.

- ``status``: offsets, lag and staleness per partition, rows per table.
- ``verify KIND``: replay a topic in memory and compare it with its table.
- ``rebuild KIND``: empty a table and its tombstones, and apply its topic again.
- ``dlq list|redrive KIND``: list dead letters, or send them back to their source topic.
- ``sample-events``: publish sample Planet events.
- ``show KIND``: print the mirrored rows of an entity.

Expected failures (bad settings, broker unreachable, unknown kind) print one line on
stderr and exit 1; only a bug shows a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from streams.core.errors import MirrorError
from streams.core.keys import key_text
from streams.core.records import Partition
from streams.kafka.broker_failures import start_client
from streams.kafka.topics import partitions_of
from streams.ops.preflight import database_problem

if TYPE_CHECKING:
    from models.registry import EntitySpec
    from streams.apply.sql_applier import SqlApplier
from streams.settings import Settings

PLANETS = ["Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune", "Pluto"]


def sample_events() -> list[tuple[str, dict[str, Any]]]:
    """Return (key, event) pairs: every planet created, one renamed, Pluto deleted."""
    ids = {name: str(uuid.uuid5(uuid.NAMESPACE_URL, f"planet/{name}")) for name in PLANETS}
    events: list[tuple[str, dict[str, Any]]] = []
    for name in PLANETS:
        events.append(
            (ids[name], {"changeType": "CREATED", "planetUuid": ids[name], "planetName": name})
        )
    earth = ids["Earth"]
    events.append(
        (earth, {"changeType": "UPDATED", "planetUuid": earth, "planetName": "Earth (Terra)"})
    )
    events.append((ids["Pluto"], {"changeType": "DELETED", "planetUuid": ids["Pluto"]}))
    return events


async def _publish(settings: Settings, topic: str, events: Sequence[tuple[str, Any]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=settings.broker_hosts,
        **settings.kafka_client_options(),
        acks="all",
        request_timeout_ms=10_000,
    )
    await start_client(settings, producer.start(), producer.stop, timeout=15)
    try:
        for key, event in events:
            await producer.send_and_wait(topic, json.dumps(event).encode(), key=key.encode())
    finally:
        await producer.stop()


def cmd_sample_events(settings: Settings, count: int) -> int:
    """Publish sample Planet events to the configured broker."""
    events = sample_events()
    if count > len(events):
        for i in range(count - len(events)):
            key = str(uuid.uuid4())
            events.append((key, {"planetUuid": key, "planetName": f"Exoplanet {i}"}))
    else:
        events = events[:count]
    from streams.cli.operations import ensure_topic

    topic = f"{settings.topic_prefix}planet-changed"
    asyncio.run(ensure_topic(settings, topic))
    asyncio.run(_publish(settings, topic, events))
    print(f"sent {len(events)} events to {topic} at {settings.kafka_broker}")
    return 0


def cmd_show(settings: Settings, kind: str, wait: float) -> int:
    """Print the rows of one entity's table."""
    mirror, spec = _entity(settings, kind)
    deadline = time.monotonic() + wait
    mirror.store.create_tables([spec])
    rows = mirror.store.rows(spec)
    while not rows and time.monotonic() < deadline:
        time.sleep(0.5)
        rows = mirror.store.rows(spec)
    print(f"{spec.table.name} in {settings.database_url_safe}: {len(rows)} rows")
    for row in sorted(rows.values(), key=lambda r: key_text(spec.key_of(r))):
        print("  " + json.dumps(row, default=str))
    mirror.store.dispose()
    return 0


def _entity(settings: Settings, kind: str) -> tuple[SqlApplier, EntitySpec]:
    """Return the SqlApplier and the spec of ``kind``, or fail naming the declared kinds."""
    from streams.worker import build_mirror

    mirror = build_mirror(settings)
    spec = mirror.registry.by_kind(kind)
    if spec is None:
        known = ", ".join(s.kind for s in mirror.registry)
        raise MirrorError(f"unknown kind {kind!r}; declared kinds: {known}")
    return mirror, spec


def cmd_status(settings: Settings, metrics_urls: Sequence[str] = ()) -> int:
    """Print committed, stored and end offsets with the lag and staleness per partition, table
    rows, and the end-to-end delay per entity when workers' ``/metrics`` are given."""
    from streams.apply.agents import repartition_topic
    from streams.cli import operations
    from streams.core.staleness import stored_staleness
    from streams.kafka.topics import topic_ids
    from streams.worker import build_mirror

    mirror = build_mirror(settings)

    async def offset_lines(
        topic: str, stored: Mapping[Partition, int], forwarded_to: str = ""
    ) -> list[str]:
        """Describe ``topic``'s partitions: applied is the stored offset, or the group's
        committed one for a topic forwarded to a repartition topic (nothing stored)."""
        partitions = await partitions_of(settings, topic)
        if not partitions:
            return [f"{topic}: topic does not exist yet"]
        ends = await operations.end_offsets(settings, topic, partitions)
        committed = await operations.committed_offsets(settings, settings.app_id, topic)
        if forwarded_to:
            applied = {p: max(0, committed.get(p, 0)) for p in partitions}
        else:
            applied = {p: stored.get(Partition(topic, p), 0) for p in partitions}
        behind = {p: done for p, done in applied.items() if done < ends[p]}
        stamps = await operations.first_timestamps(settings, topic, behind)
        now = time.time()
        lines = [
            f"{topic} (group {settings.app_id}{forwarded_to}):",
            "  partition  committed  applied        end        lag  stale (s)",
        ]
        notes = []
        if not forwarded_to and (log := logs.get(topic)) is not None:
            now_id = ids.get(topic) if ids is not None else None
            if log.topic_id is not None and now_id is not None and log.topic_id != now_id:
                notes.append(
                    f"  ! the topic was created again since its offsets were stored (its id is "
                    f"{now_id}, they were stored for {log.topic_id}): a worker drops them and "
                    "applies its new log from the start"
                )
        for p, done in applied.items():
            if done > ends[p]:
                lines.append(
                    f"  {p:>9}  {committed.get(p, -1):>9}  {done:>7}  {ends[p]:>9}"
                    f"  {'above end':>9}  {'?':>9}"
                )
                notes.append(
                    f"  ! partition {p}: the offset applied ({done}) is above the log's end "
                    f"({ends[p]}): the topic was created again or the broker lost records; a "
                    "worker reads it again from its start (or its end, for lost records)"
                )
                continue
            stale = stored_staleness(done, ends[p], stamps.get(p), now)
            lines.append(
                f"  {p:>9}  {committed.get(p, -1):>9}  {done:>7}  {ends[p]:>9}"
                f"  {ends[p] - done:>9}  {_seconds(stale):>9}"
            )
        return lines + notes

    logs: dict[str, Any] = {}
    ids: dict[str, str] | None = None

    async def gather() -> list[str]:
        nonlocal logs, ids
        lines: list[str] = []
        stored = await asyncio.to_thread(mirror.store.stored_offsets, settings.app_id)
        logs = await asyncio.to_thread(mirror.store.known_logs)
        ids = await topic_ids(settings, sorted(logs))
        scraped = [await operations.scrape(settings, url) for url in metrics_urls]
        for spec in mirror.registry:
            source = mirror.source_topic(spec)
            if settings.repartitioned(spec):
                # Forwarded: the source's progress is the group's offset, the repartition
                # topic's is stored with the data.
                target = repartition_topic(mirror, spec, settings)
                lines += await offset_lines(source, stored, f", forwarded to {target}")
                lines += await offset_lines(target, stored)
            else:
                lines += await offset_lines(source, stored)
            rows = await asyncio.to_thread(mirror.store.count, spec)
            marked = ""
            if spec.soft_delete is not None:
                gone = await asyncio.to_thread(
                    functools.partial(mirror.store.count, spec, deleted=True)
                )
                marked = f" ({gone} soft-deleted)"
            lines.append(f"  table {spec.table.name}: {rows} rows{marked}")
            lines.append(f"  end-to-end delay: {_delay(scraped, spec.kind, len(metrics_urls))}")
        return lines

    mirror.store.create_tables(list(mirror.registry))
    for line in asyncio.run(gather()):
        print(line)
    mirror.store.dispose()
    return 0


def _seconds(value: float | None) -> str:
    """Format a staleness: 0 when caught up, ``?`` when the record there could not be read."""
    if value is None:
        return "?"
    return "0" if value == 0 else f"{value:.1f}"


def _delay(scraped: Sequence[str], kind: str, workers: int) -> str:
    """Describe the end-to-end delay of ``kind`` from workers' metrics, or why it is unknown."""
    from streams.cli.operations import delay_summary

    if not workers:
        return (
            "not known here (status reads the broker and the store, not a worker's memory; "
            "--metrics URL reads it from workers)"
        )
    summary = delay_summary(scraped, kind)
    if summary is None:
        return f"no batch applied yet by the {workers} worker(s) read"
    return (
        f"{summary.batches} batches on {workers} worker(s), oldest record's delay mean "
        f"{summary.mean:.2f} s, p50 <= {summary.p50:g} s, p99 <= {summary.p99:g} s"
    )


def cmd_verify(settings: Settings, kind: str, limit: int) -> int:
    """Compare the table with the state its topic implies; exit 1 when they differ."""
    from streams.cli import operations

    mirror, spec = _entity(settings, kind)
    mirror.store.create_tables([spec])
    progress = operations.Progress(f"verify {spec.kind}")
    ahead: list[operations.StampedAhead] = []
    expected = asyncio.run(operations.expected_state(settings, mirror, spec, progress, ahead))
    actual = mirror.store.rows(spec)
    held = {item.key for item in ahead}
    found: list[str] = []
    unsure: list[str] = []
    for key, line in operations.differences(spec, expected, actual):
        (unsure if key in held else found).append(line)
    for line in found[:limit]:
        print(line)
    mirror.store.dispose()
    if ahead:
        print(
            f"{len(ahead)} records were stamped further ahead than MAX_TIMESTAMP_AHEAD "
            f"({settings.max_timestamp_ahead:.0f} s): each counted that far ahead of when a "
            "worker read it, so it held its entity against events from other partitions no "
            "longer than that; fix their producers' clocks:"
        )
        for item in ahead[:limit]:
            print(f"  {item}")
    if unsure:
        print(
            f"{len(unsure)} rows of those entities differ from a replay now, which counts the "
            "records from now, not from when a worker read them (not counted as differences):"
        )
        for line in unsure[:limit]:
            print(f"  {line}")
    if found:
        print(f"{spec.table.name} differs from {mirror.source_topic(spec)} in {len(found)} rows")
        return 1
    print(f"{spec.table.name} matches {mirror.source_topic(spec)}: {len(actual)} rows")
    if not spec.cached:
        return 0
    return verify_cache(settings, spec, actual, limit)


def verify_cache(
    settings: Settings, spec: EntitySpec, rows: dict[Any, dict[str, Any]], limit: int
) -> int:
    """Compare the cached table's changelog with the SQL rows; exit 1 when they differ."""
    from streams.cli import operations
    from tables.cache import cache_key, cached_value, changelog_topic

    topic = changelog_topic(settings.app_id, spec.kind)
    cached = asyncio.run(operations.cache_state(settings, topic))
    if cached is None:
        print(f"no cache yet: {topic} does not exist (no worker of {settings.app_id} has run)")
        return 0
    expected = {cache_key(k).decode(): cached_value(row) for k, row in rows.items()}
    found = operations.cache_differences(expected, cached)
    for line in found[:limit]:
        print(line)
    if found:
        print(f"the cache ({topic}) differs from {spec.table.name} in {len(found)} keys")
        return 1
    print(f"the cache ({topic}) matches {spec.table.name}: {len(cached)} entries")
    return 0


def cmd_rebuild(settings: Settings, kind: str) -> int:
    """Empty the table of ``kind`` and replay its topic from the beginning."""
    from streams.cli import operations

    mirror, spec = _entity(settings, kind)
    replayed = asyncio.run(operations.rebuild(settings, mirror, spec))
    rows = mirror.store.count(spec)
    mirror.store.dispose()
    print(f"rebuilt {spec.table.name} from {replayed} records: {rows} rows")
    return 0


def cmd_dlq(settings: Settings, args: argparse.Namespace) -> int:
    """List or redrive the dead letters of one entity's topic."""
    from streams.apply.deadletters import dead_letter_topic
    from streams.ops.redrive import Selection, read_dead_letters, redrive

    mirror, spec = _entity(settings, args.kind)
    mirror.store.dispose()
    topic = dead_letter_topic(mirror.source_topic(spec), settings.dlq_suffix)
    selection = Selection(args.reason, args.partition, args.from_offset, args.to_offset)
    if args.action == "redrive":
        sent = asyncio.run(redrive(settings, topic, selection, dry_run=args.dry_run))
        verb = "would redrive" if args.dry_run else "redrove"
        detail = ", ".join(f"{reason}: {n}" for reason, n in sorted(sent.items())) or "nothing"
        print(f"{verb} {sum(sent.values())} dead letters from {topic} ({detail})")
        return 0

    async def show() -> int:
        shown = 0
        async for letter in read_dead_letters(settings, topic):
            if not selection.takes(letter):
                continue
            shown += 1
            if shown <= args.limit:
                info = letter.info
                print(
                    f"{topic}[{letter.partition}]@{letter.offset} from "
                    f"[{info.get('dlq.source.partition')}]@{info.get('dlq.source.offset')} "
                    f"{info.get('dlq.reason')}: {info.get('dlq.detail', '')[:120]}"
                )
        print(f"{shown} dead letters in {topic}" + (" (selected)" if shown else ""))
        return 0

    return asyncio.run(show())


#: The commands that read or write the mirror's tables.
DATABASE_COMMANDS = ("show", "status", "verify", "rebuild")


def require_database(settings: Settings) -> None:
    """Fail with the one line of :func:`database_problem` when DATABASE_URL is unusable."""
    problem = asyncio.run(database_problem(settings))
    if problem:
        raise MirrorError(problem)


def main(argv: list[str] | None = None) -> int:
    """Run the command line."""
    parser = argparse.ArgumentParser(prog="python -m streams")
    sub = parser.add_subparsers(dest="command", required=True)
    p_sample = sub.add_parser("sample-events", help="publish sample Planet events")
    p_sample.add_argument("--count", type=int, default=len(sample_events()))
    p_show = sub.add_parser("show", help="print the mirrored rows of an entity")
    p_show.add_argument("kind", nargs="?", default="planet")
    p_show.add_argument("--wait", type=float, default=0.0, help="wait up to S s for rows")
    p_dlq = sub.add_parser("dlq", help="list or redrive dead letters")
    p_dlq.add_argument("action", choices=["list", "redrive"])
    p_dlq.add_argument("kind", nargs="?", default="planet")
    p_dlq.add_argument("--reason", help="only dead letters with this dlq.reason")
    p_dlq.add_argument("--partition", type=int, help="only this source partition")
    p_dlq.add_argument("--from-offset", type=int, help="only source offsets from this one")
    p_dlq.add_argument("--to-offset", type=int, help="only source offsets up to this one")
    p_dlq.add_argument("--dry-run", action="store_true", help="redrive: count, send nothing")
    p_dlq.add_argument("--limit", type=int, default=50, help="list: show at most N")
    p_status = sub.add_parser(
        "status", help="offsets, lag and staleness per partition, rows per table"
    )
    p_status.add_argument(
        "--metrics",
        action="append",
        default=[],
        metavar="URL",
        help="a worker's web URL (repeatable): summarize its end-to-end delay histogram",
    )
    p_verify = sub.add_parser("verify", help="compare a table with its topic; exit 1 if differ")
    p_verify.add_argument("kind", nargs="?", default="planet")
    p_verify.add_argument("--limit", type=int, default=50, help="show at most N differences")
    p_rebuild = sub.add_parser("rebuild", help="empty a table and replay its topic")
    p_rebuild.add_argument("kind", nargs="?", default="planet")
    args = parser.parse_args(argv)
    # aiokafka logs each refused connection; the command says what to fix, once.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        settings = Settings.from_env()
        if args.command in DATABASE_COMMANDS:
            require_database(settings)
        if args.command == "sample-events":
            return cmd_sample_events(settings, args.count)
        if args.command == "dlq":
            return cmd_dlq(settings, args)
        if args.command == "status":
            return cmd_status(settings, args.metrics)
        if args.command == "verify":
            return cmd_verify(settings, args.kind, args.limit)
        if args.command == "rebuild":
            return cmd_rebuild(settings, args.kind)
        return cmd_show(settings, args.kind, args.wait)
    except MirrorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
