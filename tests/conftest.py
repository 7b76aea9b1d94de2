"""Session fixtures: the real Kafka broker, PostgreSQL and MariaDB, and per-test names.

Services are started by ``devservices`` unless ``KAFKA_BROKER`` / ``DATABASE_URL`` /
``MARIADB_URL`` point at running ones, and stopped at the end of the session if this session
started them (set ``KEEP_SERVICES=1`` to keep them up between runs). Each test gets its own
topic names and its own database, so tests never see each other's data.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from devservices import kafka as dev_kafka
from devservices import kafka_secure as dev_kafka_secure
from devservices import mariadb as dev_mariadb
from devservices import postgres as dev_postgres
from streams.settings import parse_kafka_broker
from tests.support import Broker

KEEP = os.environ.get("KEEP_SERVICES") == "1"


@pytest.hookimpl(trylast=True)  # after ``-m`` has deselected what it deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse a ``serial`` test in a process that runs beside others (pytest-xdist): it would
    stop a service under the tests of the other process (tests/run_suite.py runs it alone)."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return
    serial = [item.nodeid for item in items if item.get_closest_marker("serial")]
    if serial:
        raise pytest.UsageError(
            f"serial tests cannot run beside others (-n): {', '.join(serial[:3])}; "
            "run them alone, or the whole suite with ./run test"
        )


def _unique(request: pytest.FixtureRequest, prefix: str) -> str:
    base = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:30]
    return f"{prefix}_{base}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap ``host:port[,host:port]`` of a running single-node broker."""
    given = os.environ.get("KAFKA_BROKER")
    if given:
        yield ",".join(p.removeprefix("kafka://") for p in parse_kafka_broker(given).split(";"))
        return
    was_running = dev_kafka.is_running(1)
    bootstrap = dev_kafka.start(1)
    yield bootstrap
    if not was_running and not KEEP:
        dev_kafka.stop(1)


@pytest.fixture(scope="session")
def kafka_cluster_bootstrap() -> Iterator[str]:
    """Bootstrap of a 3-broker KRaft cluster (replication factor 3), started for the session."""
    was_running = dev_kafka.is_running(3)
    bootstrap = dev_kafka.start(3)
    yield bootstrap
    if not was_running and not KEEP:
        dev_kafka.stop(3)


@pytest.fixture(scope="session")
def kafka_secure() -> Iterator[Broker]:
    """The SASL_SSL broker (SCRAM-SHA-512, a test CA: devservices/kafka_secure.py), with the
    settings a client needs, started for the session."""
    was_running = dev_kafka_secure.is_running()
    bootstrap = dev_kafka_secure.start()
    yield Broker(bootstrap, dev_kafka_secure.client_settings())
    if not was_running and not KEEP:
        dev_kafka_secure.stop()


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """SQLAlchemy URL of a PostgreSQL server where tests may create databases."""
    given = os.environ.get("DATABASE_URL")
    if given and make_url(given).get_backend_name() == "postgresql":
        yield given
        return
    was_running = dev_postgres.is_running()
    url = dev_postgres.start()
    yield url
    if not was_running and not KEEP:
        dev_postgres.stop()


@pytest.fixture
def pg_url(pg_server_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a fresh PostgreSQL database for this test, dropped afterwards."""
    name = _unique(request, "t")[:63]
    url = dev_postgres.create_database(pg_server_url, name)
    yield url
    dev_postgres.drop_database(pg_server_url, name)


@pytest.fixture(scope="session")
def mariadb_server_url() -> Iterator[str]:
    """SQLAlchemy URL of a MariaDB (or MySQL) server where tests may create databases."""
    given = os.environ.get("MARIADB_URL")
    if given and make_url(given).get_backend_name() in ("mysql", "mariadb"):
        yield given
        return
    was_running = dev_mariadb.is_running()
    url = dev_mariadb.start()
    yield url
    if not was_running and not KEEP:
        dev_mariadb.stop()


@pytest.fixture
def mariadb_url(mariadb_server_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a fresh MariaDB database for this test, dropped afterwards."""
    name = _unique(request, "t")[:63]
    url = dev_mariadb.create_database(mariadb_server_url, name)
    yield url
    dev_mariadb.drop_database(mariadb_server_url, name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a fresh SQLite file for this test."""
    return f"sqlite:///{tmp_path / 'mirror.sqlite3'}"


_DB_FIXTURES = {"sqlite": "sqlite_url", "postgresql": "pg_url", "mariadb": "mariadb_url"}


def fresh_database(request: pytest.FixtureRequest, database: str) -> str:
    """Return the URL of a fresh database on ``database`` (sqlite, postgresql, mariadb)."""
    return str(request.getfixturevalue(_DB_FIXTURES[database]))


@pytest.fixture(params=list(_DB_FIXTURES))
def db_url(request: pytest.FixtureRequest) -> str:
    """One suite, every database: the URL of a fresh SQLite file, PostgreSQL database or
    MariaDB database."""
    return fresh_database(request, request.param)


@pytest.fixture(params=["postgresql", "mariadb"])
def server_db_url(request: pytest.FixtureRequest) -> str:
    """The production databases (no SQLite): the URL of a fresh PostgreSQL or MariaDB
    database, for the slow tests that prove the guarantees on each server."""
    return fresh_database(request, request.param)


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> str:
    """A topic name no other test uses."""
    return _unique(request, "test").replace("_", "-")


@pytest.fixture
def topic_prefix(request: pytest.FixtureRequest) -> str:
    """A ``TOPIC_PREFIX`` no other test uses, so entity topics are this test's own."""
    return _unique(request, "t").replace("_", "-") + "."
