"""The operator's command line: status, verify, rebuild, and their error paths."""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.integration.test_mirror import read_planets
from tests.support import (
    assert_status_and_verify,
    create_topic,
    expected_planets,
    make_worker,
    planet_stream,
    produce,
    run_cli,
    wait_caught_up,
)


async def test_status_verify_and_rebuild(
    kafka_bootstrap: str, server_db_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_bootstrap, topic, partitions=4)
    events = planet_stream(2_000, 60, seed=21, poison_every=40)
    await produce(kafka_bootstrap, topic, ((e.key.encode(), e.value) for e in events))
    worker, app_id = make_worker(kafka_bootstrap, server_db_url, topic_prefix, tmp_path, "cli")
    env = dict(worker.env)
    worker.start()
    try:
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
    finally:
        worker.stop()
    expected = expected_planets(events)
    assert read_planets(server_db_url) == expected

    assert_status_and_verify(env, topic, app_id, len(expected))

    victim, gone = sorted(expected)[:2]
    engine = create_engine(server_db_url)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE servicea_planet SET name = 'tampered' WHERE uuid = :u"), {"u": victim}
        )
        conn.execute(text("DELETE FROM servicea_planet WHERE uuid = :u"), {"u": gone})
        conn.execute(text("INSERT INTO servicea_planet VALUES ('ghost', 'boo', 0, 0, 0)"))
    engine.dispose()
    broken = run_cli(env, "verify", "planet")
    assert broken.returncode == 1
    assert f"row '{victim}' differs: name: table 'tampered'" in broken.stdout
    assert f"missing row '{gone}'" in broken.stdout
    assert "extra row 'ghost'" in broken.stdout
    assert "differs from" in broken.stdout and "in 3 rows" in broken.stdout

    rebuilt = run_cli(env, "rebuild", "planet")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"rebuilt servicea_planet from {len(events)} records: {len(expected)} rows" in (
        rebuilt.stdout
    )
    assert read_planets(server_db_url) == expected
    assert run_cli(env, "verify", "planet").returncode == 0


def test_cli_errors_are_one_clear_line(kafka_bootstrap: str, tmp_path: Path) -> None:
    base = {
        "KAFKA_BROKER": f"kafka://{kafka_bootstrap.split(',')[0]}",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}",
        "TOPIC_PREFIX": f"none-{uuid.uuid4().hex[:6]}.",
    }
    cases = [
        (base, ["verify", "moon"], "error: unknown kind 'moon'; declared kinds: planet"),
        (base, ["rebuild", "moon"], "error: unknown kind 'moon'; declared kinds: planet"),
        (base, ["verify", "planet"], "does not exist"),
        ({**base, "KAFKA_BROKER": "kafka://127.0.0.1:1"}, ["status"], "cannot reach Kafka"),
        ({**base, "DATABASE_URL": "nonsense"}, ["status"], "DATABASE_URL"),
    ]
    for env, args, message in cases:
        done = run_cli(env, *args)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, done.stderr)
        assert message in lines[0], (args, lines[0])
