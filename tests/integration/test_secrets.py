"""No command, log line or page shows the database password."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tests.support import make_worker, run_cli, wait_caught_up, wait_ready


@pytest.fixture
def secret_pg_url(pg_server_url: str) -> Iterator[tuple[str, str]]:
    """A database owned by a role of its own with a known password: (URL, password)."""
    suffix = uuid.uuid4().hex[:8]
    role, database, password = f"sec_{suffix}", f"sec_{suffix}", f"Sup3rSecretDbPw{suffix}"
    admin = create_engine(pg_server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'"))
        conn.execute(text(f"CREATE DATABASE {database} OWNER {role}"))
    url = make_url(pg_server_url).set(username=role, password=password, database=database)
    try:
        yield url.render_as_string(hide_password=False), password
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
            conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        admin.dispose()


async def test_no_command_or_worker_log_shows_the_database_password(
    kafka_bootstrap: str, secret_pg_url: tuple[str, str], topic_prefix: str, tmp_path: Path
) -> None:
    url, password = secret_pg_url
    worker, app_id = make_worker(kafka_bootstrap, url, topic_prefix, tmp_path, "secrets")
    env = dict(worker.env)
    outputs: dict[str, str] = {}

    def command(*args: str) -> None:
        done = run_cli(env, *args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        outputs[" ".join(args)] = done.stdout + done.stderr

    command("sample-events")
    worker.start()
    try:
        await wait_ready(worker)
        await wait_caught_up(
            kafka_bootstrap, app_id, f"{topic_prefix}planet-changed", alive=worker.assert_alive
        )
    finally:
        worker.stop()
    outputs["worker"] = worker.log_path.read_text(errors="replace")
    for args in (["show", "planet"], ["status"], ["verify", "planet"], ["rebuild", "planet"]):
        command(*args)
    command("dlq", "list", "planet")

    leaks = [name for name, output in outputs.items() if password in output]
    assert leaks == []
    masked = make_url(url).render_as_string(hide_password=True)
    assert ":***@" in masked
    assert f"servicea_planet in {masked}: 8 rows" in outputs["show planet"]
