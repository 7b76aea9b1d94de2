"""Staleness and end-to-end delay through a real worker, broker and PostgreSQL.

The test holds the worker's writes with a table lock (reads still answer), produces records
whose timestamps are two minutes old, and watches the partitions fall behind and catch up.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.integration.test_mirror import read_planets
from tests.support import (
    create_topic,
    make_worker,
    metric_value,
    produce_timed,
    run_cli,
    wait_caught_up,
    wait_metrics,
    wait_ready,
)

AGE = 120.0


def planets(count: int, stamp_ms: int) -> list[tuple[bytes, bytes, int]]:
    keys = [str(uuid.uuid4()) for _ in range(count)]
    return [
        (k.encode(), f'{{"planetUuid": "{k}", "planetName": "p{i}"}}'.encode(), stamp_ms)
        for i, k in enumerate(keys)
    ]


async def test_staleness_counts_while_behind_and_is_zero_once_caught_up(
    kafka_bootstrap: str, pg_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_bootstrap, topic, partitions=4)
    worker, app_id = make_worker(kafka_bootstrap, pg_url, topic_prefix, tmp_path, "stale")
    worker.start()
    engine = create_engine(pg_url)
    lock = None
    try:
        await wait_ready(worker)
        warm_items = planets(40, int(time.time() * 1000))
        warm = await produce_timed(kafka_bootstrap, topic, warm_items)
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)

        def sample(name: str, p: int) -> str:
            return f'{name}{{entity="planet",partition="{p}",topic="{topic}"}}'

        def lag(p: int) -> str:
            return f'mirror_consumer_lag_records{{partition="{p}",topic="{topic}"}}'

        def caught_up(body: str) -> bool:
            return all(
                metric_value(body, lag(p)) == 0.0
                and metric_value(body, sample("mirror_staleness_seconds", p)) == 0.0
                for p in range(4)
            )

        await wait_metrics(worker, "caught up after the warm-up", caught_up)

        # Hold every write to the table; reads (status counts rows) still answer.
        lock = engine.connect()
        lock.execute(text("LOCK TABLE servicea_planet IN SHARE MODE"))
        old = int((time.time() - AGE) * 1000)
        held_items = planets(30, old)
        sent = await produce_timed(kafka_bootstrap, topic, held_items)
        behind = sorted({p for _, p, _ in sent})

        def stale(body: str) -> bool:
            return all(
                (metric_value(body, sample("mirror_staleness_seconds", p)) or 0) >= AGE
                and (metric_value(body, lag(p)) or 0) > 0
                for p in behind
            )

        body = await wait_metrics(worker, "stale while the writes are held", stale)
        for p in set(range(4)) - set(behind):  # nothing new there: caught up, both agree
            assert metric_value(body, lag(p)) == 0.0
            assert metric_value(body, sample("mirror_staleness_seconds", p)) == 0.0

        url = f"http://127.0.0.1:{worker.env['WEB_PORT']}"
        status = await asyncio.to_thread(run_cli, worker.env, "status", "--metrics", url)
        assert status.returncode == 3, status.stderr  # behind while the writes are held
        rows = {
            int(line.split()[0]): line.split()
            for line in status.stdout.splitlines()
            if line.strip()[:1].isdigit()
        }
        assert sorted(rows) == [0, 1, 2, 3]
        for p, columns in rows.items():
            if p in behind:
                assert int(columns[-2]) > 0 and float(columns[-1]) >= AGE, status.stdout
            else:
                assert columns[-2:] == ["0", "0"], status.stdout
        assert "end-to-end delay: " in status.stdout and " batches on 1 worker(s)" in status.stdout

        lock.commit()  # the writes go on
        lock.close()
        lock = None

        def all_counted(body: str) -> bool:
            # Lag follows the SQL commit; a batch is counted once its cache write is done too.
            counted = metric_value(body, 'mirror_batch_records_sum{entity="planet"}')
            return caught_up(body) and counted == len(warm) + len(sent)

        body = await wait_metrics(worker, "caught up once the writes go on", all_counted)

        # What the counted batches wrote: every planet produced, with its name, and no other.
        assert read_planets(pg_url) == {
            key.decode(): json.loads(value)["planetName"]
            for key, value, _ in [*warm_items, *held_items]
        }
        batches = metric_value(body, 'mirror_batch_records_count{entity="planet"}')
        delays = metric_value(body, 'mirror_end_to_end_delay_seconds_count{entity="planet"}')
        assert batches is not None and batches >= 2 and delays == batches  # one per batch
        late = metric_value(
            body, 'mirror_end_to_end_delay_seconds_bucket{entity="planet",le="60.0"}'
        )
        assert late is not None and late < delays  # the held batches waited over two minutes
        total = metric_value(body, 'mirror_end_to_end_delay_seconds_sum{entity="planet"}')
        assert total is not None and total >= AGE

        status = await asyncio.to_thread(run_cli, worker.env, "status")
        assert status.returncode == 0, status.stderr
        tails = [
            line.split()[-2:] for line in status.stdout.splitlines() if line.strip()[:1].isdigit()
        ]
        assert tails == [["0", "0"]] * 4, status.stdout
        assert "end-to-end delay: not known here" in status.stdout
    finally:
        if lock is not None:
            lock.rollback()
            lock.close()
        engine.dispose()
        worker.stop()


async def test_a_repartitioned_entity_is_as_stale_as_its_records_first_production(
    kafka_bootstrap: str, pg_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    # The forwarder copies records at once (new timestamps); staleness and the delay count
    # from where each was first produced, carried in its mirror-origin header.
    from aiokafka.partitioner import DefaultPartitioner

    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_bootstrap, topic, partitions=2)
    worker, app_id = make_worker(
        kafka_bootstrap,
        pg_url,
        topic_prefix,
        tmp_path,
        "stalefwd",
        REPARTITION="planet",
        TOPIC_PARTITIONS="4",
    )
    repartition = f"{app_id}-{topic}-repartition"
    worker.start()
    engine = create_engine(pg_url)
    lock = None
    try:
        await wait_ready(worker)
        warm = await produce_timed(kafka_bootstrap, topic, planets(20, int(time.time() * 1000)))
        await wait_caught_up(kafka_bootstrap, app_id, repartition, alive=worker.assert_alive)

        def sample(name: str, on: str, p: int) -> str:
            return f'{name}{{entity="planet",partition="{p}",topic="{on}"}}'

        lock = engine.connect()
        lock.execute(text("LOCK TABLE servicea_planet IN SHARE MODE"))
        old = int((time.time() - AGE) * 1000)
        records = [(b"not-the-entity-key", v, ts) for _, v, ts in planets(30, old)]
        await produce_timed(kafka_bootstrap, topic, records)
        keys = [v.split(b'"')[3] for _, v, _ in records]  # the entity keys, from the values
        behind = sorted({DefaultPartitioner()(k, [0, 1, 2, 3], [0, 1, 2, 3]) for k in keys})

        def stale(body: str) -> bool:
            forwarded = all(
                metric_value(
                    body, f'mirror_consumer_lag_records{{partition="{p}",topic="{topic}"}}'
                )
                == 0.0
                for p in range(2)
            )
            return forwarded and all(
                (metric_value(body, sample("mirror_staleness_seconds", repartition, p)) or 0) >= AGE
                for p in behind
            )

        await wait_metrics(worker, "the repartition topic stale, the source forwarded", stale)
        lock.commit()
        lock.close()
        lock = None

        def caught_up(body: str) -> bool:
            counted = metric_value(body, 'mirror_batch_records_sum{entity="planet"}')
            return counted == len(warm) + len(records) and all(
                metric_value(body, sample("mirror_staleness_seconds", repartition, p)) == 0.0
                for p in range(4)
            )

        body = await wait_metrics(worker, "caught up once the writes go on", caught_up)
        total = metric_value(body, 'mirror_end_to_end_delay_seconds_sum{entity="planet"}')
        assert total is not None and total >= AGE  # the forwarding time would be seconds
    finally:
        if lock is not None:
            lock.rollback()
            lock.close()
        engine.dispose()
        worker.stop()
