"""The operator's command line: status, verify, rebuild, dlq list, their JSON documents and
exit codes (streams/cli/reports.py), the installed ``entity-mirror`` script, and the error
paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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

SCRIPT = Path(sys.executable).parent / "entity-mirror"
"""The console script pyproject.toml's [project.scripts] installs (./run installs it)."""


def run_script(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed ``entity-mirror ARGS`` with ``env`` added, from outside the checkout."""
    return subprocess.run(
        [str(SCRIPT), *args],
        cwd="/",
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


def json_of(done: subprocess.CompletedProcess[str]) -> Any:
    """Return the one JSON document a ``--json`` command printed (nothing else on stdout)."""
    return json.loads(done.stdout)


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

    # Scripts: the installed script, one JSON document, the exit code of "caught up".
    status = run_script(env, "status", "--json")
    assert status.returncode == 0, status.stderr
    document = json_of(status)
    assert (document["group"], document["caught_up"], document["lag"]) == (app_id, True, 0)
    (entity,) = document["entities"]
    assert (entity["kind"], entity["table"], entity["rows"]) == (
        "planet",
        "servicea_planet",
        len(expected),
    )
    assert entity["soft_deleted"] is None and entity["end_to_end_delay"] is None
    (source,) = entity["topics"]
    assert (source["topic"], source["exists"], source["forwarded_to"]) == (topic, True, None)
    assert source["recreated"] is None
    partitions = source["partitions"]
    assert [p["partition"] for p in partitions] == [0, 1, 2, 3]
    assert sum(p["end"] for p in partitions) == len(events)
    for p in partitions:
        assert p["applied"] == p["end"] == p["committed"], p
        assert (p["lag"], p["above_end"], p["stale_seconds"]) == (0, False, 0), p

    verified = json_of(run_cli(env, "verify", "planet", "--json"))
    assert (verified["matches"], verified["rows"], verified["difference_count"]) == (
        True,
        len(expected),
        0,
    )
    assert verified["cache"] == {
        "topic": f"{app_id}-planet-changelog",
        "exists": True,
        "matches": True,
        "entries": len(expected),
        "difference_count": 0,
        "differences": [],
    }

    poison = [e for e in events if e.poison]
    listed = run_cli(env, "dlq", "list", "planet", "--json", "--limit", "5")
    assert listed.returncode == 0, listed.stderr
    letters = json_of(listed)
    assert (letters["topic"], letters["count"]) == (f"{topic}.dlq", len(poison))
    assert len(letters["dead_letters"]) == 5
    for letter in letters["dead_letters"]:
        assert letter["reason"] in ("bad_json", "not_an_object", "unknown_change_type"), letter
        assert letter["source_topic"] == topic and letter["source_partition"] in range(4)
        assert isinstance(letter["source_offset"], int) and letter["detail"], letter

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
    assert broken.returncode == 4  # differs
    assert f"row '{victim}' differs: name: table 'tampered'" in broken.stdout
    assert f"missing row '{gone}'" in broken.stdout
    assert "extra row 'ghost'" in broken.stdout
    assert "differs from" in broken.stdout and "in 3 rows" in broken.stdout
    found = run_script(env, "verify", "planet", "--json")
    assert found.returncode == 4, found.stderr
    differs = json_of(found)
    assert (differs["matches"], differs["difference_count"], differs["cache"]) == (False, 3, None)
    assert {d["key"]: d["problem"] for d in differs["differences"]} == {
        victim: "differs",
        gone: "missing",
        "ghost": "extra",
    }

    rebuilt = run_cli(env, "rebuild", "planet")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"rebuilt servicea_planet from {len(events)} records: {len(expected)} rows" in (
        rebuilt.stdout
    )
    assert read_planets(server_db_url) == expected
    assert run_cli(env, "verify", "planet").returncode == 0

    # Seven records no worker applied: behind (exit 3), unless --max-lag allows that many.
    more = planet_stream(7, 3, seed=5)
    await produce(kafka_bootstrap, topic, ((e.key.encode(), e.value) for e in more))
    behind = run_script(env, "status", "--json")
    assert behind.returncode == 3, behind.stdout + behind.stderr
    document = json_of(behind)
    assert (document["caught_up"], document["lag"]) == (False, 7)
    lags = [p["lag"] for p in document["entities"][0]["topics"][0]["partitions"]]
    assert sum(lags) == 7 and max(lags) > 0
    assert run_cli(env, "status").returncode == 3  # the text too
    allowed = run_cli(env, "status", "--json", "--max-lag", str(max(lags)))
    assert allowed.returncode == 0, allowed.stderr
    assert json_of(allowed)["caught_up"] is True


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
    cases += [  # the same with --json: no document, the same line and code
        (base, ["verify", "moon", "--json"], "error: unknown kind 'moon'"),
        ({**base, "KAFKA_BROKER": "kafka://127.0.0.1:1"}, ["status", "--json"], "Kafka"),
        ({**base, "KAFKA_BROKER": "kafka://127.0.0.1:1"}, ["dlq", "list", "--json"], "Kafka"),
        ({**base, "API_TOKEN": "t", "API_TOKEN_FILE": "/x"}, ["status", "--json"], "both set"),
    ]
    for env, args, message in cases:
        done = run_cli(env, *args)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert done.stdout == "", (args, done.stdout)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, done.stderr)
        assert message in lines[0], (args, lines[0])
    for args in (["status", "--max-lag", "-1"], ["verify", "--jsn"], ["frobnicate"]):
        usage = run_script(base, *args)
        assert usage.returncode == 2, (args, usage.stdout, usage.stderr)
        assert usage.stderr.startswith("usage: entity-mirror "), usage.stderr
