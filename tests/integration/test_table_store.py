"""Where the cached tables live: RocksDB keeps them across restarts; the mirror never waits.

1. With the RocksDB store (the default) a stopped worker's table files hold every entry and
   the changelog offset they are at, so a restart recovers only what came after.
2. While a worker recovers a large in-memory table, the SQL mirror goes on, reads by key of
   the partitions still recovering answer 503, and once recovered the cache holds what the
   database holds (including what was applied during the recovery).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import aiohttp
import pytest
from rocksdict import AccessType, Options, Rdict

from models.planet import Planet
from models.registry import build_spec
from models.store import SqlStore
from tests.support import (
    create_topic,
    end_offsets,
    make_worker,
    produce,
    wait_caught_up,
    wait_ready,
)

PLANET = build_spec(Planet)
#: Faust's key for the changelog offset a RocksDB partition holds (faust/stores/rocksdb.py).
OFFSET_KEY = b"__faust\0offset__"


def created(key: str, name: str) -> tuple[bytes, bytes]:
    value = {"planetUuid": key, "planetName": name, "changeType": "CREATED"}
    return key.encode(), json.dumps(value).encode()


def updated(key: str, name: str) -> tuple[bytes, bytes]:
    value = {"planetUuid": key, "planetName": name, "changeType": "UPDATED"}
    return key.encode(), json.dumps(value).encode()


def read_partition_files(tables: Path, partitions: int) -> dict[int, tuple[int | None, int]]:
    """Return, per partition file of the planet table, (offset held, number of entries)."""
    found = {}
    for partition in range(partitions):
        db = Rdict(
            str(tables / f"planet-{partition}.db"),
            Options(raw_mode=True),
            access_type=AccessType.read_only(),
        )
        try:
            offset = db.get(OFFSET_KEY)
            entries = sum(1 for key in db.keys() if key != OFFSET_KEY)  # noqa: SIM118 (raw mode)
        finally:
            db.close()
        found[partition] = (None if offset is None else int(offset), entries)
    return found


async def test_a_stopped_worker_keeps_its_table_and_the_offset_it_holds(
    kafka_bootstrap: str, pg_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_bootstrap, topic, partitions=4)
    keys = [str(uuid.uuid4()) for _ in range(400)]
    await produce(kafka_bootstrap, topic, (created(k, f"first {k}") for k in keys))
    worker, app_id = make_worker(kafka_bootstrap, pg_url, topic_prefix, tmp_path, "rocks")
    worker.start()
    try:
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
        await wait_ready(worker)
    finally:
        assert worker.stop() == "SIGTERM"
    changelog = await end_offsets(kafka_bootstrap, f"{app_id}-planet-changelog")
    files = read_partition_files(tmp_path / "data" / "v1" / "tables", 4)
    # Every entry is in the files, each partition at its changelog's last offset: a restart
    # starts reading the changelog after it.
    assert sum(entries for _, entries in files.values()) == len(keys)
    assert {p: offset for p, (offset, _) in files.items()} == {
        p: end - 1 for p, end in changelog.items()
    }

    # Restarted, it serves the kept entries and goes on from there.
    worker.start()
    try:
        await wait_ready(worker)
        later = keys[:50]
        await produce(kafka_bootstrap, topic, (updated(k, f"second {k}") for k in later))
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
        base = f"http://127.0.0.1:{worker.env['WEB_PORT']}"
        async with aiohttp.ClientSession() as http:
            await assert_cached(http, base, keys[:100], later)
    finally:
        assert worker.stop() == "SIGTERM"
    files = read_partition_files(tmp_path / "data" / "v1" / "tables", 4)
    changelog = await end_offsets(kafka_bootstrap, f"{app_id}-planet-changelog")
    assert {p: offset for p, (offset, _) in files.items()} == {
        p: end - 1 for p, end in changelog.items()
    }


@pytest.mark.slow
async def test_the_sql_mirror_goes_on_while_a_large_memory_table_recovers(
    kafka_bootstrap: str, pg_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_bootstrap, topic, partitions=4)
    keys = [str(uuid.UUID(int=i + 1)) for i in range(150_000)]
    await produce(kafka_bootstrap, topic, (created(k, f"first {k}") for k in keys))
    worker, app_id = make_worker(
        kafka_bootstrap, pg_url, topic_prefix, tmp_path, "memory", TABLE_STORE="memory"
    )
    worker.start()
    try:
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive, timeout=300)
    finally:
        assert worker.stop() == "SIGTERM"

    # Restarted, it recovers 150,000 entries from the changelog; meanwhile updates arrive.
    store = SqlStore.from_url(pg_url)
    later = keys[:200]
    base = f"http://127.0.0.1:{worker.env['WEB_PORT']}"
    worker.start()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            # Once it reads its partitions again (recovery under way), the updates are sent.
            deadline = time.monotonic() + 120
            while True:
                worker.assert_alive()
                assert time.monotonic() < deadline, worker.tail()
                with_tables = await ready_body(http, base)
                if with_tables.get("assigned") and with_tables.get("tables_recovering"):
                    break
                await asyncio.sleep(0.05)
            await produce(kafka_bootstrap, topic, (updated(k, f"second {k}") for k in later))
            in_sql_at = ready_at = None
            saw_recovering_503 = False
            deadline = time.monotonic() + 300
            while in_sql_at is None or ready_at is None:
                worker.assert_alive()
                assert time.monotonic() < deadline, worker.tail()
                now = time.monotonic()
                if in_sql_at is None:
                    rows = await asyncio.to_thread(store.rows, PLANET)
                    if all(rows[k]["name"] == f"second {k}" for k in later):
                        in_sql_at = now
                if ready_at is None:
                    body = await ready_body(http, base)
                    if body.get("ready"):
                        ready_at = now
                    else:
                        async with http.get(f"{base}/entities/planet/{keys[-1]}") as response:
                            saw_recovering_503 |= response.status == 503
                await asyncio.sleep(0.05)
            # The updates reached SQL before the table was recovered, and reads answered 503
            # meanwhile.
            assert in_sql_at < ready_at, (in_sql_at, ready_at)
            assert saw_recovering_503
            # Recovered, the cache holds what SQL holds: the updates applied meanwhile too.
            await assert_cached(http, base, [*later[:50], *keys[-50:]], later)
    finally:
        worker.stop()
        store.dispose()


async def assert_cached(
    http: aiohttp.ClientSession, base: str, keys: list[str], updated: list[str]
) -> None:
    """Check the worker answers every key with its newest name ("second ..." if updated)."""
    for key in keys:
        async with http.get(f"{base}/entities/planet/{key}") as response:
            assert response.status == 200, await response.text()
            body = await response.json()
        name = f"second {key}" if key in updated else f"first {key}"
        assert body == {"uuid": key, "name": name}


async def ready_body(http: aiohttp.ClientSession, base: str) -> dict[str, object]:
    """Return what ``/ready`` says ({} while the worker does not listen yet)."""
    try:
        async with http.get(f"{base}/ready") as response:
            body: dict[str, object] = await response.json()
            return body
    except (aiohttp.ClientError, TimeoutError):
        return {}
