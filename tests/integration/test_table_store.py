"""Where the cached tables live: RocksDB keeps them across restarts; the mirror never waits.

1. With the RocksDB store (the default) a stopped worker's table files hold every entry and
   the changelog offset they are at, so a restart recovers only what came after.
2. While a worker recovers a large in-memory table, the SQL mirror goes on, reads by key of
   the partitions still recovering answer 503, and once recovered the cache holds what the
   database holds (including what was applied during the recovery).
3. Table files that belong to another log (a changelog made again, as on a fresh broker, or
   another APP_ID) are removed and the changelog written again from the database: one warning,
   no ConsistencyError, and reads by key answer what SQL has.
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
    WorkerProcess,
    create_topic,
    end_offsets,
    free_port,
    make_worker,
    produce,
    recreate_topic,
    wait_caught_up,
    wait_ready,
    worker_env,
)
from tests.waiting import eventually

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
    keys = [str(uuid.uuid4()) for _ in range(400)]
    # Every entry is in the files (mirror_and_stop checks), each partition at its changelog's
    # last offset: a restart starts reading the changelog after it.
    worker, app_id = await mirror_and_stop(kafka_bootstrap, pg_url, topic_prefix, tmp_path, keys)
    changelog = await end_offsets(kafka_bootstrap, f"{app_id}-planet-changelog")
    files = read_partition_files(tmp_path / "data" / "v1" / "tables", 4)
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
            await eventually(
                lambda: partitions_body(http, base),
                lambda body: body.get("assigned") and body.get("tables_recovering"),
                what="/partitions saying assigned, tables recovering",
                every=0.05,
                alive=[worker],
            )
            await produce(kafka_bootstrap, topic, (updated(k, f"second {k}") for k in later))
            in_sql_at = ready_at = None
            saw_recovering_503 = False

            async def note_when() -> tuple[float | None, float | None]:
                """Note when the updates are in SQL and when the worker is settled (recovered)."""
                nonlocal in_sql_at, ready_at, saw_recovering_503
                now = time.monotonic()
                if in_sql_at is None:
                    rows = await asyncio.to_thread(store.rows, PLANET)
                    if all(rows[k]["name"] == f"second {k}" for k in later):
                        in_sql_at = now
                if ready_at is None:
                    body = await partitions_body(http, base)
                    if body.get("settled"):
                        ready_at = now
                    else:
                        async with http.get(f"{base}/entities/planet/{keys[-1]}") as response:
                            saw_recovering_503 |= response.status == 503
                return in_sql_at, ready_at

            await eventually(
                note_when,
                lambda seen: None not in seen,
                what="the updates in SQL (first) and the worker settled (second)",
                timeout=300,
                every=0.05,
                alive=[worker],
            )
            assert in_sql_at is not None and ready_at is not None
            # The updates reached SQL before the table was recovered, and reads answered 503
            # meanwhile.
            assert in_sql_at < ready_at, (in_sql_at, ready_at)
            assert saw_recovering_503
            # Recovered, the cache holds what SQL holds: the updates applied meanwhile too.
            await assert_cached(http, base, [*later[:50], *keys[-50:]], later)
    finally:
        worker.stop()
        store.dispose()


async def mirror_and_stop(
    kafka_bootstrap: str, pg_url: str, topic_prefix: str, tmp_path: Path, keys: list[str]
) -> tuple[WorkerProcess, str]:
    """Mirror cached planets ``keys`` with a worker, stop it, and check its table files hold
    every entry; return the worker and its APP_ID."""
    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_bootstrap, topic, partitions=4)
    await produce(kafka_bootstrap, topic, (created(k, f"first {k}") for k in keys))
    worker, app_id = make_worker(kafka_bootstrap, pg_url, topic_prefix, tmp_path, "rocks")
    worker.start()
    try:
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
        await wait_ready(worker)
    finally:
        assert worker.stop() == "SIGTERM"
    files = read_partition_files(tmp_path / "data" / "v1" / "tables", 4)
    assert sum(entries for _, entries in files.values()) == len(keys)
    return worker, app_id


def log_since(worker: WorkerProcess, start: int) -> str:
    """Return what the worker logged from byte ``start`` of its log on."""
    with worker.log_path.open("rb") as file:
        file.seek(start)
        return file.read().decode(errors="replace")


def the_warning(log: str) -> str:
    """Return the one warning line about the planet table (failing on none or more, or on a
    ConsistencyError or traceback in ``log``)."""
    said = [line for line in log.splitlines() if "cached table planet (" in line]
    assert len(said) == 1 and "[WARNING]" in said[0], said
    assert "ConsistencyError" not in log and "Traceback" not in log
    return said[0]


async def assert_all_cached(worker: WorkerProcess, keys: list[str]) -> None:
    """Check the running worker answers every key from its cache as SQL has it."""
    async with aiohttp.ClientSession() as http:
        await assert_cached(http, f"http://127.0.0.1:{worker.env['WEB_PORT']}", keys, [])


async def test_a_changelog_made_again_is_written_again_and_local_files_rebuilt(
    kafka_bootstrap: str, pg_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    # Before: Faust's ConsistencyError traceback and exit 1 at every start (a crash loop under
    # compose), and with the files removed by hand, 404 for every entity SQL has.
    keys = [str(uuid.uuid4()) for _ in range(200)]
    worker, app_id = await mirror_and_stop(kafka_bootstrap, pg_url, topic_prefix, tmp_path, keys)
    changelog = f"{app_id}-planet-changelog"
    # Empty and compacted, as a fresh broker has it.
    await recreate_topic(kafka_bootstrap, changelog, 4, configs={"cleanup.policy": "compact"})
    restarted_at = worker.log_path.stat().st_size
    worker.start()
    try:
        await wait_ready(worker)
        await assert_all_cached(worker, keys)
    finally:
        assert worker.stop() == "SIGTERM"
    said = the_warning(log_since(worker, restarted_at))
    assert f"cached table planet ({changelog}): its files in DATA_DIR were removed, as " in said
    assert "as the changelog was made again since they were built" in said, said
    assert f"written again from servicea_planet ({len(keys)} entries)" in said, said
    # The rebuilt files hold every entry, at the end of the changelog written again.
    files = read_partition_files(tmp_path / "data" / "v1" / "tables", 4)
    assert sum(entries for _, entries in files.values()) == len(keys)
    ends = await end_offsets(kafka_bootstrap, changelog)
    assert {p: offset for p, (offset, _) in files.items()} == {p: e - 1 for p, e in ends.items()}


async def test_a_data_dir_reused_under_another_app_id_is_rebuilt(
    kafka_bootstrap: str, pg_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    keys = [str(uuid.uuid4()) for _ in range(200)]
    _, old_app = await mirror_and_stop(kafka_bootstrap, pg_url, topic_prefix, tmp_path, keys)
    app_id = f"renamed-{uuid.uuid4().hex[:8]}"
    env = worker_env(
        bootstrap=kafka_bootstrap,
        database_url=pg_url,
        app_id=app_id,
        topic_prefix=topic_prefix,
        data_dir=tmp_path / "data",
    )
    worker = WorkerProcess(env, tmp_path / "worker-renamed.log")
    worker.start()
    try:
        await wait_ready(worker)
        await assert_all_cached(worker, keys)
        # One worker per DATA_DIR: a second one on it stops with one line.
        second = WorkerProcess({**env, "WEB_PORT": str(free_port())}, tmp_path / "second.log")
        second.start()
        assert second.proc is not None
        code = await asyncio.to_thread(second.proc.wait, 120)
    finally:
        assert worker.stop() == "SIGTERM"
    said = the_warning(worker.log_path.read_text(errors="replace"))
    assert f"built under APP_ID {old_app!r}" in said, said
    assert f"written again from servicea_planet ({len(keys)} entries)" in said, said
    second_log = second.log_path.read_text(errors="replace")
    errors = [
        line[line.index("error: ") :].strip()
        for line in second_log.splitlines()
        if "error: " in line
    ]
    assert code == 1, second_log[-3000:]
    assert errors == [
        f"error: DATA_DIR {str(tmp_path / 'data')!r} is in use by another worker; give each "
        "worker a DATA_DIR of its own"
    ], errors
    assert "Traceback" not in second_log


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


async def partitions_body(http: aiohttp.ClientSession, base: str) -> dict[str, object]:
    """Return what ``/partitions`` says ({} while the worker does not listen yet)."""
    try:
        async with http.get(f"{base}/partitions") as response:
            body: dict[str, object] = await response.json()
            return body
    except (aiohttp.ClientError, TimeoutError):
        return {}
