"""A topic deleted and created again (or a fresh broker behind the same database): its new log
is applied whole, from its start, and outranks every row of the old one."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

from models.store import SqlStore
from tests.integration.test_mirror import read_planets
from tests.support import (
    create_topic,
    end_offsets,
    make_worker,
    metric_value,
    produce_timed,
    recreate_topic,
    run_cli,
    wait_caught_up,
    wait_stored,
)

PARTITIONS = 4

Event = tuple[str, str | None, bytes]
"""A planet's uuid, its name after the event (None: deleted), the record's value."""


def planet_events(keys: range, count: int, seed: int) -> list[Event]:
    """Creates, updates and deletes of the planets ``keys``, keyed by uuid."""
    rng = random.Random(seed)
    out: list[Event] = []
    for i in range(count):
        key = f"planet-{rng.choice(keys)}"
        if rng.random() < 0.1:
            event = {"planetUuid": key, "changeType": "DELETED"}
            out.append((key, None, json.dumps(event).encode()))
        else:
            name = f"{key}-{seed}-{i}"
            event = {"planetUuid": key, "planetName": name, "changeType": "UPDATED"}
            out.append((key, name, json.dumps(event).encode()))
    return out


def last_per_key(events: list[Event], state: dict[str, str] | None = None) -> dict[str, str]:
    """Apply ``events`` one by one, in order (each key's records share a partition)."""
    state = dict(state or {})
    for key, name, _ in events:
        if name is None:
            state.pop(key, None)
        else:
            state[key] = name
    return state


async def test_a_recreated_topic_is_applied_from_its_start_and_outranks_the_old_log(
    kafka_bootstrap: str, pg_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_bootstrap, topic, PARTITIONS)
    old = planet_events(range(100), 400, seed=1)
    await produce_timed(kafka_bootstrap, topic, [(k.encode(), v, None) for k, _, v in old])
    worker, app_id = make_worker(kafka_bootstrap, pg_url, topic_prefix, tmp_path, "recreated")
    store = SqlStore.from_url(pg_url)
    try:
        worker.start()
        try:
            await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
        finally:
            assert worker.stop() == "SIGTERM"
        before = store.stored_offsets(app_id)
        assert sum(before.values()) == 400

        # The topic is deleted and created again; its new log is shorter than the offsets
        # stored, and its records are stamped an hour before the old log's (history published
        # again): they must still win.
        await recreate_topic(kafka_bootstrap, topic, PARTITIONS)
        new = planet_events(range(50, 200), 350, seed=2)
        stamp = int(time.time() * 1000) - 3_600_000
        positions = await produce_timed(
            kafka_bootstrap, topic, [(k.encode(), v, stamp + i) for i, (k, _, v) in enumerate(new)]
        )
        ends = await end_offsets(kafka_bootstrap, topic)
        assert any(ends[p] < o for (t, p), o in before.items() if t == topic), (ends, before)

        # Before any worker runs, status says what it sees instead of a negative lag.
        status = run_cli(worker.env, "status")
        assert status.returncode == 3, status.stderr  # behind: above the end
        assert "-" not in "".join(
            line.split()[4] for line in status.stdout.splitlines() if line[:11].strip().isdigit()
        ), status.stdout
        assert "the topic was created again since its offsets were stored" in status.stdout
        assert "is above the log's end" in status.stdout

        worker.start()
        try:
            await wait_stored(store, app_id, len(new), worker)
            await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
            metrics = await asyncio.to_thread(_metrics, worker.env["WEB_PORT"])
        finally:
            assert worker.stop() == "SIGTERM"

        # Every record of the new log is applied (nothing skipped below the old offsets), and
        # the table is the old state overlaid with the new log's, whatever the timestamps.
        assert store.stored_offsets(app_id) == {(topic, p): n for p, n in ends.items()}
        assert read_planets(pg_url) == last_per_key(new, last_per_key(old))
        counts = store.outcome_counts(app_id)
        assert sum(n for (t, _), n in counts.items() if t == topic) == len(old) + len(new)
        assert counts.get((topic, "rejected"), 0) == 0
        for p in range(PARTITIONS):
            sample = f'mirror_log_restarts_total{{partition="{p}",topic="{topic}"}}'
            assert metric_value(metrics, sample) == 1.0, sample
        log = worker.log_path.read_text()
        assert log.count(f"{topic} was deleted and created again") == 1
        assert len(positions) == len(new)
    finally:
        store.dispose()


def _metrics(port: str) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())
