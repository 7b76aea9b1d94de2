"""Broker faults: a restarted single broker, and a lost broker of a 3-node cluster (RF 3).

The worker carries on or resumes by itself, and the table ends exact.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devservices import kafka as dev_kafka
from models.planet import Planet
from models.registry import build_spec
from models.store import SqlStore
from tests.support import (
    chaotic_stream,
    create_topic,
    end_offsets,
    expected_state,
    make_worker,
    produce_timed,
    wait_applied,
    wait_stored,
)

# serial: one test restarts the broker every test shares, the other stops a node of the
# 3-broker cluster.
pytestmark = pytest.mark.serial

PLANET = build_spec(Planet)


def table_state(store: SqlStore) -> dict[str, str]:
    return {str(k): str(v["name"]) for k, v in store.rows(PLANET).items()}


@pytest.mark.slow
async def test_the_worker_resumes_after_the_broker_restarts(
    kafka_bootstrap: str, pg_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    if not dev_kafka.is_running(1) or kafka_bootstrap != dev_kafka.bootstrap_servers(1):
        pytest.fail("the broker restart test restarts the local broker; unset KAFKA_BROKER")
    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_bootstrap, topic, partitions=4)
    sent = chaotic_stream(20_000, 300, seed=8)
    before, after = sent[:10_000], sent[10_000:]
    positions = await produce_timed(
        kafka_bootstrap, topic, ((s.key, s.value, s.timestamp) for s in before)
    )
    worker, app_id = make_worker(
        kafka_bootstrap, pg_url, topic_prefix, tmp_path, "faults", BATCH_SIZE="200"
    )
    store = SqlStore.from_url(pg_url)
    store.create_tables([PLANET])
    worker.start()
    try:
        await wait_stored(store, app_id, 1, worker)
        dev_kafka.stop_node(1, 1)
        assert not dev_kafka.is_running(1)
        dev_kafka.start_node(1, 1)
        # Half the stream is produced only after the restart: the worker must read on, from
        # the broker it lost (the first half may be all applied by the time the broker stops).
        positions += await produce_timed(
            kafka_bootstrap, topic, ((s.key, s.value, s.timestamp) for s in after)
        )
        ends = await end_offsets(kafka_bootstrap, topic)
        assert sum(ends.values()) == len(sent)
        await wait_applied(store, app_id, topic, ends, worker)
        assert table_state(store) == expected_state(sent, positions)
        assert sum(store.outcome_counts(app_id).values()) == len(sent)
        # The process started before the restart rode it out: it still runs, stops when asked.
        worker.assert_alive()
        assert worker.stop() == "SIGTERM"
    finally:
        worker.stop()
        store.dispose()
        dev_kafka.start(1)  # whatever happened, leave the broker up for the next tests


@pytest.mark.slow
async def test_losing_one_broker_of_three_loses_nothing(
    kafka_cluster_bootstrap: str, pg_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_cluster_bootstrap, topic, partitions=4, replicas=3)
    sent = chaotic_stream(10_000, 300, seed=9)
    worker, app_id = make_worker(
        kafka_cluster_bootstrap,
        pg_url,
        topic_prefix,
        tmp_path,
        "faults3",
        BATCH_SIZE="200",
        TOPIC_REPLICAS="3",
    )
    store = SqlStore.from_url(pg_url)
    store.create_tables([PLANET])
    positions = await produce_timed(
        kafka_cluster_bootstrap, topic, ((s.key, s.value, s.timestamp) for s in sent[:5_000])
    )
    worker.start()
    try:
        await wait_stored(store, app_id, 1, worker)
        # A broker goes away while the worker consumes; the second half of the stream is
        # produced and consumed without it (RF 3, min ISR 2).
        dev_kafka.stop_node(3, 2)
        positions += await produce_timed(
            ",".join(h for h in kafka_cluster_bootstrap.split(",") if not h.endswith(":19094")),
            topic,
            ((s.key, s.value, s.timestamp) for s in sent[5_000:]),
        )
        ends = await end_offsets(kafka_cluster_bootstrap.split(",")[0], topic)
        assert sum(ends.values()) == len(sent)
        await wait_applied(store, app_id, topic, ends, worker)
        assert table_state(store) == expected_state(sent, positions)
        # The process started before the loss rode it out: it still runs, stops when asked.
        worker.assert_alive()
        assert worker.stop() == "SIGTERM"
    finally:
        worker.stop()
        store.dispose()
        dev_kafka.start_node(3, 2)
