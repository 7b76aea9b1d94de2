"""End to end: a real worker process mirrors a mixed 4-partition stream into SQL."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from streams import __version__
from tests.support import (
    WorkerProcess,
    chaotic_stream,
    create_topic,
    expected_planets,
    expected_state,
    make_worker,
    partitions_of,
    planet_stream,
    produce,
    produce_timed,
    read_keys,
    run_cli,
    wait_caught_up,
    worker_env,
)
from tests.waiting import eventually


def http_get(url: str, token: str = "") -> tuple[int, str]:
    """GET ``url`` (with a bearer token if given); return status and body, errors too."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def read_planets(database_url: str) -> dict[str, str]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT uuid, name FROM servicea_planet")).all()
    finally:
        engine.dispose()
    return {str(u): str(n) for u, n in rows}


async def test_worker_mirrors_a_mixed_stream(
    kafka_bootstrap: str, db_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_bootstrap, topic, partitions=4)
    events = planet_stream(5_000, 60, poison_every=97)
    sent = await produce(kafka_bootstrap, topic, ((e.key.encode(), e.value) for e in events))
    assert sent == 5_000

    app_id = f"mirror-test-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(
        worker_env(
            bootstrap=kafka_bootstrap,
            database_url=db_url,
            app_id=app_id,
            topic_prefix=topic_prefix,
            data_dir=tmp_path / "data",
        ),
        tmp_path / "worker.log",
    )
    worker.start()
    try:
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
        expected = expected_planets(events)
        assert len(expected) > 20
        assert read_planets(db_url) == expected
        log = worker.log_path.read_text()
        assert "rejected " in log and "unknown_change_type" in log
    finally:
        worker.stop()


async def test_worker_creates_its_missing_topic_with_the_configured_partitions(
    kafka_bootstrap: str, sqlite_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    topic = f"{topic_prefix}planet-changed"
    worker, app_id = make_worker(
        kafka_bootstrap,
        sqlite_url,
        topic_prefix,
        tmp_path,
        "mirror-test",
        TOPIC_PARTITIONS="6",
        API_TOKEN="t0ken",
        LOG_FORMAT="json",
    )
    env = worker.env
    worker.start()
    try:
        await eventually(
            lambda: partitions_of(kafka_bootstrap, topic),
            lambda found: found == list(range(6)),
            what=f"the worker creating {topic} with 6 partitions",
            alive=[worker],
        )
        events = planet_stream(300, 20, seed=11, poison_every=50)
        await produce(kafka_bootstrap, topic, ((e.key.encode(), e.value) for e in events))
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
        assert read_planets(sqlite_url) == expected_planets(events)

        base = f"http://127.0.0.1:{env['WEB_PORT']}"
        status, body = await asyncio.to_thread(http_get, f"{base}/health")
        assert (status, json.loads(body)) == (200, {"status": "ok", "version": __version__})
        status, body = await asyncio.to_thread(http_get, f"{base}/ready")
        assert (status, json.loads(body)) == (200, {"ready": True})
        assert (await asyncio.to_thread(http_get, f"{base}/partitions"))[0] == 401
        status, body = await asyncio.to_thread(http_get, f"{base}/partitions", "t0ken")
        assert status == 200 and json.loads(body)["settled"] is True
        assert (await asyncio.to_thread(http_get, f"{base}/metrics"))[0] == 401
        assert (await asyncio.to_thread(http_get, f"{base}/metrics", "wrong"))[0] == 401
        status, body = await asyncio.to_thread(http_get, f"{base}/metrics", "t0ken")
        assert status == 200
        poison = sum(1 for e in events if e.poison)
        labels = f'entity="planet",outcome="rejected",topic="{topic}"'
        assert f"mirror_events_total{{{labels}}} {float(poison)}" in body
        assert "mirror_batch_seconds_bucket" in body and "mirror_sql_transaction_seconds" in body
        assert f'mirror_consumer_lag_records{{partition="0",topic="{topic}"}}' in body
        some_key, some_name = sorted(expected_planets(events).items())[0]
        status, body = await asyncio.to_thread(
            http_get, f"{base}/entities/planet/{some_key}", "t0ken"
        )
        assert (status, json.loads(body)) == (200, {"uuid": some_key, "name": some_name})
        status, body = await asyncio.to_thread(http_get, f"{base}/entities/planet/nope", "t0ken")
        assert status == 404 and "error" in json.loads(body)
        status, body = await asyncio.to_thread(http_get, f"{base}/entities/planet?limit=5", "t0ken")
        page = json.loads(body)
        assert status == 200 and len(page["items"]) == 5
        assert page["total"] == len(expected_planets(events))
        status, _ = await asyncio.to_thread(http_get, f"{base}/entities/planet?limit=x", "t0ken")
        assert status == 400
        assert (await asyncio.to_thread(http_get, f"{base}/entities/moon", "t0ken"))[0] == 404
        assert (await asyncio.to_thread(http_get, f"{base}/entities/planet"))[0] == 401
        rejections = [
            json.loads(line)
            for line in worker.log_path.read_text().splitlines()
            if '"rejected ' in line
        ]
        assert len(rejections) == poison
        assert all(r["level"] == "error" and r["topic"] == topic for r in rejections)
        assert all(
            isinstance(r["partition"], int) and isinstance(r["offset"], int) for r in rejections
        )
    finally:
        worker.stop()


async def test_events_keyed_otherwise_are_repartitioned_by_entity_key(
    kafka_bootstrap: str, pg_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_bootstrap, topic, partitions=4)
    sent = chaotic_stream(3_000, 80, seed=3, foreign_keys=True)
    positions = await produce_timed(
        kafka_bootstrap, topic, ((s.key, s.value, s.timestamp) for s in sent)
    )
    worker, app_id = make_worker(
        kafka_bootstrap, pg_url, topic_prefix, tmp_path, "mirror-test", REPARTITION="planet"
    )
    worker.start()
    repartition = f"{app_id}-{topic}-repartition"
    try:
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
        await wait_caught_up(kafka_bootstrap, app_id, repartition, alive=worker.assert_alive)
        assert read_planets(pg_url) == expected_state(sent, positions)
    finally:
        worker.stop()
    # status reads a forwarded topic's progress from the group, the repartition topic's from
    # the store: both caught up (it read the source's as never applied).
    status = run_cli(dict(worker.env), "status")
    assert status.returncode == 0, status.stderr
    assert f"{topic} (group {app_id}, forwarded to {repartition}):" in status.stdout
    assert f"{repartition} (group {app_id}):" in status.stdout
    lag_and_staleness = [
        line.split()[-2:] for line in status.stdout.splitlines() if line.strip()[:1].isdigit()
    ]
    partitions = 4 + len(await partitions_of(kafka_bootstrap, repartition))
    assert lag_and_staleness == [["0", "0"]] * partitions, status.stdout
    # Every entity's events went to exactly one partition of the repartition topic.
    partitions_by_entity: dict[bytes, set[int]] = {}
    async for partition, key in read_keys(kafka_bootstrap, repartition):
        partitions_by_entity.setdefault(key, set()).add(partition)
    assert len(partitions_by_entity) >= 80
    assert all(len(parts) == 1 for parts in partitions_by_entity.values())


#: An entity with columns its events never set: a nullable one and one with a server default.
COMETS = """
from datetime import datetime

from sqlalchemy import DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from models import Base, MirroredEntity


class Comet(MirroredEntity, Base):
    __tablename__ = "servicea_comet"
    __topic__ = "comet-changed"
    __event_fields__ = {"code": "cometCode", "name": "cometName"}

    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    orbits: Mapped[int] = mapped_column(Integer, nullable=False, server_default="7")
"""


async def test_columns_the_events_never_set_keep_their_default_and_their_value(
    kafka_bootstrap: str, db_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    (tmp_path / "comets.py").write_text(COMETS)
    topic = f"{topic_prefix}comet-changed"
    await create_topic(kafka_bootstrap, topic, partitions=2)
    worker, app_id = make_worker(
        kafka_bootstrap,
        db_url,
        topic_prefix,
        tmp_path,
        "comet",
        ENTITY_MODULES="comets",
        PYTHONPATH=str(tmp_path),
        TOPIC_PARTITIONS="2",
    )

    def comet(code: str, name: str) -> tuple[bytes, bytes]:
        return code.encode(), json.dumps({"cometCode": code, "cometName": name}).encode()

    def rows() -> dict[str, tuple[str, object, int]]:
        engine = create_engine(db_url)
        try:
            with engine.connect() as conn:
                found = conn.execute(
                    text("SELECT code, name, deleted_at, orbits FROM servicea_comet")
                ).all()
        finally:
            engine.dispose()
        return {str(c): (str(n), d, int(o)) for c, n, d, o in found}

    async def wait_names(names: dict[str, str]) -> dict[str, tuple[str, object, int]]:
        found: dict[str, tuple[str, object, int]] = await eventually(
            lambda: asyncio.to_thread(rows),
            lambda now: {c: r[0] for c, r in now.items()} == names,
            what=f"the comets {names}",
            alive=[worker],
            ignoring=(SQLAlchemyError,),  # the table is created when the worker starts
        )
        return found

    worker.start()
    try:
        await produce(kafka_bootstrap, topic, [comet("c1", "Halley"), comet("c2", "Encke")])
        created = await wait_names({"c1": "Halley", "c2": "Encke"})
        assert created == {"c1": ("Halley", None, 7), "c2": ("Encke", None, 7)}
        engine = create_engine(db_url)
        try:
            with engine.begin() as conn:  # another writer sets the column the events never do
                conn.execute(
                    text(
                        "UPDATE servicea_comet SET deleted_at = :at, orbits = 9 WHERE code = 'c1'"
                    ),
                    {"at": "2026-12-01 00:00:00"},  # naive: MariaDB's DATETIME takes no offset
                )
        finally:
            engine.dispose()
        await produce(kafka_bootstrap, topic, [comet("c1", "Halley (1P)")])
        updated = await wait_names({"c1": "Halley (1P)", "c2": "Encke"})
        assert updated["c1"][1] is not None and updated["c1"][2] == 9  # untouched by the update
        assert updated["c2"] == ("Encke", None, 7)
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
        assert "Traceback" not in worker.log_path.read_text()
    finally:
        assert worker.stop() == "SIGTERM"


async def test_a_topic_of_any_partition_count_is_mirrored_and_cached_with_no_setting(
    kafka_bootstrap: str, pg_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_bootstrap, topic, partitions=6)  # TOPIC_PARTITIONS stays 4
    worker, app_id = make_worker(kafka_bootstrap, pg_url, topic_prefix, tmp_path, "six")
    assert worker.env["TOPIC_PARTITIONS"] == "4"
    events = planet_stream(600, 40, seed=3)
    await produce(kafka_bootstrap, topic, ((e.key.encode(), e.value) for e in events))
    worker.start()
    try:
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
        expected = expected_planets(events)
        assert read_planets(pg_url) == expected
        assert await partitions_of(kafka_bootstrap, f"{app_id}-planet-changelog") == list(range(6))
        base = f"http://127.0.0.1:{worker.env['WEB_PORT']}"
        for key in sorted({e.key for e in events}):
            status, body = await asyncio.to_thread(http_get, f"{base}/entities/planet/{key}")
            if key in expected:
                assert (status, json.loads(body)) == (200, {"uuid": key, "name": expected[key]})
            else:
                assert status == 404, (key, body)
    finally:
        assert worker.stop() == "SIGTERM"
