"""Debezium's PostgreSQL connector capturing a real PostgreSQL: what its events look like.

The infrastructure of the Debezium pipeline test, proven on its own: Kafka Connect standalone
(devservices/connect.py) runs Debezium's PostgreSQL connector three ways on one source
database (tests/debezium_source.py): the change-event envelope with JsonConverter's schemas,
the envelope without them, and the flattened rows of ``ExtractNewRecordState``. The snapshot
and then live inserts, updates, deletes and primary-key changes of a table with a single-column
key and one with a composite key must arrive as the ops Debezium documents: ``r`` for the
snapshot, ``c``, ``u``, ``d`` followed by a tombstone, and a ``d`` + tombstone + ``c`` for a
change of primary key.

The captures are compared with the fixture files under tests/fixtures/debezium/ (the format's
unit tests read those), all but the fields that change from run to run (``source``, ``ts_*``,
the flat form's ``__lsn`` and ``__source_ts_ms``); ``UPDATE_DEBEZIUM_FIXTURES=1`` writes them
anew from this run instead. Last, a worker mirrors the flattened rows' topics into a fresh
PostgreSQL database, which must then equal the source table for table (the envelope has the
pipeline test, tests/integration/test_debezium_pipeline.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devservices.connect import ConnectError, ConnectStandalone
from models.store import SqlStore
from tests.debezium_source import (
    CUSTOMER,
    ORDER_LINE,
    TABLES,
    DebeziumSource,
    debezium_source,
    table_rows,
)
from tests.support import (
    end_offsets,
    make_worker,
    partitions_of,
    read_records,
    wait_caught_up,
    wait_ready,
)
from tests.waiting import eventually

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "debezium"
UPDATE = os.environ.get("UPDATE_DEBEZIUM_FIXTURES") == "1"
#: What the fixtures call the run's names (they differ in every run).
FIXTURE_TOPIC_PREFIX = "dbserver1"
FIXTURE_DATABASE = "inventory"

#: The rows the snapshot reads: every type, NULLs, edge values.
SNAPSHOT = (
    f"""INSERT INTO {CUSTOMER} VALUES
        ('c1', 'Ada', 3, 9000000000, true, 12.50, '2026-01-02 03:04:05.123456',
         '2026-01-02 03:04:05.5+02', '1990-05-17', '0f8fad5b-d9cb-469f-a165-70867728950e',
         '3 days 04:05:06.5', -1234567890123456789012345678.9012345678),
        ('c2', 'Grace', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        ('c3', 'Linus', 0, -1, false, -0.01, '1970-01-01 00:00:00',
         '2000-02-29 12:00:00+00', '1969-12-31', '00000000-0000-0000-0000-000000000000',
         '-1 day +00:00:00.000001', 0.0000000001)""",
    f"""INSERT INTO {ORDER_LINE} VALUES
        ('o-1', 1, 'sku-a', 2, 9.99), ('o-1', 2, 'sku-b', 1, NULL),
        ('o-2', 1, 'sku-a', 5, 9999999999.99)""",
)
#: Live changes, one transaction each, in this order.
CHANGES = (
    f"""INSERT INTO {CUSTOMER} VALUES ('c4', 'Barbara', 1, 1, true, 0.00,
        '2026-12-06 10:00:00', '2026-12-06 10:00:00+00', '2000-01-01',
        'A987FBC9-4BED-3078-CF07-9141BA07C9F3', '00:00:00',
        99999999999999999999999999.9999999999)""",
    f"UPDATE {CUSTOMER} SET name = 'Ada L.', visits = 4, balance = 13.75,"
    " changed_at = '2026-12-06 11:30:00+00' WHERE id = 'c1'",
    f"DELETE FROM {CUSTOMER} WHERE id = 'c2'",
    f"UPDATE {CUSTOMER} SET id = 'c3b' WHERE id = 'c3'",
    f"INSERT INTO {ORDER_LINE} VALUES ('o-2', 2, 'sku-c', 1, 0.10)",
    f"UPDATE {ORDER_LINE} SET quantity = 3 WHERE order_id = 'o-1' AND line_no = 1",
    f"DELETE FROM {ORDER_LINE} WHERE order_id = 'o-2' AND line_no = 1",
    f"UPDATE {ORDER_LINE} SET line_no = 5 WHERE order_id = 'o-1' AND line_no = 2",
)
#: The ops each table's topic must carry, in order ("-": a tombstone).
EXPECTED_OPS = ["r", "r", "r", "c", "u", "d", "-", "d", "-", "c"]

#: Three ways to run the connector: topic suffix -> (schemas, extra connector settings).
VARIANTS: dict[str, tuple[bool, dict[str, object]]] = {
    "-schemas": (True, {}),
    "-plain": (False, {}),
    # The flat rows, schemaless, with the settings that make schemaless values exact:
    # decimals as strings, times as ISO strings.
    "-flat": (
        False,
        {
            "decimal.handling.mode": "string",
            "time.precision.mode": "isostring",
            "transforms": "unwrap",
            "transforms.unwrap.type": "io.debezium.transforms.ExtractNewRecordState",
            "transforms.unwrap.delete.tombstone.handling.mode": "rewrite-with-tombstone",
            "transforms.unwrap.add.fields": "op,lsn,source.ts_ms",
        },
    ),
}
#: Fields of a value that change from run to run.
VOLATILE = {"source", "ts_ms", "ts_us", "ts_ns", "transaction", "__lsn", "__source_ts_ms"}


def op_of(value: bytes | None) -> str:
    """Return a record's op: the envelope's ``op`` (schemas or not), the flat row's ``__op``
    (``d`` when ``__deleted``), or "-" for a tombstone."""
    if value is None:
        return "-"
    body = json.loads(value)
    body = body.get("payload", body) if "schema" in body else body
    if "__op" in body:
        return "d" if body.get("__deleted") == "true" else str(body["__op"])
    return str(body["op"])


def stable(raw: str | None) -> Any:
    """Return a record's key or value as JSON without the fields that change between runs."""
    if raw is None:
        return None
    body = json.loads(raw)
    payload = body.get("payload") if isinstance(body, dict) and "schema" in body else body
    if isinstance(payload, dict):
        for name in VOLATILE & set(payload):
            del payload[name]
    return body


def renamed(raw: bytes | None, topic_prefix: str, database: str) -> str | None:
    """Return the record's text with the run's topic prefix and database named as the
    fixtures name them."""
    if raw is None:
        return None
    text = raw.decode().replace(topic_prefix, FIXTURE_TOPIC_PREFIX)
    return text.replace(database, FIXTURE_DATABASE)


@pytest.fixture
def source(pg_server_url: str) -> Iterator[DebeziumSource]:
    """A fresh source database (its snapshot rows in), its publication; slots dropped after."""
    database = f"dbz_capture_{uuid.uuid4().hex[:10]}"
    prefix = database.replace("_", "-")
    with debezium_source(pg_server_url, database, prefix, SNAPSHOT) as created:
        yield created


async def test_debeziums_events_arrive_with_the_ops_it_documents(
    connect_standalone: ConnectStandalone,
    kafka_bootstrap: str,
    source: DebeziumSource,
    pg_url: str,
    tmp_path: Path,
) -> None:
    names = {suffix: f"{source.database}{suffix}" for suffix in VARIANTS}
    configs = {
        suffix: source.connector_config(suffix, schemas=schemas, **extra)
        for suffix, (schemas, extra) in VARIANTS.items()
    }
    try:
        for suffix, config in configs.items():
            await asyncio.to_thread(connect_standalone.create, names[suffix], config)

        async def counts() -> dict[str, int]:
            connect_standalone.check(names.values())
            seen = {}
            for suffix in VARIANTS:
                for table in TABLES:
                    topic = source.topic(table, suffix)
                    if not await partitions_of(kafka_bootstrap, topic):
                        seen[topic] = 0
                        continue
                    seen[topic] = sum((await end_offsets(kafka_bootstrap, topic)).values())
            return seen

        def all_at(n: int) -> Any:
            return lambda seen: (
                len(seen) == len(VARIANTS) * len(TABLES)
                and all(count >= n for count in seen.values())
            )

        await eventually(counts, all_at(3), what="the snapshots of both tables")
        for statement in CHANGES:
            await asyncio.to_thread(source.execute, statement)
        seen = await eventually(
            counts,
            all_at(len(EXPECTED_OPS)),
            what=f"{len(EXPECTED_OPS)} records in each topic",
        )
        assert set(seen.values()) == {len(EXPECTED_OPS)}, seen

        for suffix in VARIANTS:
            for table in TABLES:
                topic = source.topic(table, suffix)
                records = [r async for r in read_records(kafka_bootstrap, topic)]
                assert {partition for partition, _, _ in records} == {0}, topic
                ops = [op_of(value) for _, _, value in records]
                assert ops == EXPECTED_OPS, (topic, ops)
                prefix = f"{source.topic_prefix}{suffix}"
                captured = [
                    {
                        "key": renamed(key, prefix, source.database),
                        "value": renamed(value, prefix, source.database),
                    }
                    for _, key, value in records
                ]
                check_fixture(suffix.lstrip("-"), table, configs[suffix], captured)
        await mirror_flat_rows(kafka_bootstrap, source, pg_url, tmp_path)
    finally:
        for name in names.values():
            await asyncio.to_thread(connect_standalone.delete, name)


async def mirror_flat_rows(
    kafka_bootstrap: str, source: DebeziumSource, mirror_url: str, tmp_path: Path
) -> None:
    """The worker mirrors the ``-flat`` connector's topics (tests/models/
    debezium_flat_pipeline.py) into ``mirror_url``: each table equals its source, every record
    counted once, none rejected. The flattened rows end to end, beside the envelope's pipeline
    test."""
    worker, app_id = make_worker(
        kafka_bootstrap,
        mirror_url,
        f"{source.topic_prefix}-",
        tmp_path,
        "flat",
        ENTITY_MODULES="tests.models.debezium_flat_pipeline",
    )
    store = SqlStore.from_url(mirror_url)
    try:
        worker.start()
        await wait_ready(worker)
        for table in TABLES:
            await wait_caught_up(
                kafka_bootstrap, app_id, source.topic(table, "-flat"), alive=worker.assert_alive
            )
        for table in TABLES:
            assert table_rows(mirror_url, table, f"flat_{table}") == table_rows(source.url, table)
        counts = store.outcome_counts(app_id)
        for table in TABLES:
            topic = source.topic(table, "-flat")
            outcomes = {outcome: n for (t, outcome), n in counts.items() if t == topic}
            assert "rejected" not in outcomes and sum(outcomes.values()) == len(EXPECTED_OPS)
    finally:
        worker.stop()
        store.dispose()


def check_fixture(
    variant: str, table: str, config: dict[str, object], captured: list[dict[str, str | None]]
) -> None:
    """Compare a capture with its fixture file (or write the file, ``UPDATE``)."""
    path = FIXTURES / f"{variant}.{table}.json"
    if UPDATE:
        config = {
            key: value
            for key, value in config.items()
            if not key.startswith("database.") and key not in ("slot.name", "publication.name")
        }
        config["topic.prefix"] = FIXTURE_TOPIC_PREFIX
        fixture = {
            "topic": f"{FIXTURE_TOPIC_PREFIX}.public.{table}",
            "connector": config,
            "ops": EXPECTED_OPS,
            "records": captured,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(fixture, indent=2) + "\n")
        return
    fixture = json.loads(path.read_text())
    expected = [(stable(r["key"]), stable(r["value"])) for r in fixture["records"]]
    assert [(stable(r["key"]), stable(r["value"])) for r in captured] == expected, path


async def test_a_failing_connector_fails_the_wait_at_once_with_its_cause_and_the_log(
    connect_standalone: ConnectStandalone, source: DebeziumSource
) -> None:
    name = f"{source.database}-failing"
    config = source.connector_config("-failing", **{"publication.name": "no_such_publication"})
    try:
        with pytest.raises(ConnectError) as failed:
            await asyncio.to_thread(connect_standalone.create, name, config)
        message = str(failed.value)
        assert f"connector {name}: Connect task failed: " in message, message
        assert "Publication autocreation is disabled" in message, message
        assert f"{connect_standalone.log_path} ends:\n" in message, message
    finally:
        await asyncio.to_thread(connect_standalone.delete, name)
    connect_standalone.assert_alive()  # one connector failing leaves Connect running
