"""Dead letters can be listed and, after a fix, redriven to their source topic and applied."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

from models.planet import Planet
from models.registry import build_spec
from models.store import SqlStore
from tests.integration.test_mirror import read_planets
from tests.support import (
    create_topic,
    make_worker,
    produce,
    run_cli,
    wait_caught_up,
)

PLANET = build_spec(Planet)


async def test_redrive_after_a_fix_applies_the_dead_letters(
    kafka_bootstrap: str, pg_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    # The table exists with a constraint the model does not know: the database refuses
    # planets named "forbidden" (store_refused) until the constraint is dropped.
    SqlStore.from_url(pg_url).create_tables([PLANET])
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "ALTER TABLE servicea_planet"
                " ADD CONSTRAINT no_forbidden CHECK (name <> 'forbidden')"
            )
        )
    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_bootstrap, topic, partitions=4)
    good = {f"good-{i}": f"name-{i}" for i in range(200)}
    forbidden = [f"forbidden-{i}" for i in range(50)]
    items = [
        (k.encode(), json.dumps({"planetUuid": k, "planetName": n}).encode())
        for k, n in good.items()
    ]
    items += [
        (k.encode(), json.dumps({"planetUuid": k, "planetName": "forbidden"}).encode())
        for k in forbidden
    ]
    items += [(b"x", b"not json at all")] * 5
    await produce(kafka_bootstrap, topic, items)

    worker, app_id = make_worker(kafka_bootstrap, pg_url, topic_prefix, tmp_path, "redrive")
    env = dict(worker.env)
    worker.start()
    try:
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
        assert read_planets(pg_url) == good

        listed = run_cli(env, "dlq", "list", "--reason", "store_refused", "--limit", "3")
        assert listed.returncode == 0, listed.stderr
        assert "50 dead letters" in listed.stdout and "store_refused" in listed.stdout

        dry = run_cli(env, "dlq", "redrive", "--dry-run")
        assert "would redrive 55 dead letters" in dry.stdout
        assert "bad_json: 5" in dry.stdout and "store_refused: 50" in dry.stdout

        # Ten of the refused planets change meanwhile: their dead letters are older.
        renamed = {k: f"renamed-{k}" for k in forbidden[:10]}
        await produce(
            kafka_bootstrap,
            topic,
            (
                (k.encode(), json.dumps({"planetUuid": k, "planetName": n}).encode())
                for k, n in renamed.items()
            ),
        )
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
        with engine.begin() as conn:  # the fix
            conn.execute(text("ALTER TABLE servicea_planet DROP CONSTRAINT no_forbidden"))
        sent = run_cli(env, "dlq", "redrive", "--reason", "store_refused")
        assert sent.returncode == 0, sent.stderr
        assert "redrove 50 dead letters" in sent.stdout
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
        # A redriven event keeps its first version: stale for the ten renamed since.
        assert read_planets(pg_url) == {**good, **{k: "forbidden" for k in forbidden}, **renamed}
    finally:
        worker.stop()
        engine.dispose()


def test_dlq_commands_fail_with_one_clear_line(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = {
        "KAFKA_BROKER": f"kafka://{kafka_bootstrap.split(',')[0]}",
        "TOPIC_PREFIX": f"none-{uuid.uuid4().hex[:6]}.",
    }
    unknown = run_cli(env, "dlq", "list", "moon")
    assert unknown.returncode == 1
    assert unknown.stderr.strip().splitlines() == [
        "error: unknown kind 'moon'; declared kinds: planet"
    ]
    missing = run_cli(env, "dlq", "list")
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    down = run_cli({"KAFKA_BROKER": "kafka://127.0.0.1:1"}, "dlq", "list")
    assert down.returncode == 1
    assert "cannot reach Kafka" in down.stderr and "Traceback" not in down.stderr
