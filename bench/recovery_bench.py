"""Recovery benchmark (``./run bench --recovery``): how long rebalances and restarts stop SQL.

For each entity count (``--sizes``) and each table store (``--stores``: ``off`` for no cached
table, ``memory``, ``rocksdb``), on one topic holding N entities (one CREATED each, 4
partitions), worker A mirrors the backlog into an empty table of a fresh database; then:

1. ``join``: worker B starts;
2. ``leave``: B stops with SIGTERM;
3. ``kill``: B starts again and, once both are ready, is SIGKILLed; the group notices only
   after the session timeout (``SESSION_TIMEOUT``, 6 s here), which the figures include;
4. ``restart``: A stops with SIGTERM and starts again alone, on the same data directory.

At each event 2,000 updates of distinct entities are produced at once. ``sql_s`` is the time
from the event (the launch, or the signal) until every one of them is in SQL; ``ready_s`` the
time until every running worker's ``/partitions`` says settled (assigned, tables recovered). The
cached runs keep one standby replica (``STANDBY_REPLICAS=1``), so a leaving worker's
partitions are promoted on the other. Prints a table and one ``BENCH_RECOVERY_JSON`` line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaProducer  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from bench.measure import Event  # noqa: E402
from bench.paths import free_port  # noqa: E402
from bench.topics import create_and_fill, end_offsets  # noqa: E402
from devservices import kafka as dev_kafka  # noqa: E402
from devservices import postgres as dev_postgres  # noqa: E402
from devservices.processes import note_started  # noqa: E402
from models.store import SqlStore  # noqa: E402
from streams.core.errors import StoreError  # noqa: E402

PARTITIONS = 4
UPDATES = 2_000
SESSION_TIMEOUT = 6
#: Longest wait for any one condition; a worker that exits fails the run at once.
DEADLINE = 900.0
POLL = 0.1
EVENTS = ("join", "leave", "kill", "restart")
TABLES = {"off": "bench_uncached_planet", "memory": "servicea_planet", "rocksdb": "servicea_planet"}


class BenchFailure(Exception):
    """A worker exited, or a condition did not hold in time."""


@dataclass
class Worker:
    """One ``faust -A streams.app worker`` process of the measured group."""

    name: str
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['WEB_PORT']}"

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "faust", "-A", "streams.app", "worker", "-l", "info"],
                cwd=ROOT,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        note_started(self.proc.pid)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> None:
        """Raise if the worker exited on its own."""
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchFailure(
                f"worker {self.name} exited ({self.proc.returncode}); see {self.log_path}"
            )

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)

    def stopped(self, timeout: float = 120.0) -> None:
        """Wait for the worker to exit after a signal (SIGKILL it past ``timeout``)."""
        assert self.proc is not None
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def ready(self) -> set[str] | None:
        """Return the source partitions the worker serves once ``/partitions`` says it is
        settled (assigned, no rebalance, tables recovered), else None."""
        try:
            with urllib.request.urlopen(f"{self.url}/partitions", timeout=2) as response:
                body = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None  # not listening yet
        if not body["settled"]:
            return None
        return {tp for tp in body["assigned"] if "planet-changed[" in tp}


def all_ready(*workers: Worker) -> Callable[[], bool]:
    """The condition: every worker ready, and together they serve every source partition.

    A worker still ready from before a rebalance (its peer just left) does not count: it does
    not serve the leaver's partitions yet.
    """

    def check() -> bool:
        served: set[str] = set()
        for worker in workers:
            partitions = worker.ready()
            if not partitions:
                return False
            served |= partitions
        return len(served) == PARTITIONS

    return check


def watch(
    conditions: dict[str, Callable[[], bool]], workers: Sequence[Worker], since: float
) -> dict[str, float]:
    """Poll until every condition has held once; return when each first did, from ``since``."""
    held: dict[str, float] = {}
    deadline = time.monotonic() + DEADLINE
    while len(held) < len(conditions):
        for worker in workers:
            worker.check()
        for name, condition in conditions.items():
            if name not in held and condition():
                held[name] = round(time.monotonic() - since, 2)
        if time.monotonic() > deadline:
            missing = sorted(set(conditions) - set(held))
            raise BenchFailure(f"not within {DEADLINE:.0f} s: {missing}")
        time.sleep(POLL)
    return held


def events(keys: Sequence[str], change_type: str, name_prefix: str) -> list[Event]:
    """One event per key, about 100 bytes each, named ``<name_prefix>-<i>``."""
    return [
        Event(
            key,
            json.dumps(
                {"planetUuid": key, "planetName": f"{name_prefix}-{i}", "changeType": change_type}
            ).encode(),
        )
        for i, key in enumerate(keys)
    ]


async def produce(bootstrap: str, topic: str, events: Sequence[Event]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, e.value, key=e.key.encode()) for e in events]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


@dataclass
class Run:
    """One entity count with one table store, from the backlog to the restart."""

    bootstrap: str
    db_url: str
    prefix: str
    keys: list[str]
    store: str
    workdir: Path
    seed: int
    figures: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.app_id = f"rec-{self.store}-{uuid.uuid4().hex[:6]}"
        self.topic = f"{self.prefix}planet-changed"
        self.table = TABLES[self.store]
        self.engine = create_engine(self.db_url)
        self.rng = random.Random(self.seed)

    def worker(self, name: str) -> Worker:
        cached = self.store != "off"
        env = {
            "KAFKA_BROKER": f"kafka://{self.bootstrap}",
            "DATABASE_URL": self.db_url,
            "APP_ID": self.app_id,
            "TOPIC_PREFIX": self.prefix,
            "WEB_PORT": str(free_port()),
            "DATA_DIR": str(self.workdir / self.app_id / name),
            "ENTITY_MODULES": "models.planet" if cached else "bench.uncached_planet",
            "TABLE_STORE": self.store if cached else "rocksdb",
            "STANDBY_REPLICAS": "1" if cached else "0",
            "SESSION_TIMEOUT": str(SESSION_TIMEOUT),
            "LOG_LEVEL": "info",
        }
        return Worker(name, env, self.workdir / f"{self.app_id}-{name}.log")

    def count(self, phase: str) -> int:
        with self.engine.connect() as conn:
            query = text(f"SELECT count(*) FROM {self.table} WHERE name LIKE :p")
            return int(conn.execute(query, {"p": f"{phase}-%"}).scalar_one())

    def rows(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {self.table}")).scalar_one())

    def applied(self, ends: dict[int, int]) -> bool:
        try:
            stored = SqlStore(self.engine).stored_offsets(self.app_id)
        except StoreError:  # the worker has not made its tables yet (a missing table)
            return False
        offsets = {p: o for (t, p), o in stored.items() if t == self.topic}
        return all(offsets.get(p, 0) >= end for p, end in ends.items())

    def send_updates(self, phase: str) -> Callable[[], bool]:
        """Produce the updates of ``phase``; return the condition "all are in SQL"."""
        keys = self.rng.sample(self.keys, UPDATES)
        asyncio.run(produce(self.bootstrap, self.topic, events(keys, "UPDATED", phase)))
        return lambda: self.count(phase) == UPDATES

    def event(self, name: str, started: float, serving: Sequence[Worker]) -> None:
        """Send ``name``'s updates now; note when SQL has them and ``serving`` are ready."""
        in_sql = self.send_updates(name)
        self.figures[name] = watch(
            {"sql_s": in_sql, "ready_s": all_ready(*serving)}, serving, started
        )
        print(f"   {name}: {self.figures[name]}", flush=True)

    def measure(self) -> dict[str, Any]:
        a, b = self.worker("a"), self.worker("b")
        try:
            ends = asyncio.run(end_offsets(self.bootstrap, self.topic, PARTITIONS))
            started = time.monotonic()
            a.start()
            self.figures["load"] = watch(
                {"sql_s": lambda: self.applied(ends), "ready_s": all_ready(a)}, [a], started
            )
            print(f"   load: {self.figures['load']}", flush=True)

            started = time.monotonic()
            b.start()
            self.event("join", started, [a, b])

            started = time.monotonic()
            b.signal(signal.SIGTERM)
            self.event("leave", started, [a])
            b.stopped()

            b.start()
            watch({"ready": all_ready(a, b)}, [a, b], time.monotonic())
            started = time.monotonic()
            b.signal(signal.SIGKILL)
            b.stopped()
            self.event("kill", started, [a])

            a.signal(signal.SIGTERM)
            a.stopped()
            started = time.monotonic()
            a.start()
            self.event("restart", started, [a])
            self.figures["rows_ok"] = self.rows() == len(self.keys)
            return self.figures
        finally:
            for worker in (a, b):
                if worker.running():
                    worker.signal(signal.SIGTERM)
                    worker.stopped()
            self.engine.dispose()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="./run bench --recovery", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--recovery", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="50000,200000,1000000", help="entity counts")
    parser.add_argument("--stores", default="off,memory,rocksdb", help="table stores")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.stores = [s for s in args.stores.split(",") if s]
    unknown = set(args.stores) - set(TABLES)
    if unknown:
        parser.error(f"unknown stores {sorted(unknown)}: choose from {sorted(TABLES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bootstrap = dev_kafka.start(1)
    server = dev_postgres.start()
    workdir = ROOT / ".cache" / "bench-recovery"
    workdir.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:6]
    results: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    for size in args.sizes:
        rng = random.Random(args.seed + size)
        keys = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(size)]
        prefix = f"rec-{run_id}-{size}."
        print(f"producing {size:,} entities ...", flush=True)
        backlog = events(keys, "CREATED", "created")
        asyncio.run(create_and_fill(bootstrap, f"{prefix}planet-changed", PARTITIONS, backlog))
        del backlog
        for store in args.stores:
            name = f"{size}-{store}"
            print(f"{size:,} entities, cache {store} ...", flush=True)
            database = f"bench_rec_{run_id}_{size}_{store}"
            db_url = dev_postgres.create_database(server, database)
            try:
                results[name] = Run(
                    bootstrap, db_url, prefix, keys, store, workdir, args.seed
                ).measure()
            except BenchFailure as exc:
                print(f"   failed: {exc}", flush=True)
                failed[name] = str(exc)
            finally:
                with contextlib.suppress(Exception):
                    dev_postgres.drop_database(server, database)
    report(results, failed)
    return 1 if failed else 0


def report(results: dict[str, dict[str, Any]], failed: dict[str, str]) -> None:
    print()
    print(
        "| entities | cache | load (s) | join: SQL / ready (s) | leave: SQL / ready (s) "
        "| kill: SQL / ready (s) | restart: SQL / ready (s) |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, figures in results.items():
        size, store = name.split("-")
        cells = [f"{figures['load']['sql_s']:.1f}"] + [
            f"{figures[e]['sql_s']:.1f} / {figures[e]['ready_s']:.1f}" for e in EVENTS
        ]
        print(f"| {int(size):,} | {store} | " + " | ".join(cells) + " |")
    for name, why in failed.items():
        print(f"| {name} | failed: {why} |")
    print("BENCH_RECOVERY_JSON " + json.dumps({"results": results, "failed": failed}))


if __name__ == "__main__":
    sys.exit(main())
