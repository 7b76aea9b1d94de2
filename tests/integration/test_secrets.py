"""No command, log line or page shows the database password."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tests.support import (
    error_lines,
    make_worker,
    run_cli,
    run_worker_to_exit,
    wait_caught_up,
    wait_ready,
)


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


async def test_secrets_from_files_reach_the_worker_and_the_commands(
    kafka_bootstrap: str, secret_pg_url: tuple[str, str], topic_prefix: str, tmp_path: Path
) -> None:
    """DATABASE_URL_FILE and API_TOKEN_FILE (a mounted secret, newline and all) stand in for
    the variables, in the worker and the commands alike; set both ways, or unreadable, they
    stop the worker and the commands with one line naming the variable."""
    url, password = secret_pg_url
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "database-url").write_text(url + "\n")
    token = f"t0ken-{uuid.uuid4().hex[:8]}"
    (secrets / "api-token").write_text(token + "\n")
    files = {
        "DATABASE_URL_FILE": str(secrets / "database-url"),
        "API_TOKEN_FILE": str(secrets / "api-token"),
    }
    # DATABASE_URL empty: unset, though the test run's environment sets it.
    worker, app_id = make_worker(kafka_bootstrap, "", topic_prefix, tmp_path, "files", **files)
    env = dict(worker.env)
    assert env["DATABASE_URL"] == "" and "API_TOKEN" not in env

    sent = run_cli(env, "sample-events")
    assert sent.returncode == 0, sent.stderr
    worker.start()
    try:
        await wait_ready(worker, token)
        await wait_caught_up(
            kafka_bootstrap, app_id, f"{topic_prefix}planet-changed", alive=worker.assert_alive
        )
        base = f"http://127.0.0.1:{env['WEB_PORT']}/entities/planet"
        async with aiohttp.ClientSession() as http:
            async with http.get(base) as anonymous:
                assert anonymous.status == 401
            bearer = {"Authorization": f"Bearer {token}"}
            async with http.get(base, headers=bearer) as allowed:
                assert allowed.status == 200, await allowed.text()
    finally:
        worker.stop()
    shown = run_cli(env, "show", "planet")
    assert shown.returncode == 0, shown.stderr
    masked = make_url(url).render_as_string(hide_password=True)
    assert f"servicea_planet in {masked}: 8 rows" in shown.stdout  # the file's database
    assert password not in shown.stdout + shown.stderr

    both = {**env, "API_TOKEN": "also-set"}
    unreadable = {**env, "DATABASE_URL_FILE": str(secrets / "missing")}
    for broken, line in (
        (both, "error: API_TOKEN and API_TOKEN_FILE are both set; set one of them"),
        (
            unreadable,
            f"error: DATABASE_URL_FILE '{secrets / 'missing'}' cannot be read: "
            "No such file or directory",
        ),
    ):
        done = run_worker_to_exit(broken, tmp_path)
        assert done.returncode != 0
        assert error_lines(done.stdout + done.stderr)[0].startswith(line), done.stderr[-2000:]
        failed = run_cli(broken, "status")
        assert failed.returncode == 1
        assert failed.stderr.splitlines()[0].startswith(line), failed.stderr
