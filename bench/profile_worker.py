"""Profile the worker under load with py-spy: where does the time go?

Produces ``--events`` benchmark events into a fresh topic, starts one worker, samples it with
``py-spy record`` while it catches up, and prints the functions with the largest share of
samples (inclusive), grouped by the area they belong to. Needs ``pip install -e .[bench]``.
``--input debezium`` profiles the worker on the same events as Debezium change events
(``bench/debezium_input.py``), the entity declared ``__input_format__ = "debezium"``;
``--input debezium-plain`` on the same change events with the JsonConverter's schemas off
(which Debezium's JDBC sink cannot read, so ``./run bench`` does not compare on them).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.debezium_input import encode_event  # noqa: E402
from bench.paths import INPUTS, MIRROR, MIRROR_DBZ, free_port, topic_of  # noqa: E402
from bench.procfs import status_kib, tree_cpu_seconds  # noqa: E402
from bench.topics import end_offsets, fill  # noqa: E402
from bench.workload import make_events  # noqa: E402
from devservices import kafka as dev_kafka  # noqa: E402
from devservices import mariadb as dev_mariadb  # noqa: E402
from devservices import postgres as dev_postgres  # noqa: E402
from models.store import SqlStore  # noqa: E402

#: ``--input`` of the Debezium change events with the JsonConverter's schemas off.
PLAIN = "debezium-plain"
#: The database servers a profile can run against, by name.
SERVERS = {"postgresql": dev_postgres, "mariadb": dev_mariadb}

AREAS = [
    ("faust/", "faust"),
    ("mode/", "faust"),
    ("aiokafka/", "aiokafka"),
    ("sqlalchemy/", "sqlalchemy"),
    ("psycopg2", "psycopg2"),
    ("pymysql", "pymysql"),
    ("json/", "json decode"),
    ("streams/", "this project"),
    ("models/", "this project"),
]


def batch_figures(web_port: int) -> str:
    """Return the worker's batches and their mean size (records), from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/metrics", timeout=10) as page:
        text = page.read().decode()
    sums = collections.Counter[str]()
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        for part in ("batch_seconds", "batch_records", "sql_transaction_seconds"):
            for stat in ("_sum", "_count"):
                if name.startswith(f"mirror_{part}{stat}"):
                    sums[part + stat] += float(value)
    records = sums["batch_records_sum"]
    count = sums["batch_seconds_count"] or 1
    return (
        f"{count:,.0f} batches of {records / count:,.0f} records on average, "
        f"{sums['batch_seconds_sum'] / count * 1000:.1f} ms each "
        f"({sums['sql_transaction_seconds_sum'] / count * 1000:.1f} ms of SQL)"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--entities", type=int, default=20_000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--database", choices=sorted(SERVERS), default="postgresql")
    parser.add_argument(
        "--input", choices=(*INPUTS, PLAIN), default="changetype", help="the events' shape"
    )
    parser.add_argument(
        "--gil", action="store_true", help="sample only the thread holding the GIL (CPU in Python)"
    )
    args = parser.parse_args()
    bootstrap = dev_kafka.start(1)
    dev_server = SERVERS[args.database]
    server = dev_server.start()
    run = uuid.uuid4().hex[:6]
    prefix = f"prof-{run}."
    events = make_events(args.events, args.entities, 7)
    path = MIRROR if args.input == "changetype" else MIRROR_DBZ
    topic = topic_of(path, prefix)
    encode = partial(encode_event, schemas=False) if args.input == PLAIN else path.encode
    asyncio.run(fill(bootstrap, 4, {topic: encode}, events))
    ends = asyncio.run(end_offsets(bootstrap, topic, 4))
    db = dev_server.create_database(server, f"prof_{run}")
    store = SqlStore.from_url(db)
    store.create_tables([path.spec] if path.spec is not None else [])
    app_id = f"prof-{run}"
    workdir = ROOT / ".cache" / "bench"
    workdir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "KAFKA_BROKER": f"kafka://{bootstrap}",
        "DATABASE_URL": db,
        "APP_ID": app_id,
        "TOPIC_PREFIX": prefix,
        "ENTITY_MODULES": path.entity_module,
        "WEB_PORT": str(free_port()),
        "DATA_DIR": str(workdir / app_id),
        # Quiet, so the profile is of the work, not of log lines (LOG_LEVEL sets it, not -l).
        "LOG_LEVEL": "warning",
    }
    raw = workdir / f"{app_id}.folded"
    with (workdir / f"{app_id}.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "faust", "-A", "streams.app", "worker"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        while not store.stored_offsets(app_id):
            time.sleep(0.05)
        spy = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(proc.pid),
                "--format",
                "raw",
                "--rate",
                "200",
                "--output",
                str(raw),
                "--nonblocking",
                *(["--gil"] if args.gil else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        total = sum(ends.values())
        began = time.monotonic()
        cpu_before = tree_cpu_seconds(proc.pid)
        while sum(o for (t, _), o in store.stored_offsets(app_id).items() if t == topic) < total:
            time.sleep(0.1)
        caught_up = time.monotonic() - began
        cpu = tree_cpu_seconds(proc.pid) - cpu_before
        peak_kib = status_kib(proc.pid, "VmHWM") or 0
        spy.send_signal(signal.SIGINT)
        batches = batch_figures(int(env["WEB_PORT"]))
        spy.wait(timeout=60)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        store.dispose()
        dev_server.drop_database(server, f"prof_{run}")
    inclusive: collections.Counter[str] = collections.Counter()
    areas: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        samples += count
        seen: set[str] = set()
        for frame in frames:
            name = frame.split(" (")[0] + " " + frame.rsplit("/", 1)[-1].rstrip(")")
            if name not in seen:
                inclusive[name] += count
                seen.add(name)
        leaf = frames[-1]
        area = next((label for marker, label in AREAS if marker in leaf), "other (stdlib, C)")
        areas[area] += count
    print(
        f"{samples} samples while catching up on {args.events:,} events in {caught_up:.1f} s"
        f" ({total / caught_up:,.0f} records/s; sampling slows the worker);"
        f" the worker's CPU {cpu / args.events * 1e6:.1f} us/event, its peak RSS"
        f" {peak_kib / 1024:.0f} MiB"
    )
    print(batches)
    print("\nself time by area (leaf frame):")
    for area, count in areas.most_common():
        print(f"  {100 * count / samples:5.1f}%  {area}")
    print(f"\ntop {args.top} functions, inclusive:")
    for name, count in inclusive.most_common(args.top):
        print(f"  {100 * count / samples:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
