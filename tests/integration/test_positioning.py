"""Partitions are positioned once, from the offsets stored with the data, and a database that
is down while they wait is asked again with backoff, not ten times a second."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import make_url

from models.planet import Planet
from models.registry import build_spec
from models.store import SqlStore
from tests.integration.test_mirror import read_planets
from tests.support import (
    TcpProxy,
    WorkerProcess,
    create_topic,
    make_worker,
    metric_value,
    produce,
    wait_caught_up,
    worker_env,
)
from tests.waiting import eventually

PLANET = build_spec(Planet)


def planets(start: int, count: int) -> list[tuple[bytes, bytes]]:
    return [
        (f"p{i}".encode(), json.dumps({"planetUuid": f"p{i}", "planetName": f"n{i}"}).encode())
        for i in range(start, start + count)
    ]


async def test_a_backlog_is_read_once_from_the_start_of_each_partition(
    kafka_bootstrap: str, pg_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_bootstrap, topic, partitions=4)
    await produce(kafka_bootstrap, topic, planets(0, 20_000))
    worker, app_id = make_worker(kafka_bootstrap, pg_url, topic_prefix, tmp_path, "backlog")
    worker.start()
    try:
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
        text = await asyncio.to_thread(_metrics, worker)
    finally:
        assert worker.stop() == "SIGTERM"
    log = worker.log_path.read_text()
    for p in range(4):
        assert log.count(f"reading {topic}[{p}] from offset 0") == 1  # positioned once
    assert metric_value(
        text, f'mirror_replayed_records_total{{entity="planet",topic="{topic}"}}'
    ) in (
        None,
        0.0,
    )
    assert len(read_planets(pg_url)) == 20_000
    store = SqlStore.from_url(pg_url)
    try:
        assert sum(store.outcome_counts(app_id).values()) == 20_000
    finally:
        store.dispose()


async def test_positioning_waits_out_a_database_outage_with_backoff(
    kafka_bootstrap: str, pg_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_bootstrap, topic, partitions=2)
    database = make_url(pg_url)
    assert database.host is not None and database.port is not None
    proxy = await TcpProxy(database.host, database.port).start()
    through_proxy = database.set(port=proxy.port).render_as_string(hide_password=False)
    a, app_id = make_worker(
        kafka_bootstrap, through_proxy, topic_prefix, tmp_path, "outage", TOPIC_PARTITIONS="2"
    )
    b = WorkerProcess(
        worker_env(
            bootstrap=kafka_bootstrap,
            database_url=pg_url,
            app_id=app_id,
            topic_prefix=topic_prefix,
            data_dir=tmp_path / "data-b",
            TOPIC_PARTITIONS="2",
        ),
        tmp_path / "worker-b.log",
    )
    a.start()
    try:
        await produce(kafka_bootstrap, topic, planets(0, 100))
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=a.assert_alive)
        await proxy.close()  # worker a loses its database
        outage_from = a.log_path.stat().st_size
        b.start()  # a rebalance: a must position its partitions again, without a database
        warnings = await eventually(
            lambda: _positioning_warnings(a, outage_from),
            lambda found: len(found) >= 3,
            what="three positioning warnings from worker a",
            alive=[a, b],
        )
        # Backing off: each wait about twice the last (0.5 s, then 1 s, then 2 s, each within
        # the jitter of streams/core/backoff.py, so the ranges do not overlap), and the next
        # attempt no sooner than the wait announced (the log shows it to 0.1 s, times to 1 ms).
        (first, first_wait), (second, second_wait), (third, _) = warnings[:3]
        assert first_wait < second_wait
        assert (second - first).total_seconds() >= first_wait - 0.051
        assert (third - second).total_seconds() >= second_wait - 0.051
        await proxy.start()  # the database is back
        await produce(kafka_bootstrap, topic, planets(100, 100))
        await wait_caught_up(
            kafka_bootstrap, app_id, topic, alive=lambda: [w.assert_alive() for w in (a, b)]
        )
        assert set(read_planets(pg_url)) == {f"p{i}" for i in range(200)}
    finally:
        for worker in (a, b):
            worker.stop()
        await proxy.close()


def _metrics(worker: WorkerProcess) -> str:
    import urllib.request

    url = f"http://127.0.0.1:{worker.env['WEB_PORT']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def _positioning_warnings(worker: WorkerProcess, since: int) -> list[tuple[datetime, float]]:
    """Return the time and announced wait of each 'cannot position' warning after byte ``since``."""
    with worker.log_path.open("rb") as log:
        log.seek(since)
        text = log.read().decode(errors="replace")
    pattern = (
        r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\].*cannot position .* retrying in ([\d.]+)s"
    )
    return [
        (datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f"), float(m.group(2)))
        for m in re.finditer(pattern, text)
    ]
