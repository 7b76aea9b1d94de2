"""Command line: ``entity-mirror`` (or ``python -m streams``) ``status | verify | rebuild | dlq |
sample-events | show``.

- ``status``: offsets, lag and staleness per partition, rows per table.
- ``verify KIND``: replay a topic in memory and compare it with its table.
- ``rebuild KIND``: empty a table and its tombstones, and apply its topic again.
- ``dlq list|redrive KIND``: list dead letters, or send them back to their source topic.
- ``sample-events``: publish sample Planet events.
- ``show KIND``: print the mirrored rows of an entity.

``status``, ``verify`` and ``dlq`` print one JSON document with ``--json``
(:mod:`streams.cli.reports`). Every command exits with a code of :class:`reports.Exit`:
expected failures (bad settings, broker unreachable, unknown kind) print one line on stderr and
exit 1; only a bug shows a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import logging
import sys
import textwrap
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from streams.cli import reports
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


def emit(lines: Sequence[str], document: dict[str, Any] | None) -> None:
    """Print the lines for people, or the one JSON document for scripts (``--json``)."""
    if document is not None:
        print(reports.document(document))
        return
    for line in lines:
        print(line)


def cmd_status(
    settings: Settings, metrics_urls: Sequence[str] = (), *, max_lag: int = 0, as_json: bool = False
) -> int:
    """Print committed, stored and end offsets with the lag and staleness per partition, table
    rows, and the end-to-end delay per entity when workers' ``/metrics`` are given; exit
    BEHIND when a partition's lag is above ``max_lag``."""
    report = status_report(settings, metrics_urls, max_lag)
    emit(reports.status_lines(report), reports.status_json(report) if as_json else None)
    return report.exit_code


def status_report(
    settings: Settings, metrics_urls: Sequence[str], max_lag: int
) -> reports.StatusReport:
    """Read every entity's offsets (broker and store), rows and delay into a report."""
    from streams.apply.agents import repartition_topic
    from streams.cli import operations
    from streams.core.staleness import stored_staleness
    from streams.kafka.topics import topic_ids
    from streams.worker import build_mirror

    mirror = build_mirror(settings)
    logs: dict[str, Any] = {}
    ids: dict[str, str] | None = None

    async def topic_status(
        topic: str, stored: Mapping[Partition, int], forwarded_to: str | None = None
    ) -> reports.TopicStatus:
        """Read ``topic``'s partitions: applied is the stored offset, or the group's committed
        one for a topic forwarded to a repartition topic (nothing stored)."""
        partitions = await partitions_of(settings, topic)
        if not partitions:
            return reports.TopicStatus(topic, exists=False)
        ends = await operations.end_offsets(settings, topic, partitions)
        committed = await operations.committed_offsets(settings, settings.app_id, topic)
        if forwarded_to:
            applied = {p: max(0, committed.get(p, 0)) for p in partitions}
        else:
            applied = {p: stored.get(Partition(topic, p), 0) for p in partitions}
        behind = {p: done for p, done in applied.items() if done < ends[p]}
        stamps = await operations.first_timestamps(settings, topic, behind, ends)
        # Read to the end without a record: the offsets left are no records to apply.
        stepped_over = {p: ends[p] - behind[p] for p, stamp in stamps.items() if stamp is None}
        now = time.time()
        recreated = None
        if not forwarded_to and (log := logs.get(topic)) is not None:
            now_id = ids.get(topic) if ids is not None else None
            if log.topic_id is not None and now_id is not None and log.topic_id != now_id:
                recreated = (str(log.topic_id), str(now_id))
        rows = tuple(
            reports.PartitionStatus(
                partition=p,
                committed=committed.get(p),
                applied=done,
                end=ends[p],
                stale_seconds=None
                if done > ends[p]
                else stored_staleness(done + stepped_over.get(p, 0), ends[p], stamps.get(p), now),
                stepped_over=stepped_over.get(p, 0),
            )
            for p, done in applied.items()
        )
        return reports.TopicStatus(topic, True, rows, forwarded_to, recreated)

    async def gather() -> list[reports.EntityStatus]:
        nonlocal logs, ids
        entities = []
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
                topics: tuple[reports.TopicStatus, ...] = (
                    await topic_status(source, stored, target),
                    await topic_status(target, stored),
                )
            else:
                topics = (await topic_status(source, stored),)
            rows = await asyncio.to_thread(mirror.store.count, spec)
            gone = None
            if spec.soft_delete is not None:
                gone = await asyncio.to_thread(
                    functools.partial(mirror.store.count, spec, deleted=True)
                )
            entities.append(
                reports.EntityStatus(
                    spec.kind, spec.table.name, rows, gone, topics, _delay(scraped, spec.kind)
                )
            )
        return entities

    mirror.store.create_tables(list(mirror.registry))
    try:
        entities = asyncio.run(gather())
    finally:
        mirror.store.dispose()
    return reports.StatusReport(settings.app_id, tuple(entities), max_lag)


def _delay(scraped: Sequence[str], kind: str) -> reports.DelayReport:
    """Summarize the end-to-end delay of ``kind`` from the workers' metrics read."""
    from streams.cli.operations import delay_summary

    summary = delay_summary(scraped, kind) if scraped else None
    if summary is None:
        return reports.DelayReport(len(scraped))
    return reports.DelayReport(
        len(scraped), summary.batches, summary.mean, summary.p50, summary.p99
    )


def cmd_verify(settings: Settings, kind: str, limit: int, *, as_json: bool = False) -> int:
    """Compare the table (then its cache) with the state its topic implies; exit DIFFERS when
    they differ."""
    report = verify_report(settings, kind, limit)
    emit(reports.verify_lines(report), reports.verify_json(report) if as_json else None)
    return report.exit_code


def verify_report(settings: Settings, kind: str, limit: int) -> reports.VerifyReport:
    """Replay ``kind``'s topic and compare it with the table, then the cache with the table."""
    from streams.cli import operations

    mirror, spec = _entity(settings, kind)
    try:
        mirror.store.create_tables([spec])
        progress = operations.Progress(f"verify {spec.kind}")
        ahead: list[operations.StampedAhead] = []
        expected = asyncio.run(operations.expected_state(settings, mirror, spec, progress, ahead))
        actual = mirror.store.rows(spec)
    finally:
        mirror.store.dispose()
    held = {item.key for item in ahead}
    found: list[reports.Difference] = []
    unsure: list[reports.Difference] = []
    for key, difference in operations.differences(spec, expected, actual):
        (unsure if key in held else found).append(difference)
    report = reports.VerifyReport(
        kind=spec.kind,
        table=spec.table.name,
        topic=mirror.source_topic(spec),
        group=settings.app_id,
        rows=len(actual),
        differences=tuple(found),
        unsure=tuple(unsure),
        ahead=tuple(
            reports.Ahead(
                item.topic,
                item.partition,
                item.offset,
                None if item.key is None else key_text(item.key),
                item.seconds,
                str(item),
            )
            for item in ahead
        ),
        max_timestamp_ahead=settings.max_timestamp_ahead,
        limit=limit,
    )
    if found or not spec.cached:
        return report
    return dataclasses.replace(report, cache=verify_cache(settings, spec, actual))


def verify_cache(
    settings: Settings, spec: EntitySpec, rows: dict[Any, dict[str, Any]]
) -> reports.CacheCheck:
    """Compare the cached table's changelog with the SQL rows."""
    from streams.cli import operations
    from tables.cache import cache_key, cached_value, changelog_topic

    topic = changelog_topic(settings.app_id, spec.kind)
    cached = asyncio.run(operations.cache_state(settings, topic))
    if cached is None:
        return reports.CacheCheck(topic, exists=False)
    expected = {cache_key(k).decode(): cached_value(row) for k, row in rows.items()}
    found = operations.cache_differences(expected, cached)
    return reports.CacheCheck(topic, True, len(cached), tuple(found))


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
        document = {
            "topic": topic,
            "dry_run": args.dry_run,
            "count": sum(sent.values()),
            "reasons": dict(sorted(sent.items())),
        }
        line = f"{verb} {sum(sent.values())} dead letters from {topic} ({detail})"
        emit([line], document if args.json else None)
        return reports.Exit.OK

    async def listing() -> reports.DeadLetterList:
        count = 0
        letters = []
        async for letter in read_dead_letters(settings, topic):
            if not selection.takes(letter):
                continue
            count += 1
            if count <= args.limit:
                letters.append(reports.DeadLetterLine(letter.partition, letter.offset, letter.info))
        return reports.DeadLetterList(topic, count, tuple(letters))

    found = asyncio.run(listing())
    emit(reports.dead_letter_lines(found), reports.dead_letters_json(found) if args.json else None)
    return reports.Exit.OK


#: The commands that read or write the mirror's tables.
DATABASE_COMMANDS = ("show", "status", "verify", "rebuild")


def require_database(settings: Settings) -> None:
    """Fail with the one line of :func:`database_problem` when DATABASE_URL is unusable."""
    problem = asyncio.run(database_problem(settings))
    if problem:
        raise MirrorError(problem)


def main(argv: list[str] | None = None, prog: str = "entity-mirror") -> int:
    """Run the command line (the ``entity-mirror`` console script; ``python -m streams``)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Operate the entity mirror: its settings are the worker's environment.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
        "status",
        help="offsets, lag and staleness per partition, rows per table; exit 3 when behind",
    )
    p_status.add_argument(
        "--metrics",
        action="append",
        default=[],
        metavar="URL",
        help="a worker's web URL (repeatable): summarize its end-to-end delay histogram",
    )
    p_status.add_argument(
        "--max-lag",
        type=_count,
        default=0,
        metavar="N",
        help="a partition this many records behind still counts as caught up (exit 0)",
    )
    p_verify = sub.add_parser("verify", help="compare a table with its topic; exit 4 if differ")
    p_verify.add_argument("kind", nargs="?", default="planet")
    p_verify.add_argument("--limit", type=int, default=50, help="show at most N differences")
    for command in (p_status, p_verify, p_dlq):
        command.add_argument(
            "--json",
            action="store_true",
            help="print one JSON document on stdout (README: Scripts), not the text",
        )
    p_rebuild = sub.add_parser("rebuild", help="empty a table and replay its topic")
    p_rebuild.add_argument("kind", nargs="?", default="planet")
    args = parser.parse_args(argv)  # a bad command line exits USAGE (2), argparse's
    # aiokafka logs each refused connection; the command says what to fix, once.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    return int(run(args))


def run(args: argparse.Namespace) -> int:
    """Run the command ``args`` name; return its exit code (:class:`reports.Exit`)."""
    try:
        settings = Settings.from_env()
        if args.command in DATABASE_COMMANDS:
            require_database(settings)
        if args.command == "sample-events":
            return cmd_sample_events(settings, args.count)
        if args.command == "dlq":
            return cmd_dlq(settings, args)
        if args.command == "status":
            return cmd_status(settings, args.metrics, max_lag=args.max_lag, as_json=args.json)
        if args.command == "verify":
            return cmd_verify(settings, args.kind, args.limit, as_json=args.json)
        if args.command == "rebuild":
            return cmd_rebuild(settings, args.kind)
        return cmd_show(settings, args.kind, args.wait)
    except MirrorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return reports.Exit.ERROR


def _count(text: str) -> int:
    """Parse a count of records (0 or more) for argparse."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is below 0")
    return value


#: The exit codes, as ``--help`` shows them (README's "Scripts" lists the same).
EXIT_CODES = "exit codes:\n" + "\n".join(
    textwrap.fill(
        meaning,
        width=79,
        initial_indent=f"  {code.value}  {code.name.lower():<8} ",
        subsequent_indent=" " * 14,
    )
    for code, meaning in reports.MEANINGS.items()
)
