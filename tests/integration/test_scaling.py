"""Three workers share a 6-partition topic; one leaves (SIGTERM or SIGKILL), a new one joins.

At the end the SQL table equals the state computed from what was produced, the cached
table's changelog holds that state for every key, and every surviving worker answers
``GET /entities/planet/{key}`` correctly for every key, whichever worker owns it: requests
are answered locally and routed both ways.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from models.planet import Planet
from models.registry import build_spec
from models.store import SqlStore
from tests.support import (
    Sent,
    WorkerProcess,
    chaotic_stream,
    create_topic,
    end_offsets,
    expected_state,
    get_settled,
    produce_timed,
    read_latest,
    wait_caught_up,
    wait_ready,
    wait_stored,
    worker_env,
)
from tests.waiting import DEADLINE, eventually

PLANET = build_spec(Planet)
PARTITIONS = 6


@pytest.fixture
def store(server_db_url: str) -> Iterator[SqlStore]:
    store = SqlStore.from_url(server_db_url)
    yield store
    store.dispose()


def scaling_worker(
    name: str,
    app_id: str,
    bootstrap: str,
    db_url: str,
    prefix: str,
    tmp_path: Path,
    **extra: str,
) -> WorkerProcess:
    """One member of the group ``app_id``, with its own web port, data dir and log."""
    env = worker_env(
        bootstrap=bootstrap,
        database_url=db_url,
        app_id=app_id,
        topic_prefix=prefix,
        data_dir=tmp_path / f"data-{name}",
        TOPIC_PARTITIONS=str(PARTITIONS),
        SESSION_TIMEOUT="6",
        RECOVERY_STALL_TIMEOUT="15",
        BATCH_SIZE="500",
        **extra,
    )
    return WorkerProcess(env, tmp_path / f"worker-{name}.log")


def base_url(worker: WorkerProcess) -> str:
    return f"http://127.0.0.1:{worker.env['WEB_PORT']}"


async def wait_sql_state(
    store: SqlStore,
    expected: dict[str, str],
    workers: list[WorkerProcess],
    timeout: float = DEADLINE,
) -> None:
    """Wait until the SQL table holds exactly ``expected`` (uuid -> name)."""

    def differences() -> dict[str, tuple[str | None, str | None]]:
        state = {str(k): str(v["name"]) for k, v in store.rows(PLANET).items()}
        keys = set(state) | set(expected)
        return {k: (state.get(k), expected.get(k)) for k in keys if state.get(k) != expected.get(k)}

    await eventually(
        lambda: asyncio.to_thread(differences),
        lambda differ: not differ,
        what=f"the SQL table holding the {len(expected)} expected planets (key: (found, wanted))",
        timeout=timeout,
        every=0.25,
        alive=workers,
    )


async def wait_all_ready(workers: list[WorkerProcess]) -> None:
    """Wait until every worker's /partitions says settled (assigned, no rebalance, recovered),
    failing at once if any of them exits."""
    for worker in workers:
        await wait_ready(worker, alive=workers)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stop_signal", "server_db_url"),
    [
        # Three workers upserting one table on each server (on MariaDB: InnoDB's deadlocks);
        # a SIGKILL on MariaDB is also test_exactly_once's.
        (signal.SIGTERM, "mariadb"),
        (signal.SIGKILL, "postgresql"),
    ],
    ids=["sigterm-mariadb", "sigkill-postgresql"],
    indirect=["server_db_url"],
)
async def test_workers_share_partitions_and_answer_for_every_key(
    stop_signal: signal.Signals,
    kafka_bootstrap: str,
    server_db_url: str,
    store: SqlStore,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_bootstrap, topic, partitions=PARTITIONS)
    app_id = f"scale-{uuid.uuid4().hex[:8]}"

    def member(name: str) -> WorkerProcess:
        return scaling_worker(name, app_id, kafka_bootstrap, server_db_url, topic_prefix, tmp_path)

    a, b, c = member("a"), member("b"), member("c")
    d = member("d")
    workers = [a, b, c, d]
    sent: list[Sent] = chaotic_stream(6_000, 300, seed=31, keyed=True)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        try:
            for worker in (a, b, c):
                worker.start()
            await wait_all_ready([a, b, c])
            producing = asyncio.create_task(
                produce_timed(
                    kafka_bootstrap,
                    topic,
                    ((s.key, s.value, s.timestamp) for s in sent),
                    chunk=300,
                    pause=0.3,
                )
            )
            # Leave while events flow: after the first records are applied.
            await wait_stored(store, app_id, 600, c, a, b)
            # c leaves by the signal given, having run until then (not "exited" on its own).
            assert c.stop(stop_signal) == stop_signal.name, c.tail()
            c.assert_exited(-signal.SIGKILL if stop_signal == signal.SIGKILL else 0)
            d.start()
            positions = await producing
            assert sum((await end_offsets(kafka_bootstrap, topic)).values()) == len(sent)
            survivors = [a, b, d]
            expected = expected_state(sent, positions)
            await wait_sql_state(store, expected, survivors)
            await wait_caught_up(
                kafka_bootstrap, app_id, topic, alive=lambda: [w.assert_alive() for w in survivors]
            )
            # Each record counted once, though some were delivered again after the rebalances.
            assert sum(store.outcome_counts(app_id).values()) == len(sent)
            await wait_all_ready(survivors)

            # The changelog, which a new owner recovers from, holds the committed state.
            changelog = await read_latest(kafka_bootstrap, f"{app_id}-planet-changelog")
            cached = {
                key.decode(): json.loads(value)["name"]
                for key, value in changelog.items()
                if value is not None
            }
            assert cached == expected

            # Every survivor answers for every key, present or deleted.
            every_key = sorted({s.entity for s in sent})
            assert len(every_key) > len(expected)  # some entities end deleted
            for worker in survivors:
                for key in every_key:
                    status, body = await get_settled(
                        http, f"{base_url(worker)}/entities/planet/{key}", alive=survivors
                    )
                    if key in expected:
                        assert (status, body) == (200, {"uuid": key, "name": expected[key]}), (
                            base_url(worker)
                        )
                    else:
                        assert status == 404, (base_url(worker), key, body)
            # Some reads were answered locally and some forwarded, on every survivor.
            for worker in survivors:
                async with http.get(f"{base_url(worker)}/metrics") as response:
                    text = await response.text()
                assert 'result="local"' in text and 'result="forwarded"' in text, base_url(worker)
                # The recovery watchdog never had to step in.
                assert "mirror_recovery_stalls_total 0.0" in text, base_url(worker)
            # Every survivor ran from its one start to the end, and stops when asked.
            for worker in survivors:
                worker.assert_alive()
            for worker in survivors:
                assert worker.stop() == "SIGTERM", worker.tail()
        finally:
            for worker in workers:
                worker.stop()


@pytest.mark.slow
@pytest.mark.parametrize("server_db_url", ["postgresql"], indirect=True)  # the path, not the store
async def test_workers_share_a_forwarded_topic_through_a_rebalance(
    kafka_bootstrap: str, server_db_url: str, store: SqlStore, topic_prefix: str, tmp_path: Path
) -> None:
    # Both the source topic (forwarded) and the repartition topic (applied) move between
    # workers: one is killed mid-stream and another joins.
    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_bootstrap, topic, partitions=4)
    app_id = f"scalefwd-{uuid.uuid4().hex[:8]}"
    repartition = f"{app_id}-{topic}-repartition"

    def member(name: str) -> WorkerProcess:
        return scaling_worker(
            name,
            app_id,
            kafka_bootstrap,
            server_db_url,
            topic_prefix,
            tmp_path,
            REPARTITION="planet",
        )

    a, b, c = member("a"), member("b"), member("c")
    workers = [a, b, c]
    sent: list[Sent] = chaotic_stream(6_000, 300, seed=41, foreign_keys=True)
    try:
        a.start()
        b.start()
        await wait_all_ready([a, b])
        producing = asyncio.create_task(
            produce_timed(
                kafka_bootstrap,
                topic,
                ((s.key, s.value, s.timestamp) for s in sent),
                chunk=300,
                pause=0.3,
            )
        )
        await wait_stored(store, app_id, 600, b, a)
        b.kill()  # fails unless b ran until this SIGKILL ended it
        c.start()
        positions = await producing
        survivors = [a, c]
        await wait_sql_state(store, expected_state(sent, positions), survivors)

        def alive() -> None:
            for worker in survivors:
                worker.assert_alive()

        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=alive)
        await wait_caught_up(kafka_bootstrap, app_id, repartition, alive=alive)
        forwarded = sum((await end_offsets(kafka_bootstrap, repartition)).values())
        assert forwarded >= len(sent)  # every record, some twice after the kill
        counts = store.outcome_counts(app_id)
        assert sum(n for (t, _), n in counts.items() if t == repartition) == forwarded
        assert counts.get((repartition, "rejected"), 0) == 0
        # Every survivor ran from its one start to the end, and stops when asked.
        for worker in survivors:
            worker.assert_alive()
        for worker in survivors:
            assert worker.stop() == "SIGTERM", worker.tail()
    finally:
        for worker in workers:
            worker.stop()
