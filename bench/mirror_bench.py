"""Benchmark: this project's worker beside its peers, the naive path and the raw limits.

On the real local Kafka broker and PostgreSQL (started by devservices), on the same data,
each path into an empty table of its own database:

1. ``mirror``: one ``faust -A streams.app worker`` process, empty table to caught up:
   events/s end to end and the worker's peak RSS.
2. ``quix``, ``debezium``: the peers (``bench/peers/``), each from a fresh topic of its own
   holding the same events (re-encoded for Debezium), timed by the same clock
   (``bench/measure.py``); ``--no-peers`` leaves them out, as ``--quick`` does.
3. ``naive``: the seed's pattern, one event at a time: read the row, then insert, update
   or delete it through the same SQLAlchemy model, one transaction per event, consuming
   with aiokafka.
4. ``raw_consume``: aiokafka reading the topic with no processing at all.
5. ``raw_write``: every event's row upserted into PostgreSQL with psycopg2
   ``execute_values`` in pages of 2,000 (folded per page), as fast as Python can.

Every table a path leaves is checked against the newest state of each key. Then a second
topic with ``--rss-factor`` times the events, for the worker only, to see whether its
peak RSS stays flat. Prints a table and one JSON line (``BENCH_JSON {...}``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402
from sqlalchemy import create_engine, delete, select  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from bench import measure  # noqa: E402
from bench.measure import Event  # noqa: E402
from bench.peers import PeerSkipped  # noqa: E402
from bench.peers import debezium as peer_debezium  # noqa: E402
from bench.peers import quix as peer_quix  # noqa: E402
from devservices import kafka as dev_kafka  # noqa: E402
from devservices import postgres as dev_postgres  # noqa: E402
from models.planet import Planet  # noqa: E402
from models.registry import build_spec  # noqa: E402
from models.store import SqlStore  # noqa: E402

PLANET = build_spec(Planet)
PEERS = {"quix": peer_quix, "debezium": peer_debezium}
#: The live rows (uuid, name) each path's table ends with, for the check against the events.
LIVE_ROWS_SQL = {
    "mirror": f"SELECT uuid, name FROM {PLANET.table.name}",
    "naive": f"SELECT uuid, name FROM {PLANET.table.name}",
    "raw_write": "SELECT uuid, name FROM raw_planet",
    **{name: peer.LIVE_ROWS_SQL for name, peer in PEERS.items()},
}


def make_events(count: int, entities: int, seed: int) -> list[Event]:
    """About 20 % CREATED, 60 % UPDATED, 10 % no changeType, 10 % DELETED; ~400-byte values."""
    rng = random.Random(seed)
    keys = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(entities)]
    events = []
    for i in range(count):
        key = keys[rng.randrange(entities)]
        roll = rng.random()
        body: dict[str, Any] = {
            "planetUuid": key,
            "planetName": f"Planet {i} of system {rng.randrange(1000)}",
            "massKg": rng.random() * 1e25,
            "radiusKm": rng.random() * 70_000,
            "orbitalPeriodDays": rng.random() * 10_000,
            "discoveredBy": rng.choice(["Kepler", "TESS", "Hubble", "JWST", "ground survey"]),
            "discoveredAt": "2026-11-29T04:21:00Z",
            "habitable": rng.random() < 0.1,
            "moons": rng.randrange(80),
            "atmosphere": {"n2": 0.78, "o2": 0.21, "ar": 0.0093},
            "tags": ["rocky", "inner", "survey-7"],
            "updatedBy": "service-a",
        }
        if roll < 0.2:
            body["changeType"] = "CREATED"
        elif roll < 0.8:
            body["changeType"] = "UPDATED"
        elif roll < 0.9:
            pass
        else:
            body = {"planetUuid": key, "changeType": "DELETED", "updatedBy": "service-a"}
        events.append(Event(key, json.dumps(body).encode()))
    return events


async def create_and_fill(
    bootstrap: str, topic: str, partitions: int, events: Sequence[Event]
) -> None:
    """Create ``topic`` and produce ``events`` keyed by entity."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    # Idempotent, so a retried batch cannot land after a later one: every path's table is
    # checked against the newest event per key in produced order.
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    try:
        pending = []
        for event in events:
            pending.append(await producer.send(topic, event.value, key=event.key.encode()))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    await asyncio.sleep(0)
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return {tp.partition: o for tp, o in ends.items()}
    finally:
        await consumer.stop()


def run_mirror(
    bootstrap: str,
    db_url: str,
    prefix: str,
    ends: dict[int, int],
    workdir: Path,
    batch_size: int,
    repartition: bool = False,
) -> dict[str, float]:
    """Run one worker from an empty table until its stored offsets reach ``ends``.

    With ``repartition``, the worker forwards the topic through its repartition topic first
    (``REPARTITION=planet``): it is caught up once the offsets stored for the repartition
    topic count every event (each is forwarded once; nothing crashes here).
    """
    app_id = f"bench-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "KAFKA_BROKER": f"kafka://{bootstrap}",
        "DATABASE_URL": db_url,
        "APP_ID": app_id,
        "TOPIC_PREFIX": prefix,
        "WEB_PORT": str(_free_port()),
        "DATA_DIR": str(workdir / app_id),
        "BATCH_SIZE": str(batch_size),
        "TOPIC_PARTITIONS": str(len(ends)),
    }
    store = SqlStore.from_url(db_url)
    store.create_tables([PLANET])
    topic = f"{prefix}planet-changed"
    if repartition:
        env["REPARTITION"] = "planet"
        topic = f"{app_id}-{topic}-repartition"
    total = sum(ends.values())

    async def stored_offsets() -> dict[int, int]:
        # The worker's applied offsets: stored in the transaction that wrote the rows.
        stored = {p: o for (t, p), o in store.stored_offsets(app_id).items() if t == topic}
        if not repartition:
            return stored
        # The repartition topic's partitions are not the source's: report the share applied.
        share = min(1.0, sum(stored.values()) / total) if total else 1.0
        return {p: end if share >= 1.0 else int(end * share) for p, end in ends.items()}

    try:
        caught_up = measure.run_process(
            [sys.executable, "-m", "faust", "-A", "streams.app", "worker", "-l", "info"],
            cwd=ROOT,
            env=env,
            log_path=workdir / f"{app_id}.log",
            bootstrap=bootstrap,
            group=app_id,
            ends=ends,
            applied=stored_offsets,
        )
    finally:
        store.dispose()
    return caught_up.figures(sum(ends.values()))


async def assigned_consumer(bootstrap: str, topic: str, ends: dict[int, int]) -> AIOKafkaConsumer:
    """A consumer of every partition from the beginning, with no group (as Lambda's is not).

    No group means no heartbeats for the blocking naive path to starve.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    parts = [TopicPartition(topic, p) for p in ends]
    consumer.assign(parts)
    await consumer.seek_to_beginning(*parts)
    return consumer


def run_naive(bootstrap: str, db_url: str, topic: str, ends: dict[int, int]) -> dict[str, float]:
    """The seed's pattern: per event, read the row, write it, commit."""
    engine = create_engine(db_url)
    PLANET.table.create(engine, checkfirst=True)
    total = sum(ends.values())

    async def consume() -> float:
        consumer = await assigned_consumer(bootstrap, topic, ends)
        seen = 0
        started = time.monotonic()  # every path is timed from "ready to consume" to done
        try:
            with Session(engine) as session:
                while seen < total:
                    batch = await consumer.getmany(timeout_ms=1000, max_records=500)
                    for messages in batch.values():
                        for message in messages:
                            apply_naively(session, message.value)
                            seen += 1
        finally:
            await consumer.stop()
        return time.monotonic() - started

    seconds = asyncio.run(consume())
    engine.dispose()
    return {"events_per_s": total / seconds, "seconds": seconds}


def apply_naively(session: Session, value: bytes | None) -> None:
    """One event, the Lambda way: a read, then an insert, update or delete, then a commit."""
    if value is None:
        return
    event = json.loads(value)
    uuid_ = event["planetUuid"]
    existing = session.execute(select(Planet).where(Planet.uuid == uuid_)).scalar_one_or_none()
    if event.get("changeType") == "DELETED":
        if existing is not None:
            session.execute(delete(Planet).where(Planet.uuid == uuid_))
    elif existing is None:
        session.add(Planet(uuid=uuid_, name=event["planetName"]))
    else:
        existing.name = event["planetName"]
    session.commit()


def run_raw_consume(bootstrap: str, topic: str, ends: dict[int, int]) -> dict[str, float]:
    """aiokafka reading every record, no processing."""
    total = sum(ends.values())

    async def consume() -> float:
        consumer = await assigned_consumer(bootstrap, topic, ends)
        seen = 0
        started = time.monotonic()
        try:
            while seen < total:
                batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
                seen += sum(len(m) for m in batch.values())
        finally:
            await consumer.stop()
        return time.monotonic() - started

    seconds = asyncio.run(consume())
    return {"events_per_s": total / seconds, "seconds": seconds}


def run_raw_write(db_url: str, events: Sequence[Event]) -> dict[str, float]:
    """Every event's row, upserted with psycopg2 execute_values in pages of 2,000."""
    import psycopg2
    from psycopg2.extras import execute_values
    from sqlalchemy.engine import make_url

    url = make_url(db_url)
    conn = psycopg2.connect(
        host=url.host,
        port=url.port,
        user=url.username,
        password=url.password,
        dbname=url.database,
    )
    with conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE raw_planet (uuid varchar(64) PRIMARY KEY, name varchar(255) NOT NULL,"
            " version bigint NOT NULL)"
        )
    decoded = [json.loads(e.value) for e in events]  # not timed: the limit is the write
    started = time.monotonic()
    page = 2000
    with conn.cursor() as cur:
        for start in range(0, len(decoded), page):
            # Folded to the newest event per key of the page: an upsert or a delete.
            upserts: dict[str, tuple[str, str, int]] = {}
            deletes: set[str] = set()
            for i, event in enumerate(decoded[start : start + page], start=start):
                key = event["planetUuid"]
                if event.get("changeType") == "DELETED":
                    upserts.pop(key, None)
                    deletes.add(key)
                else:
                    deletes.discard(key)
                    upserts[key] = (key, event["planetName"], i)
            if upserts:
                execute_values(
                    cur,
                    "INSERT INTO raw_planet (uuid, name, version) VALUES %s ON CONFLICT (uuid)"
                    " DO UPDATE SET name = excluded.name, version = excluded.version"
                    " WHERE raw_planet.version < excluded.version",
                    list(upserts.values()),
                    page_size=page,
                )
            if deletes:
                cur.execute("DELETE FROM raw_planet WHERE uuid = ANY(%s)", (list(deletes),))
            conn.commit()
    seconds = time.monotonic() - started
    conn.close()
    return {"events_per_s": len(events) / seconds, "seconds": seconds}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line; ``--quick`` shrinks the run and leaves the peers out."""
    parser = argparse.ArgumentParser(prog="./run bench", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--entities", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--rss-factor",
        type=int,
        default=5,
        help="second run with this many times the events (0: skip)",
    )
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--skip-naive",
        action="store_true",
        help="leave out the slow naive path (while iterating on the worker)",
    )
    parser.add_argument(
        "--peers",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the peers, Quix Streams and Debezium's JDBC sink (default: not with --quick)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="2,000 events over 200 entities, second run x2 (CI)"
    )
    parser.add_argument(
        "--repartition",
        action="store_true",
        help="the worker forwards the topic through a repartition topic (REPARTITION=planet)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.entities, args.rss_factor = 2_000, 200, 2
    if args.peers is None:
        args.peers = not args.quick
    return args


def run_peer(
    name: str,
    bootstrap: str,
    db_url: Callable[[], str],
    topic: str,
    partitions: int,
    events: Sequence[Event],
    workdir: Path,
    batch_size: int,
) -> dict[str, float] | str:
    """Run one peer on its own topic of ``events``; return its figures, or why it did not run."""
    peer = PEERS[name]
    try:
        peer.available()
        asyncio.run(create_and_fill(bootstrap, topic, partitions, peer.encode(events)))
        ends = asyncio.run(end_offsets(bootstrap, topic, partitions))
        caught_up = peer.run(bootstrap, db_url(), topic, ends, workdir, batch_size)
    except PeerSkipped as exc:
        return f"skipped: {exc}"
    except Exception as exc:
        # A peer's failure is a result to report, not a reason to lose the other figures.
        first = (str(exc).strip().splitlines() or [""])[0]
        return f"failed: {type(exc).__name__}: {first}"
    return caught_up.figures(len(events))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--recovery" in argv:
        from bench import recovery_bench

        return recovery_bench.main(argv)
    args = parse_args(argv)
    bootstrap = dev_kafka.start(1)
    server = dev_postgres.start()
    workdir = ROOT / ".cache" / "bench"
    workdir.mkdir(parents=True, exist_ok=True)
    run = uuid.uuid4().hex[:6]
    prefix = f"bench-{run}."
    topic = f"{prefix}planet-changed"

    print(
        f"producing {args.events:,} events over {args.entities:,} entities into "
        f"{args.partitions} partitions ...",
        flush=True,
    )
    events = make_events(args.events, args.entities, args.seed)
    expected = measure.newest_state(events)
    value_sizes = [len(e.value or b"") for e in events]
    asyncio.run(create_and_fill(bootstrap, topic, args.partitions, events))
    ends = asyncio.run(end_offsets(bootstrap, topic, args.partitions))

    databases: dict[str, str] = {}

    def fresh_db(name: str) -> str:
        databases[name] = dev_postgres.create_database(server, f"bench_{run}_{name}")
        return databases[name]

    steps = ["mirror", *(PEERS if args.peers else ()), "naive", "raw_consume", "raw_write"]
    if args.skip_naive:
        steps.remove("naive")
    results: dict[str, dict[str, float]] = {}
    not_run: dict[str, str] = {}
    wrong: dict[str, int] = {}  # keys whose row differs from the newest state, per path
    for i, name in enumerate(steps, start=1):
        print(f"{i}/{len(steps)} {name} ...", flush=True)
        if name == "mirror":
            results[name] = run_mirror(
                bootstrap,
                fresh_db(name),
                prefix,
                ends,
                workdir,
                args.batch_size,
                repartition=args.repartition,
            )
        elif name in PEERS:
            outcome = run_peer(
                name,
                bootstrap,
                lambda name=name: fresh_db(name),
                f"{prefix}{name}.planet-changed",
                args.partitions,
                events,
                workdir,
                args.batch_size,
            )
            if isinstance(outcome, str):
                print(f"{name}: {outcome}", flush=True)
                not_run[name] = outcome
            else:
                results[name] = outcome
        elif name == "naive":
            results[name] = run_naive(bootstrap, fresh_db(name), topic, ends)
        elif name == "raw_consume":
            results[name] = run_raw_consume(bootstrap, topic, ends)
        else:
            results[name] = run_raw_write(fresh_db(name), events)
        if name in results:
            if name in LIVE_ROWS_SQL:
                wrong[name] = measure.table_errors(databases[name], LIVE_ROWS_SQL[name], expected)
            print(f"   {name}: {progress_line(results[name], wrong.get(name))}", flush=True)

    large: dict[str, float] | None = None
    if args.rss_factor:
        big = args.events * args.rss_factor
        print(f"RSS run: {big:,} events ...", flush=True)
        big_prefix = f"bench-{run}-x{args.rss_factor}."
        big_events = make_events(big, args.entities, args.seed + 1)
        big_expected = measure.newest_state(big_events)
        asyncio.run(
            create_and_fill(bootstrap, f"{big_prefix}planet-changed", args.partitions, big_events)
        )
        del big_events
        big_ends = asyncio.run(
            end_offsets(bootstrap, f"{big_prefix}planet-changed", args.partitions)
        )
        large = run_mirror(
            bootstrap, fresh_db("large"), big_prefix, big_ends, workdir, args.batch_size
        )
        wrong["large"] = measure.table_errors(
            databases["large"], LIVE_ROWS_SQL["mirror"], big_expected
        )
        print(f"   large: {progress_line(large, wrong['large'])}", flush=True)

    summary = summarize(args, results, wrong, not_run, large, statistics.median(value_sizes))
    report(args, results, wrong, not_run, summary)
    for name in databases:
        # Best effort: a leftover bench database harms nothing.
        with contextlib.suppress(Exception):
            dev_postgres.drop_database(server, f"bench_{run}_{name}")
    return 0


def progress_line(figures: dict[str, float], errors: int | None) -> str:
    """One path's figures as soon as it is measured, so an interrupted run keeps them."""
    line = f"{figures['events_per_s']:,.0f} events/s, {figures['seconds']:.2f} s"
    if "peak_rss_mb" in figures:
        line += f", peak RSS {figures['peak_rss_mb']:.1f} MB"
    if errors is not None:
        line += ", table ok" if not errors else f", table WRONG ({errors:,} keys)"
    return line


def ratio(results: dict[str, dict[str, float]], wrong: dict[str, int], path: str) -> float | None:
    """The worker's events/s over ``path``'s; None unless both ran and left correct tables."""
    if path not in results or wrong.get("mirror", 0) or wrong.get(path, 0):
        return None
    return round(results["mirror"]["events_per_s"] / results[path]["events_per_s"], 2)


def summarize(
    args: argparse.Namespace,
    results: dict[str, dict[str, float]],
    wrong: dict[str, int],
    not_run: dict[str, str],
    large: dict[str, float] | None,
    value_bytes_median: float,
) -> dict[str, Any]:
    """The figures of the run as BENCH_JSON prints them."""
    mirror = results["mirror"]["events_per_s"]
    limit = min(results["raw_consume"]["events_per_s"], results["raw_write"]["events_per_s"])
    summary: dict[str, Any] = {
        "cores": os.cpu_count(),
        "events": args.events,
        "entities": args.entities,
        "partitions": args.partitions,
        "value_bytes_median": value_bytes_median,
        **{f"{name}_events_per_s": round(r["events_per_s"], 1) for name, r in results.items()},
        **{f"{name}_table_ok": errors == 0 for name, errors in wrong.items()},
        "mirror_vs_naive": ratio(results, wrong, "naive") if "naive" in results else None,
        "mirror_vs_raw_limit": round(mirror / limit, 3),
        "mirror_peak_rss_mb": round(results["mirror"]["peak_rss_mb"], 1),
        "mirror_startup_s": round(results["mirror"]["startup_s"], 2),
    }
    for name in PEERS:
        if name in results:
            summary[f"{name}_peak_rss_mb"] = round(results[name]["peak_rss_mb"], 1)
            summary[f"{name}_startup_s"] = round(results[name]["startup_s"], 2)
            summary[f"mirror_vs_{name}"] = ratio(results, wrong, name)
        elif name in not_run:
            summary[f"{name}_not_run"] = not_run[name]
    if large is not None:
        summary["large_events"] = args.events * args.rss_factor
        summary["large_events_per_s"] = round(large["events_per_s"], 1)
        summary["large_peak_rss_mb"] = round(large["peak_rss_mb"], 1)
    return summary


def report(
    args: argparse.Namespace,
    results: dict[str, dict[str, float]],
    wrong: dict[str, int],
    not_run: dict[str, str],
    summary: dict[str, Any],
) -> None:
    """Print the table, the ratios and the BENCH_JSON line."""
    print()
    print("| path | events/s | seconds | peak RSS (MB) | final table |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name in ("mirror", *PEERS, "naive", "raw_consume", "raw_write"):
        if name in not_run:
            print(f"| {name} | - | - | - | not run: {not_run[name]} |")
        if name not in results:
            continue
        r = results[name]
        rss = f"{r['peak_rss_mb']:.1f}" if "peak_rss_mb" in r else "-"
        errors = wrong.get(name)
        table = "-" if errors is None else f"WRONG ({errors:,} keys)" if errors else "ok"
        print(f"| {name} | {r['events_per_s']:,.0f} | {r['seconds']:.2f} | {rss} | {table} |")
    print()
    for name in (*PEERS, "naive"):
        if name in results:
            value = summary.get(f"mirror_vs_{name}")
            shown = f"{value}x" if value is not None else "n/a (a table is wrong)"
            print(f"mirror / {name} = {shown}")
    print(f"mirror / min(raw consume, raw write) = {summary['mirror_vs_raw_limit']}")
    print(f"worker peak RSS: {summary['mirror_peak_rss_mb']} MB at {args.events:,} events", end="")
    if "large_events" in summary:
        print(
            f", {summary['large_peak_rss_mb']} MB at {summary['large_events']:,} events "
            f"({summary['large_events_per_s']:,.0f} events/s)"
        )
    else:
        print()
    print("BENCH_JSON " + json.dumps(summary, sort_keys=True), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
