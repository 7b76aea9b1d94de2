"""Expected failures of the worker are one clear line and a non-zero exit, not a traceback."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.support import ROOT, create_topic, error_lines, free_port, run_cli
from tests.support import run_worker_to_exit as run_worker


@pytest.mark.parametrize(
    ("name", "value"),
    [("WEB_PORT", "http"), ("DATABASE_URL", "mssql://u@h/db"), ("KAFKA_BROKER", "nohost")],
)
def test_a_bad_setting_is_one_line_naming_the_variable(
    name: str, value: str, tmp_path: Path
) -> None:
    done = run_worker({name: value}, tmp_path)
    assert done.returncode == 2
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith("error: ") and name in lines[0]


def test_an_aiokafka_the_fixes_were_not_written_for_is_one_line(tmp_path: Path) -> None:
    # The installed aiokafka, claiming another version as a new release would.
    (tmp_path / "sitecustomize.py").write_text("import aiokafka\naiokafka.__version__ = '0.99.0'\n")
    env = {
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}",
        "WEB_PORT": str(free_port()),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}",
    }
    done = run_worker(env, tmp_path)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: aiokafka 0.99.0 is installed"), lines
    assert "0.14.0" in lines[0] and "requirements.lock" in lines[0]
    done_cli = run_cli(env, "dlq", "list", "planet")
    assert done_cli.returncode == 1, done_cli.stdout + done_cli.stderr
    assert done_cli.stderr.splitlines() == [lines[0]]


def test_a_data_dir_that_cannot_be_made_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    # A missing DATA_DIR is created; one under a regular file cannot be.
    (tmp_path / "a-file").write_text("")
    done = run_worker({"DATA_DIR": str(tmp_path / "a-file" / "data")}, tmp_path)
    assert done.returncode == 2
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith("error: DATA_DIR: cannot create")


#: The capabilities that let root write in a directory whatever its mode.
UNBOUND = ("dac_override", "dac_read_search", "fowner")


def test_a_read_only_data_dir_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    # Before: the worker started, and RocksDB's traceback ended it at its first assignment.
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o555)
    # Root writes anywhere: as root, the worker runs without the capabilities that let it
    # (util-linux's setpriv), so that file modes bind it as any other user.
    dropped = ",".join(f"-{capability}" for capability in UNBOUND)
    launcher = ("setpriv", f"--bounding-set={dropped}", "--") if os.geteuid() == 0 else ()
    try:
        env = {"DATA_DIR": str(data), "WEB_PORT": str(free_port())}
        done = run_worker(env, tmp_path, launcher=launcher)
    finally:
        data.chmod(0o755)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2, lines
    assert lines == [
        f"error: DATA_DIR: cannot write in {str(data)!r}: Permission denied; give the worker's "
        "user write access to it, or set DATA_DIR to a directory it can write"
    ]


def test_faust_s_web_options_are_refused_in_one_line(tmp_path: Path) -> None:
    # Before: faust's --web-port and --web-bind moved the web server (0.0.0.0: every
    # interface) and the URL advertised to other workers, whatever WEB_PORT and WEB_HOST said.
    port, other = free_port(), free_port()
    done = run_worker(
        {"WEB_PORT": str(port), "APP_ID": "web-options"},
        tmp_path,
        "--web-port",
        str(other),
        "--web-bind",
        "0.0.0.0",
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert error_lines(done.stdout + done.stderr) == [
        f"error: Faust's settings were changed after the worker chose them (web_port "
        f"'{other}' where WEB_PORT says '{port}', web_bind '0.0.0.0' where WEB_HOST says "
        f"'127.0.0.1', canonical_url 'http://127.0.0.1:{other}' where CANONICAL_URL says "
        f"'http://127.0.0.1:{port}'); leave out faust's --web-bind, --web-port and configure "
        "the worker with its environment variables only"
    ]
    assert "Traceback" not in output


def test_an_unreachable_broker_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    done = run_worker(
        {
            "KAFKA_BROKER": f"kafka://127.0.0.1:{dead}",
            "WEB_PORT": str(free_port()),
            "APP_ID": "unreachable",
        },
        tmp_path,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1
    assert f"error: cannot reach Kafka at kafka://127.0.0.1:{dead}" in output
    assert "KAFKA_BROKER" in output
    assert "Traceback" not in output


@pytest.mark.parametrize("level", ["info", "error"])
def test_a_busy_web_port_is_one_clear_line(level: str, tmp_path: Path) -> None:
    # Faust logs what is printed once the worker runs: never below LOG_LEVEL, or at
    # LOG_LEVEL=error the line would be filtered out.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        done = run_worker({"WEB_PORT": str(port), "APP_ID": "busy", "LOG_LEVEL": level}, tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 1
    assert f"WEB_PORT {port} on 127.0.0.1 is already in use" in output
    assert "Traceback" not in output


async def test_a_changelog_with_other_partitions_than_its_source_is_one_clear_line(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    source = f"{topic_prefix}planet-changed"
    app_id = f"copartition-{uuid.uuid4().hex[:8]}"
    changelog = f"{app_id}-planet-changelog"
    await create_topic(kafka_bootstrap, source, partitions=3)
    await create_topic(kafka_bootstrap, changelog, partitions=4)  # left by an older setup
    done = run_worker(
        {
            "KAFKA_BROKER": f"kafka://{kafka_bootstrap}",
            "TOPIC_PREFIX": topic_prefix,
            "WEB_PORT": str(free_port()),
            "APP_ID": app_id,
        },
        tmp_path,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1
    assert (
        f"error: changelog {changelog} has 4 partitions but its source topic {source} has 3"
    ) in output
    assert "Traceback" not in output


BROKEN_MODULES = {
    "raises_at_import": ('raise RuntimeError("no config for this module")\n', "RuntimeError"),
    "bad_syntax": ("def broken(:\n", "SyntaxError"),
    "bad_entity": (
        "from sqlalchemy import String\n"
        "from sqlalchemy.orm import Mapped, mapped_column\n"
        "from models import Base, MirroredEntity\n\n\n"
        "class Moon(MirroredEntity, Base):\n"
        '    __tablename__ = "moon"\n'
        '    __topic__ = "moon-changed"\n'
        '    __event_fields__ = {"code": "moonCode", "colour": "moonColour"}\n\n'
        "    code: Mapped[str] = mapped_column(String(8), primary_key=True)\n",
        "RegistryError",
    ),
}


@pytest.mark.parametrize("module", sorted(BROKEN_MODULES))
def test_an_entity_module_that_fails_to_import_is_one_line(module: str, tmp_path: Path) -> None:
    source, error = BROKEN_MODULES[module]
    (tmp_path / f"{module}.py").write_text(source)
    env = {
        "ENTITY_MODULES": f"models.planet,{module}",
        "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}",
        "WEB_PORT": str(free_port()),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}",
    }
    expected = f"error: ENTITY_MODULES: importing '{module}' failed: {error}: "
    done = run_worker(env, tmp_path)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(lines) == 1 and lines[0].startswith(expected), lines
    for command in (["show", "planet"], ["status"]):
        done_cli = run_cli(env, *command)
        assert done_cli.returncode == 1, done_cli.stdout + done_cli.stderr
        assert done_cli.stderr.splitlines() == [lines[0]]


SECRET = "Wr0ngSecretPw"

#: Database settings that cannot work, and what the one line must say failed.
BAD_DATABASES = {
    "closed port": "Connection refused",
    "wrong password": "password authentication failed",
    "unknown host": 'could not translate host name "no-such-host.invalid"',
    "missing database": 'database "no_such_database" does not exist',
    "sqlite in a missing directory": "unable to open database file",
}


def bad_database_url(case: str, pg_server_url: str, tmp_path: Path) -> str:
    """Return the DATABASE_URL of ``case``, with SECRET as its password where it has one."""
    server = make_url(pg_server_url).set(password=SECRET)
    urls = {
        "closed port": server.set(port=free_port()),
        "wrong password": server,
        "unknown host": server.set(host="no-such-host.invalid"),
        "missing database": make_url(pg_server_url).set(database="no_such_database"),
        "sqlite in a missing directory": make_url(f"sqlite:///{tmp_path / 'no' / 'm.sqlite3'}"),
    }
    return urls[case].render_as_string(hide_password=False)


@pytest.mark.parametrize("case", sorted(BAD_DATABASES))
def test_an_unusable_database_is_one_line_naming_database_url(
    case: str, pg_server_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    url = bad_database_url(case, pg_server_url, tmp_path)
    env = {
        "DATABASE_URL": url,
        "KAFKA_BROKER": f"kafka://{kafka_bootstrap}",
        "WEB_PORT": str(free_port()),
        "APP_ID": "bad-database",
    }
    masked = make_url(url).render_as_string(hide_password=True)
    expected = f"error: cannot use the database at DATABASE_URL {masked}: "
    done = run_worker(env, tmp_path)
    output = done.stdout + done.stderr
    # Faust's worker logs what is printed to stderr, so the line has a log prefix.
    errors = error_lines(output)
    assert done.returncode == 1, output[-3000:]
    assert len(errors) == 1 and errors[0].startswith(expected), errors
    assert BAD_DATABASES[case] in errors[0], errors[0]
    assert "Traceback" not in output and SECRET not in output
    for command in (["show", "planet"], ["status"], ["verify", "planet"], ["rebuild", "planet"]):
        done_cli = run_cli(env, *command)
        assert done_cli.returncode == 1, (command, done_cli.stdout, done_cli.stderr)
        assert done_cli.stderr.splitlines() == errors, command


def test_a_table_lacking_a_declared_column_is_one_clear_line(
    db_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    # Before: every batch's write failed; SQLite's error was retried forever, and
    # PostgreSQL's dead-lettered every record.
    from sqlalchemy import create_engine, text

    import models.planet  # noqa: F401  (registers the planet)
    from models.registry import default_registry
    from models.store import SqlStore

    store = SqlStore.from_url(db_url)
    store.create_tables(list(default_registry))
    store.dispose()
    engine = create_engine(db_url)
    with engine.begin() as conn:  # a table made for an older model: no name column
        conn.execute(text("ALTER TABLE servicea_planet DROP COLUMN name"))
    engine.dispose()
    env = {
        "DATABASE_URL": db_url,
        "KAFKA_BROKER": f"kafka://{kafka_bootstrap}",
        "WEB_PORT": str(free_port()),
        "APP_ID": f"old-table-{uuid.uuid4().hex[:8]}",
    }
    done = run_worker(env, tmp_path)
    output = done.stdout + done.stderr
    errors = error_lines(output)
    assert done.returncode == 1, output[-3000:]
    assert len(errors) == 1, errors
    assert errors[0].startswith("error: table servicea_planet lacks the column(s) name "), errors
    assert "ALTER TABLE servicea_planet ADD COLUMN name VARCHAR(255)" in errors[0], errors
    assert "Traceback" not in output


def test_a_database_user_that_cannot_create_the_tables_is_one_clear_line(
    pg_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    # Before: the worker retried CREATE TABLE forever, a warning every 30 s.
    from sqlalchemy import create_engine, text

    role = f"reader_{uuid.uuid4().hex[:8]}"
    engine = create_engine(pg_url)
    with engine.begin() as conn:  # PostgreSQL 15: only the owner creates in schema public
        conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD 'reader'"))
    engine.dispose()
    url = make_url(pg_url).set(username=role, password="reader")
    env = {
        "DATABASE_URL": url.render_as_string(hide_password=False),
        "KAFKA_BROKER": f"kafka://{kafka_bootstrap}",
        "WEB_PORT": str(free_port()),
        "APP_ID": f"reader-{uuid.uuid4().hex[:8]}",
    }
    try:
        done = run_worker(env, tmp_path)
    finally:
        engine = create_engine(pg_url)
        with engine.begin() as conn:
            conn.execute(text(f"DROP ROLE {role}"))
        engine.dispose()
    output = done.stdout + done.stderr
    errors = error_lines(output)
    assert done.returncode == 1, output[-3000:]
    assert len(errors) == 1, errors
    assert errors[0].startswith("error: cannot create the tables: "), errors
    assert "permission denied for schema public" in errors[0], errors
    assert "Traceback" not in output


def test_a_mariadb_table_whose_key_collation_merges_keys_is_one_clear_line(
    mariadb_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    # MariaDB's default collation makes `ABC` and `abc` one row: the worker does not start on
    # such a table instead of letting one entity overwrite another.
    from tests.integration.test_mysql_store import MERGING_KEYS, make_planet_table

    make_planet_table(mariadb_url, MERGING_KEYS)
    env = {
        "DATABASE_URL": mariadb_url,
        "KAFKA_BROKER": f"kafka://{kafka_bootstrap}",
        "WEB_PORT": str(free_port()),
        "APP_ID": f"merging-{uuid.uuid4().hex[:8]}",
    }
    done = run_worker(env, tmp_path)
    output = done.stdout + done.stderr
    errors = error_lines(output)
    assert done.returncode == 1, output[-3000:]
    assert len(errors) == 1, errors
    assert errors[0].startswith(
        "error: key column servicea_planet.uuid has collation utf8mb4_general_ci"
    ), errors
    assert "utf8mb4_nopad_bin" in errors[0], errors
    assert "Traceback" not in output
