"""Transactional producers (a service's own Kafka transactions; Kafka Connect's exactly-once
source tasks under Debezium): what a transaction rolled back wrote is never mirrored, and
``verify`` reads the topic as the worker does."""

from __future__ import annotations

import json
from pathlib import Path

from aiokafka import AIOKafkaProducer

from models.planet import Planet
from models.registry import build_spec
from models.store import SqlStore
from tests.integration.test_mirror import read_planets
from tests.support import (
    create_topic,
    make_worker,
    metric_value,
    read_metrics,
    run_cli,
    wait_applied,
    wait_caught_up,
)
from tests.waiting import eventually

#: (partition, planet uuid, planet name) of one planet event.
Event = tuple[int, str, str]


async def send_transaction(
    producer: AIOKafkaProducer, topic: str, planets: list[Event], *, commit: bool
) -> list[tuple[int, int]]:
    """Send ``planets`` in one transaction, committed or aborted; return their (partition,
    offset)."""
    await producer.begin_transaction()
    placed = []
    for partition, key, name in planets:
        value = json.dumps({"planetUuid": key, "planetName": name}).encode()
        meta = await producer.send_and_wait(topic, value, key=key.encode(), partition=partition)
        placed.append((meta.partition, meta.offset))
    if commit:
        await producer.commit_transaction()
    else:
        await producer.abort_transaction()
    return placed


async def test_a_rolled_back_transaction_is_never_mirrored_and_verify_agrees(
    kafka_bootstrap: str, pg_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    # Before: the worker read uncommitted records (Faust's and aiokafka's default) and mirrored
    # the rolled-back planets and names; reading committed ones, aiokafka's check of each
    # abort marker raised TypeError out of the fetch (streams/kafka/aiokafka_fixes.py, _Batch).
    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_bootstrap, topic, partitions=2)
    worker, app_id = make_worker(kafka_bootstrap, pg_url, topic_prefix, tmp_path, "tx")
    committed = [(p, f"kept-{p}-{i}", "committed") for p in (0, 1) for i in range(20)]
    rolled_back = [(p, f"rolled-back-{p}-{i}", "never") for p in (0, 1) for i in range(10)]
    rolled_back += [
        (p, f"kept-{p}-{i}", "renamed, then rolled back") for p in (0, 1) for i in (0, 1)
    ]
    later = [(p, f"kept-{p}-{i}", "renamed") for p in (0, 1) for i in (2, 3)]
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, transactional_id=f"{app_id}-source"
    )
    store = SqlStore.from_url(pg_url)
    store.create_tables([build_spec(Planet)])  # the worker does the same; the test reads first
    await producer.start()
    try:
        await send_transaction(producer, topic, committed, commit=True)
        await send_transaction(producer, topic, rolled_back, commit=False)
        worker.start()
        # One more of each while the worker reads: fetched live, not only from the log.
        await send_transaction(producer, topic, rolled_back[:4], commit=False)
        placed = await send_transaction(producer, topic, later, commit=True)
    finally:
        await producer.stop()
    try:
        # Each partition's last committed record applied: everything before it was read.
        ends = {p: max(o for q, o in placed if q == p) + 1 for p in (0, 1)}
        await wait_applied(store, app_id, topic, ends, worker)
        expected = {key: name for _, key, name in committed + later}
        assert read_planets(pg_url) == expected
        verify = run_cli(worker.env, "verify", "planet")
        assert verify.returncode == 0, verify.stdout + verify.stderr
        # Each log ends with a commit marker, which no record follows: the partitions are
        # caught up all the same (before: lag 1 and a staleness growing until the alert).
        samples = [
            *(f'mirror_consumer_lag_records{{partition="{p}",topic="{topic}"}}' for p in (0, 1)),
            *(
                f'mirror_staleness_seconds{{entity="planet",partition="{p}",topic="{topic}"}}'
                for p in (0, 1)
            ),
        ]

        async def readings() -> list[float | None]:
            text = await read_metrics(worker)
            return [metric_value(text, sample) for sample in samples]

        await eventually(
            readings,
            lambda values: values == [0.0] * len(samples),
            what="lag and staleness 0 on both partitions",
            alive=[worker],
        )
        # The group's committed offsets too (what lag monitors read): the ends of the logs.
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
        # status reads the store and the broker: the same, from the outside.
        status = run_cli(worker.env, "status", "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        (planets,) = json.loads(status.stdout)["entities"]
        (read,) = [t for t in planets["topics"] if t["topic"] == topic]
        assert [(p["lag"], p["stepped_over"]) for p in read["partitions"]] == [(0, 1), (0, 1)]
        worker.assert_alive()
    finally:
        assert worker.stop() == "SIGTERM"
        store.dispose()
