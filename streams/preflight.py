"""Checks run before a worker starts, so expected failures are one clear line.

Without them, an unreachable broker or a busy web port ends the worker with Faust's
traceback, and an unusable database keeps it retrying forever; an operator needs the one
thing to fix.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from streams.errors import MirrorError
from streams.settings import Settings


def unreachable_broker(settings: Settings, exc: BaseException) -> str:
    """Say, in one line, that the brokers do not answer and what to fix."""
    return (
        f"cannot reach Kafka at {settings.kafka_broker} ({type(exc).__name__}); "
        "start the broker (./run kafka start) or fix KAFKA_BROKER"
    )


async def start_client(
    settings: Settings,
    start: Awaitable[Any],
    close: Callable[[], Awaitable[Any]],
    timeout: float,
) -> None:
    """Await a Kafka client's ``start``; if the brokers do not answer, ``close`` it and raise
    :class:`MirrorError` with the one line of :func:`unreachable_broker`."""
    from aiokafka.errors import KafkaError

    try:
        await asyncio.wait_for(start, timeout=timeout)
    except (KafkaError, OSError, TimeoutError) as exc:
        await close()
        raise MirrorError(unreachable_broker(settings, exc)) from None


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


def partition_problem(settings: Settings, partitions: dict[str, int | None]) -> str | None:
    """Return why a cached entity's topic cannot be co-partitioned with its table, or None.

    ``partitions`` maps each cached entity's source topic to its partition count (None when
    the topic does not exist yet: the worker creates it with TOPIC_PARTITIONS).
    """
    for topic, count in sorted(partitions.items()):
        if count is not None and count != settings.topic_partitions:
            return (
                f"topic {topic} has {count} partitions but TOPIC_PARTITIONS is "
                f"{settings.topic_partitions}; set TOPIC_PARTITIONS={count} (a cached table's "
                "changelog must have as many partitions as its source topic)"
            )
    return None


async def broker_problem(
    settings: Settings, cached_topics: Sequence[str] = (), timeout: float = 20.0
) -> str | None:
    """Return why the Kafka bootstrap servers do not answer, or a topic does not fit, or None."""
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
        counts: dict[str, int | None] = {}
        if cached_topics:
            # Metadata of all topics: asking for named ones could auto-create them.
            cluster = await asyncio.wait_for(client.fetch_all_metadata(), timeout=timeout)
            counts = {topic: _partition_count(cluster, topic) for topic in cached_topics}
    except (KafkaError, OSError, TimeoutError) as exc:
        return unreachable_broker(settings, exc)
    finally:
        aiokafka_log.setLevel(level)
        await client.close()
    return partition_problem(settings, counts)


def _partition_count(cluster: Any, topic: str) -> int | None:
    partitions = cluster.partitions_for_topic(topic)
    return None if partitions is None else len(partitions)
