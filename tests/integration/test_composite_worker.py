"""A composite-key entity through a real worker, its topic read directly and repartitioned: an
order line keyed by ``order_id`` (text) and ``line_no`` (integer), fed changeType JSON on
PostgreSQL. Creates, an update, a DELETED event, a tombstone whose record key is the JSON
object of the key columns, and a stale event from another partition that must not win; then
``GET /entities/order_line/{order_id}/{line_no}`` answers from the cache, lists page by the
key's JSON array, ``verify`` finds the table and the cache matching the topic, and ``rebuild``
makes the same table again."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from models.registry import build_spec, default_registry
from models.store import SqlStore
from streams.core.keys import record_key_bytes
from tables.partitioner import key_partition
from tests.models.order_lines import OrderLine
from tests.support import (
    create_topic,
    make_worker,
    metric_value,
    produce_timed,
    read_metrics,
    run_cli,
    wait_caught_up,
    wait_ready,
)

COLUMNS = ("order_id", "line_no")
LINE = build_spec(OrderLine)
default_registry.unregister(OrderLine)  # the worker's to declare, not this process's


def event(order: str, no: int, sku: str, qty: int, change: str | None = None) -> bytes:
    body: dict[str, Any] = {"orderId": order, "lineNo": no, "sku": sku, "quantity": qty}
    if change is not None:
        body["changeType"] = change
    return json.dumps(body).encode()


def key(order: str, no: int) -> bytes:
    return record_key_bytes((order, no), COLUMNS)


@pytest.mark.parametrize("repartition", [False, True], ids=["direct", "repartitioned"])
async def test_a_composite_key_entity_mirrors_through_a_worker(
    kafka_bootstrap: str, pg_url: str, topic_prefix: str, tmp_path: Path, repartition: bool
) -> None:
    topic = f"{topic_prefix}order-line-changed"
    await create_topic(kafka_bootstrap, topic, partitions=4)
    worker, app_id = make_worker(
        kafka_bootstrap,
        pg_url,
        topic_prefix,
        tmp_path,
        "composite",
        ENTITY_MODULES="tests.models.order_lines",
        # Repartitioned: every record forwarded keyed by the JSON object of its key columns,
        # the tombstone read back by that key.
        **({"REPARTITION": "order_line"} if repartition else {}),
    )
    applied_from = f"{app_id}-{topic}-repartition" if repartition else topic

    async def caught_up() -> None:
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
        if repartition:
            await wait_caught_up(kafka_bootstrap, app_id, applied_from, alive=worker.assert_alive)

    now = int(time.time() * 1000)
    store = SqlStore.from_url(pg_url)
    worker.start()
    try:
        await produce_timed(
            kafka_bootstrap,
            topic,
            [
                (key("o-1", 1), event("o-1", 1, "apple", 1, "CREATED"), now),
                (key("o-1", 2), event("o-1", 2, "pear", 2, "CREATED"), now),
                (key("o-2", 1), event("o-2", 1, "plum", 3), now),  # shares line_no with o-1/1
                (key("a/b", 7), event("a/b", 7, "slash", 4), now),
                (key("o-1", 1), event("o-1", 1, "apple", 5, "UPDATED"), now + 1),
                (key("o-1", 2), event("o-1", 2, "pear", 2, "DELETED"), now + 2),
                (key("o-2", 1), None, now + 3),  # Debezium's tombstone after a delete
            ],
        )
        await caught_up()
        # An event of o-1/1 stamped a minute before, through another partition: older, so it
        # is skipped, whatever order the partitions are read in.
        home = key_partition(key("o-1", 1), 4)
        stray = next(k for n in range(100) if key_partition(k := f"x{n}".encode(), 4) != home)
        await produce_timed(
            kafka_bootstrap, topic, [(stray, event("o-1", 1, "stale", 99), now - 60_000)]
        )
        await caught_up()
        await wait_ready(worker)

        rows = {k: (r["sku"], r["quantity"]) for k, r in store.rows(LINE).items()}
        assert rows == {("o-1", 1): ("apple", 5), ("a/b", 7): ("slash", 4)}
        counts = {o: n for (t, o), n in store.outcome_counts(app_id).items() if t == applied_from}
        assert counts == {"applied": 7, "skipped": 1}

        base = f"http://127.0.0.1:{worker.env['WEB_PORT']}/entities/order_line"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:

            async def get(path: str) -> tuple[int, Any]:
                async with http.get(base + path) as response:
                    return response.status, await response.json()

            line = await get("/o-1/1")
            slashed = await get(f"/{quote('a/b', safe='')}/7")
            local = metric_value(
                await read_metrics(worker),
                'mirror_entity_reads_total{entity="order_line",result="local"}',
            )
            deleted = await get("/o-1/2")
            tombstoned = await get("/o-2/1")
            short = await get("/o-1")
            malformed = await get("/o-1/one")
            first = await get("?limit=1")
            after = quote(json.dumps(first[1]["next_after"]), safe="")
            second = await get(f"?limit=1&after={after}")
    finally:
        worker.stop()
        store.dispose()

    assert line == (200, {"order_id": "o-1", "line_no": 1, "sku": "apple", "quantity": 5})
    assert slashed == (200, {"order_id": "a/b", "line_no": 7, "sku": "slash", "quantity": 4})
    assert local == 2  # both answered from the cache
    assert deleted[0] == 404 and tombstoned[0] == 404
    assert short[0] == 404 and "{order_id}/{line_no}" in short[1]["error"]
    assert malformed[0] == 400 and "line_no" in malformed[1]["error"]
    assert first[0] == 200 and first[1]["next_after"] == ["a/b", 7]
    assert second[0] == 200 and [i["order_id"] for i in second[1]["items"]] == ["o-1"]

    verify = run_cli(worker.env, "verify", "order_line")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"order_line matches {topic}: 2 rows" in verify.stdout
    assert f"the cache ({app_id}-order_line-changelog) matches order_line: 2 entries" in (
        verify.stdout
    )
    if repartition:
        return  # rebuild reads the source topic either way: once is enough
    # Rebuilt from the topic, the table is the same: tombstones and the guard by composite key.
    rebuild = run_cli(worker.env, "rebuild", "order_line")
    assert rebuild.returncode == 0, rebuild.stdout + rebuild.stderr
    assert "rebuilt order_line from 8 records: 2 rows" in rebuild.stdout
    store = SqlStore.from_url(pg_url)
    try:
        assert {k: r["sku"] for k, r in store.rows(LINE).items()} == {
            ("o-1", 1): "apple",
            ("a/b", 7): "slash",
        }
    finally:
        store.dispose()
