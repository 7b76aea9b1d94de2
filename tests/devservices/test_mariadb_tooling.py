"""The MariaDB dev-server helpers that decide names, places and settings, without a server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devservices import dbserver, mariadb
from devservices.mariadb import DevServiceError

REPO = Path("/src/checkout")


def test_server_url() -> None:
    assert mariadb.server_url() == "mysql+pymysql://mirror:mirror@127.0.0.1:33069/mirror"
    assert mariadb.server_url(33070, "t_x") == "mysql+pymysql://mirror:mirror@127.0.0.1:33070/t_x"


def test_uses_checkout_cache_when_mysql_can_reach_it() -> None:
    root = mariadb.choose_runtime_root(REPO, cache_dir=None, as_root=True, reachable=lambda _: True)
    assert root == REPO / ".cache" / "mariadb"


def test_falls_back_to_var_tmp_apart_from_postgres() -> None:
    root = mariadb.choose_runtime_root(
        REPO, cache_dir=None, as_root=True, reachable=lambda _: False
    )
    assert root.parent == Path("/var/tmp")
    assert root.name.startswith("entity-mirror-mariadb-")
    assert root == dbserver.fallback_runtime_root(REPO, "mariadb")  # stable across runs


def test_cache_dir_override_and_its_error_name_the_mysql_user(tmp_path: Path) -> None:
    root = mariadb.choose_runtime_root(
        REPO, cache_dir=str(tmp_path), as_root=True, reachable=lambda _: True
    )
    assert root == tmp_path / "mariadb"
    with pytest.raises(DevServiceError, match=r"MIRROR_CACHE_DIR=.*'mysql' cannot traverse"):
        mariadb.choose_runtime_root(
            REPO, cache_dir=str(tmp_path), as_root=True, reachable=lambda _: False
        )


def test_layout_is_per_port_with_its_own_files() -> None:
    lay = mariadb.make_layout(Path("/c/mariadb"), 33069)
    assert lay.data == Path("/c/mariadb/33069/data")
    for path in (lay.data, lay.config, lay.socket, lay.pid_file, lay.log):
        assert path.parent == lay.home
    assert lay.lock == Path("/c/mariadb/33069.lock")
    assert mariadb.make_layout(Path("/c/mariadb"), 33070).data != lay.data


def test_too_long_socket_path_moves_to_a_short_one_per_folder() -> None:
    deep = Path("/" + "d" * 100)
    lay = mariadb.make_layout(deep, 33069)
    assert lay.socket.parent == Path("/tmp")
    assert len(str(lay.socket)) <= 107
    assert lay.socket == mariadb.make_layout(deep, 33069).socket  # stable across runs
    assert lay.socket != mariadb.make_layout(deep, 33070).socket  # one per server
    assert lay.data.parent == lay.home  # only the socket moves


def test_config_holds_the_settings_the_project_relies_on() -> None:
    lay = mariadb.make_layout(Path("/c/mariadb"), 33069)
    lines = mariadb.server_config(lay, 33069).splitlines()
    settings = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition("=") for line in lines)
        if not key.startswith(("#", "["))
    )
    assert settings == {
        "datadir": str(lay.data),
        "port": "33069",
        "bind-address": "127.0.0.1",
        "socket": str(lay.socket),
        "pid-file": str(lay.pid_file),
        "log-error": str(lay.log),
        "skip-name-resolve": "",
        "skip-log-bin": "",
        "character-set-server": "utf8mb4",
        "local-infile": "ON",
        "max-connections": "300",
        "innodb-lock-wait-timeout": "50",
        # A killed server keeps every commit (the outage tests kill it); an OS crash may not.
        "innodb-flush-log-at-trx-commit": "2",
        "innodb-doublewrite": "0",
    }
    assert "[mariadbd]" in lines
    # MariaDB's case-insensitive default collation stays: the store must handle it itself.
    assert not any("collation" in key for key in settings)


def test_bootstrap_gives_each_mirror_account_the_password_and_leaves_no_root() -> None:
    sql = mariadb.bootstrap_sql()
    for host in ("127.0.0.1", "localhost"):
        # Each account names its own password: a shared IDENTIFIED BY at the end of the list
        # would leave the others without one.
        assert f"'mirror'@'{host}' IDENTIFIED BY 'mirror'" in sql
    assert "DELETE FROM mysql.global_priv WHERE User = 'root'" in sql
    assert sql.index("FLUSH PRIVILEGES") < sql.index("CREATE USER")
    assert "WITH GRANT OPTION" in sql
    assert "CREATE DATABASE mirror CHARACTER SET utf8mb4;" in sql


def test_failure_line_is_the_cause_not_the_abort() -> None:
    log = (
        "2026-01-01 0 [Note] Starting MariaDB\n"
        "2026-01-01 0 [ERROR] /usr/sbin/mariadbd: unknown variable 'x=1'\n"
        "2026-01-01 0 [ERROR] Aborting\n"
    )
    assert (
        mariadb.failure_line(log)
        == "2026-01-01 0 [ERROR] /usr/sbin/mariadbd: unknown variable 'x=1'"
    )
    assert mariadb.failure_line("runuser: user mysql does not exist\n\n") == (
        "runuser: user mysql does not exist"
    )
    bootstrap = (
        "ERROR: 1290  The MariaDB server is running with the --skip-grant-tables option\n"
        "2026-01-01 0 [ERROR] Aborting\n"
    )
    assert mariadb.failure_line(bootstrap).startswith("ERROR: 1290  The MariaDB server")
    assert mariadb.failure_line("") == "(no output)"


def test_refuses_to_drop_system_database() -> None:
    with pytest.raises(DevServiceError, match="system database"):
        mariadb.drop_database("mysql+pymysql://u:p@127.0.0.1:1/mysql", "mysql")


def test_without_the_package_nothing_runs_and_stop_is_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # stop-all calls stop() on every machine, MariaDB installed or not.
    monkeypatch.setattr(mariadb, "MARIADBD", tmp_path / "mariadbd")
    assert not mariadb.is_running()
    assert mariadb.server_pid() is None
    mariadb.stop()
    mariadb.kill()


def test_missing_package_without_root_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mariadb, "MARIADBD", tmp_path / "mariadbd")
    monkeypatch.setattr(dbserver, "as_root", lambda: False)
    with pytest.raises(DevServiceError) as raised:
        mariadb.ensure_installed()
    assert str(raised.value) == (
        f"MariaDB server not installed (no {tmp_path / 'mariadbd'}) and we are not root: "
        "run `sudo apt-get install -y mariadb-server`"
    )


def test_cli_url_and_bad_port(capsys: pytest.CaptureFixture[str]) -> None:
    assert mariadb.main(["url"]) == 0
    assert capsys.readouterr().out.strip() == mariadb.server_url(mariadb.DEFAULT_PORT)
    assert mariadb.main(["url", "--port", "80"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "out of range" in err


def test_import_needs_only_the_standard_library() -> None:
    code = (
        "import sys, devservices.mariadb; "
        "print(sorted(m for m in ('sqlalchemy', 'pymysql') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(mariadb.__file__).parent.parent,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "[]"
