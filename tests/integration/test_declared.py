"""Soft deletes and partial updates through the real broker, on SQLite and PostgreSQL.

One worker mirrors the three moons of ``tests/models/declared_moons.py`` (soft deletes, partial
updates, both). Random streams with stale versions, nulls, patches lacking the name and
tombstones go in; the worker is SIGKILLed mid-stream and restarted. Each table must then
hold exactly what the one-by-one oracle (``tests/moon_oracle.py``) says, every event counted
once with the oracle's outcome (a replay has no second effect: a soft-deleted moon does not
come back), ``verify`` agrees, and the HTTP reads leave soft-deleted moons out unless asked.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import create_engine, text

from models.store import SqlStore
from tests.moon_oracle import MoonOracle, moon_stream
from tests.support import (
    create_topic,
    make_worker,
    produce,
    run_cli,
    wait_caught_up,
    wait_ready,
    wait_stored,
)

#: kind -> (table, topic, soft deletes, partial updates)
MOONS = {
    "softmoon": ("declared_soft_moon", "softmoon-changed", True, False),
    "patchedmoon": ("declared_patched_moon", "patchedmoon-changed", False, True),
    "softpatchedmoon": ("declared_soft_patched_moon", "softpatchedmoon-changed", True, True),
}


def read_table(db_url: str, table: str, soft: bool) -> dict[str, tuple[Any, ...]]:
    engine = create_engine(db_url)
    deleted = ", deleted_at IS NOT NULL" if soft else ""
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(f"SELECT uuid, name, size, color{deleted} FROM {table}"))
            return {str(r[0]): (*r[1:4], bool(r[4])) if soft else tuple(r[1:]) for r in rows}
    finally:
        engine.dispose()


async def get(port: str, path: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        http.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.json()


async def test_soft_deletes_and_partial_updates_survive_a_sigkill_exactly_once(
    kafka_bootstrap: str, db_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    streams = {kind: moon_stream(1_200, 40, seed=n) for n, kind in enumerate(MOONS)}
    for _, topic, _, _ in MOONS.values():
        await create_topic(kafka_bootstrap, f"{topic_prefix}{topic}", partitions=4)
    worker, app_id = make_worker(
        kafka_bootstrap,
        db_url,
        topic_prefix,
        tmp_path,
        "declared",
        ENTITY_MODULES="tests.models.declared_moons",
        BATCH_SIZE="100",
        SESSION_TIMEOUT="6",
    )
    store = SqlStore.from_url(db_url)
    oracles: dict[str, MoonOracle] = {}

    async def send(part: slice) -> None:
        for kind, (_, topic, _, _) in MOONS.items():
            items = ((e.key.encode(), e.value) for e in streams[kind][part])
            await produce(kafka_bootstrap, f"{topic_prefix}{topic}", items)

    async def caught_up() -> None:
        for _, topic, _, _ in MOONS.values():
            await wait_caught_up(
                kafka_bootstrap, app_id, f"{topic_prefix}{topic}", alive=worker.assert_alive
            )

    worker.start()
    try:
        await send(slice(0, 500))
        await caught_up()
        # A crash while the rest is applied, and a restart: replays must change nothing.
        producing = asyncio.create_task(send(slice(500, None)))
        await wait_stored(store, app_id, 2_200, worker)
        worker.kill()
        await producing
        worker.start()
        await caught_up()
        await wait_ready(worker)
        port = worker.env["WEB_PORT"]

        for kind, (table, topic, soft, partial) in MOONS.items():
            oracle = oracles[kind] = MoonOracle(soft, partial)
            oracle.apply_all(streams[kind])
            assert read_table(db_url, table, soft) == oracle.table(), kind
            counts = {
                outcome: n
                for (t, outcome), n in store.outcome_counts(app_id).items()
                if t == f"{topic_prefix}{topic}"
            }
            assert counts == {k: v for k, v in oracle.outcomes.items() if v}, kind

        # Reads: a soft-deleted moon is 404 and out of the list, unless include_deleted=true.
        for kind in ("softmoon", "softpatchedmoon"):
            oracle = oracles[kind]
            assert oracle.deleted, f"the {kind} stream deleted no moon; pick another seed"
            gone = sorted(oracle.deleted)[0]
            live = sorted(set(oracle.rows) - oracle.deleted)[0]
            status, body = await get(port, f"/entities/{kind}/{gone}")
            assert status == 404 and "include_deleted=true" in body["error"], body
            status, body = await get(port, f"/entities/{kind}/{gone}?include_deleted=true")
            assert status == 200 and body["deleted_at"] is not None, body
            status, body = await get(port, f"/entities/{kind}/{live}")
            assert status == 200 and body["deleted_at"] is None, body
            status, body = await get(port, f"/entities/{kind}?limit=1000")
            assert {item["uuid"] for item in body["items"]} == set(oracle.rows) - oracle.deleted
            assert body["total"] == len(oracle.rows) - len(oracle.deleted)
            status, body = await get(port, f"/entities/{kind}?limit=1000&include_deleted=true")
            assert {item["uuid"] for item in body["items"]} == set(oracle.rows)
            status, body = await get(port, f"/entities/{kind}/{gone}?include_deleted=maybe")
            assert status == 400, body
    finally:
        worker.stop()
        store.dispose()

    for kind in MOONS:
        verify = run_cli(dict(worker.env), "verify", kind)
        assert verify.returncode == 0, verify.stdout + verify.stderr
    status = run_cli(dict(worker.env), "status")
    assert status.returncode == 0, status.stderr
    for kind, (table, _, soft, _) in MOONS.items():
        oracle = oracles[kind]
        marked = f" ({len(oracle.deleted)} soft-deleted)" if soft else ""
        assert f"table {table}: {len(oracle.rows)} rows{marked}\n" in status.stdout, status.stdout
