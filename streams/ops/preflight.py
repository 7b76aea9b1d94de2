"""Checks run before a worker starts, so expected failures are one clear line.

Without them, an unreachable broker or a busy web port ends the worker with Faust's
traceback, and an unusable database keeps it retrying forever; an operator needs the one
thing to fix. Why the brokers refused (credentials, certificate, protocol, or no answer) is
``streams.kafka.broker_failures``'s to say.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from streams.core.errors import MirrorError, UnfitTable
from streams.kafka.broker_failures import broker_failure
from streams.kafka.topic_ids import read_topic_facts
from streams.settings import Settings

if TYPE_CHECKING:
    from models.registry import EntitySpec
    from models.store import SqlStore


def web_port_problem(settings: Settings) -> str | None:
    """Return why the worker cannot listen on WEB_HOST:WEB_PORT, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((settings.web_host, settings.web_port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"WEB_PORT {settings.web_port} on {settings.web_host} is already in use "
                    "(another worker?); set WEB_PORT to a free port"
                )
            return f"cannot listen on WEB_HOST {settings.web_host}:{settings.web_port}: {exc}"
    return None


#: Faust settings the worker's settings choose: the variable choosing each (None: always the
#: same), and faust's worker option that sets it after the app is built, overriding the
#: worker's choice (``faust/cli/worker.py``, ``worker._init_worker_options``).
CHOSEN_BY: dict[str, tuple[str | None, str | None]] = {
    "web_enabled": (None, "--without-web"),
    "web_port": ("WEB_PORT", "--web-port"),
    "web_bind": ("WEB_HOST", "--web-bind"),
    "web_host": ("WEB_HOST", "--web-host"),
    "web_transport": (None, "--web-transport"),
    "canonical_url": ("CANONICAL_URL", None),  # --web-port and --web-host set it too
    "broker": ("KAFKA_BROKER", None),
    "datadir": ("DATA_DIR", None),
}


def chosen_conf(settings: Settings) -> dict[str, str]:
    """Return, as text, what the worker's settings chose for each of :data:`CHOSEN_BY`."""
    return {
        "web_enabled": "True",
        "web_port": str(settings.web_port),
        "web_bind": settings.web_host,
        "web_host": settings.web_host,
        "web_transport": "tcp:",
        "canonical_url": settings.advertised_url,
        "broker": settings.kafka_broker,
        "datadir": settings.data_path,
    }


def faust_conf_problem(conf: Any, settings: Settings) -> str | None:
    """Return which of Faust's settings are not what the worker's settings chose, or None.

    The app gets each of them from the settings, with no environment of Faust's
    (streams/faust_app.py, workaround 10); faust's worker options still set some after the
    app is built: the worker refuses to start rather than serve where its settings do not say.
    """
    have = {
        "web_enabled": str(bool(conf.web_enabled)),
        "web_port": str(conf.web_port),
        "web_bind": str(conf.web_bind),
        "web_host": str(conf.web_host),
        "web_transport": str(conf.web_transport),
        "canonical_url": str(conf.canonical_url),
        "broker": ";".join(str(url) for url in conf.broker),
        "datadir": str(conf.datadir),
    }
    wrong = {name: want for name, want in chosen_conf(settings).items() if have[name] != want}
    if not wrong:
        return None
    said = ", ".join(
        f"{name} {have[name]!r} where {variable or 'the worker'} says {want!r}"
        for name, want in wrong.items()
        for variable in [CHOSEN_BY[name][0]]
    )
    options = sorted({option for name in wrong if (option := CHOSEN_BY[name][1])})
    leave_out = f"leave out faust's {', '.join(options)} and " if options else ""
    return (
        f"Faust's settings were changed after the worker chose them ({said}); {leave_out}"
        "configure the worker with its environment variables only"
    )


def _check_connect(settings: Settings, timeout: float) -> None:
    """Open one connection to DATABASE_URL and run ``SELECT 1`` (raises the driver's error)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    # psycopg2 waits this long per host for a connection; SQLite opens a file.
    connect_args = {} if settings.is_sqlite else {"connect_timeout": max(2, round(timeout))}
    engine = create_engine(settings.database_url, poolclass=NullPool, connect_args=connect_args)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()


async def database_problem(settings: Settings, timeout: float = 5.0) -> str | None:
    """Return why DATABASE_URL cannot be used at all (unreachable, refused, missing), or None.

    Checked once at start: a database that goes away later is back-pressure, not an exit.
    """
    from sqlalchemy.exc import SQLAlchemyError

    try:
        # A name lookup is not bound by connect_timeout: bound the whole check too.
        await asyncio.wait_for(asyncio.to_thread(_check_connect, settings, timeout), 3 * timeout)
    except SQLAlchemyError as exc:
        detail = " ".join(str(getattr(exc, "orig", None) or exc).split())
    except TimeoutError:
        detail = f"no answer within {3 * timeout:.0f} s"
    else:
        return None
    return (
        f"cannot use the database at DATABASE_URL {settings.database_url_safe}: {detail}; "
        "fix DATABASE_URL or start the database"
    )


async def schema_problem(store: SqlStore, specs: Sequence[EntitySpec]) -> str | None:
    """Return why the models' tables cannot be made or cannot take their rows, or None.

    The missing tables are created here (the agents would at their start); an existing table
    lacking a declared column refuses every write. No retry fixes either: the worker does
    not start.
    """
    try:
        await asyncio.to_thread(store.create_tables, specs)
        missing = await asyncio.to_thread(store.missing_columns, specs)
    except UnfitTable as exc:
        return f"{exc}; then start the worker again"
    except MirrorError as exc:
        if exc.retriable:
            return None  # the database went away since its check: back-pressure, not an exit
        return (
            f"cannot create the tables: {exc}; grant the database user what it lacks, or "
            "create the tables yourself"
        )
    if not missing:
        return None
    dialect = store.engine.dialect
    problems = []
    for name, columns in sorted(missing.items()):
        adds = "; ".join(
            f"ALTER TABLE {name} ADD COLUMN {c.name} {c.type.compile(dialect=dialect)}"
            for c in columns
        )
        names = ", ".join(c.name for c in columns)
        problems.append(f"table {name} lacks the column(s) {names} its model declares ({adds})")
    return (
        f"{'; '.join(problems)}: every write to it would fail; add the column(s), then start "
        "the worker again"
    )


def partition_problem(
    pairs: Sequence[tuple[str, str]], partitions: dict[str, int | None]
) -> str | None:
    """Return why a cached table's changelog cannot be co-partitioned with its source, or None.

    ``pairs`` are (source topic, changelog topic); ``partitions`` maps topics to their
    partition count (None when the topic does not exist yet: the worker creates a changelog
    with its source's count).
    """
    for source, changelog in sorted(pairs):
        want, have = partitions.get(source), partitions.get(changelog)
        if want is not None and have is not None and want < have:
            # Fewer: the source was created again with fewer partitions (more: partitions
            # were added, and the worker gives the changelog as many, streams.ops.topic_watch).
            return (
                f"changelog {changelog} has {have} partitions but its source topic {source} has "
                f"{want}: a topic cannot lose partitions, so the source was created again with "
                f"fewer; delete {changelog} (the next start writes it again from the database)"
            )
    return None


async def topic_partition_counts(
    settings: Settings, topics: Sequence[str], timeout: float = 10.0
) -> dict[str, int | None]:
    """Return the partition count of each of ``topics`` (None: missing); raise MirrorError
    with one line when the brokers refuse or do not answer (within ``timeout`` seconds)."""
    from aiokafka.client import AIOKafkaClient
    from aiokafka.errors import KafkaError

    client = AIOKafkaClient(
        bootstrap_servers=settings.broker_hosts,
        **settings.kafka_client_options(),
        request_timeout_ms=10_000,
    )
    # aiokafka logs each refused connection at error level; the caller says it once.
    aiokafka_log = logging.getLogger("aiokafka")
    level = aiokafka_log.level
    aiokafka_log.setLevel(logging.CRITICAL)
    try:
        await asyncio.wait_for(client.bootstrap(), timeout=timeout)
        if not topics:
            return {}
        # Named topics, without creating any (the reader the topic watch uses).
        facts = await asyncio.wait_for(read_topic_facts(client, list(topics)), timeout=timeout)
        return {topic: facts[topic].partitions if topic in facts else None for topic in topics}
    except (KafkaError, OSError, TimeoutError) as exc:
        raise MirrorError(await broker_failure(settings, exc, min(timeout, 10.0))) from None
    finally:
        aiokafka_log.setLevel(level)
        await client.close()


async def broker_problem(
    settings: Settings, cached: Sequence[tuple[str, str]] = (), timeout: float = 20.0
) -> str | None:
    """Return why the Kafka bootstrap servers refuse or do not answer, or a topic does not
    fit, or None."""
    topics = sorted({topic for pair in cached for topic in pair})
    try:
        counts = await topic_partition_counts(settings, topics, timeout)
    except MirrorError as exc:
        return str(exc)
    return partition_problem(cached, counts)
