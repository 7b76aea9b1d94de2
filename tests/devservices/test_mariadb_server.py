"""The MariaDB test server: started, stopped and killed for real; its databases; its settings.

The lifecycle tests run a server of their own on another port, so the session's server (the
``mariadb_server_url`` fixture) is never stopped under other tests.
"""

from __future__ import annotations

import os
import pwd
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from devservices import dbserver, mariadb
from devservices.mariadb import DevServiceError

pytestmark = pytest.mark.integration

PORT = mariadb.DEFAULT_PORT + 100


def engine(url: str) -> Engine:
    return create_engine(url, poolclass=NullPool)


def listening_addresses(port: int) -> set[str]:
    """Return the local addresses with a TCP socket listening on ``port``, IPv4 and IPv6."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, _, port_hex = local.partition(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            if len(address) == 8:  # IPv4, little-endian
                found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]))
            else:
                words = b"".join(bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, 32, 8))
                found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


@pytest.fixture(scope="module")
def own_server() -> Iterator[str]:
    """A server on :data:`PORT` for these tests alone, deleted with its data afterwards."""
    url = mariadb.start(PORT)
    yield url
    mariadb.reset(PORT)


def test_start_status_stop_round_trip(own_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert mariadb.start(PORT) == own_server  # idempotent: already running
    assert mariadb.is_running(PORT)
    assert mariadb.main(["status", "--port", str(PORT)]) == 0
    assert capsys.readouterr().out.startswith(f"running: {own_server} (data ")

    mariadb.stop(PORT)
    assert not mariadb.is_running(PORT)
    assert mariadb.main(["status", "--port", str(PORT)]) == 3
    assert capsys.readouterr().out.startswith("stopped (data ")
    assert not dbserver.port_taken(PORT)
    mariadb.stop(PORT)  # stopping a stopped server is nothing

    assert mariadb.main(["start", "--port", str(PORT)]) == 0
    assert capsys.readouterr().out.strip() == own_server
    with engine(own_server).connect() as conn:
        assert conn.execute(text("SELECT DATABASE()")).scalar_one() == "mirror"


def test_a_killed_server_keeps_what_was_committed_and_starts_again(own_server: str) -> None:
    database = mariadb.create_database(own_server, "outage")
    try:
        with engine(database).begin() as conn:
            conn.execute(text("CREATE TABLE t (k INT PRIMARY KEY)"))
            conn.execute(text("INSERT INTO t VALUES (1), (2)"))
        mariadb.kill(PORT)  # what an outage test does
        assert not mariadb.is_running(PORT)
        mariadb.start(PORT)
        with engine(database).connect() as conn:
            assert conn.execute(text("SELECT COUNT(*) FROM t")).scalar_one() == 2
    finally:
        mariadb.drop_database(own_server, "outage")


def test_runs_as_a_system_user_on_loopback_only(own_server: str) -> None:
    pid = mariadb.server_pid(PORT)
    assert pid is not None
    status = Path(f"/proc/{pid}/status").read_text()
    uids = {int(uid) for uid in status.split("Uid:")[1].splitlines()[0].split()}
    if os.geteuid() == 0:
        assert uids == {pwd.getpwnam("mysql").pw_uid}
    assert 0 not in uids
    assert listening_addresses(PORT) == {"127.0.0.1"}


def test_a_port_held_by_another_process_is_one_line(own_server: str) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        try:
            with pytest.raises(DevServiceError, match=f"port {port} on 127.0.0.1 is in use"):
                mariadb.start(port)
        finally:
            mariadb.layout(port).lock.unlink(missing_ok=True)  # the only file it left


def test_databases_are_created_and_dropped_with_sessions_still_inside(
    mariadb_server_url: str,
) -> None:
    name = f"t_dropped_{uuid.uuid4().hex[:8]}"
    url = mariadb.create_database(mariadb_server_url, name)
    assert url == mariadb_server_url.rsplit("/", 1)[0] + f"/{name}"
    lingering = engine(url).connect()
    try:
        # An open transaction holds the table's metadata lock: DROP would wait on it.
        lingering.execute(text("CREATE TABLE t (k INT PRIMARY KEY)"))
        lingering.commit()
        lingering.execute(text("SELECT * FROM t"))  # begins the transaction it leaves open
        mariadb.drop_database(mariadb_server_url, name)
        with engine(mariadb_server_url).connect() as conn:
            names = conn.execute(text("SHOW DATABASES")).scalars().all()
        assert name not in names
        mariadb.drop_database(mariadb_server_url, name)  # gone: nothing to do
    finally:
        lingering.invalidate()
        lingering.close()


def test_a_fresh_database_has_the_servers_defaults(mariadb_url: str) -> None:
    with engine(mariadb_url).connect() as conn:
        row = conn.execute(
            text(
                "SELECT @@character_set_database, @@collation_database, @@local_infile, "
                "@@max_connections, @@log_bin, @@innodb_lock_wait_timeout"
            )
        ).one()
        assert tuple(row) == ("utf8mb4", "utf8mb4_general_ci", 1, 300, 0, 50)
        # The default collation ignores case: the store must not rely on the server for it.
        assert conn.execute(text("SELECT 'Earth' = 'EARTH'")).scalar_one() == 1
