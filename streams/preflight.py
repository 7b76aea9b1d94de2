"""Checks run before a worker starts, so expected failures are one clear line.

Without them, an unreachable broker or a busy web port ends the worker with Faust's
traceback; an operator needs the one thing to fix.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket

from streams.settings import Settings


def unreachable_broker(settings: Settings, exc: BaseException) -> str:
    """Say, in one line, that the brokers do not answer and what to fix."""
    return (
        f"cannot reach Kafka at {settings.kafka_broker} ({type(exc).__name__}); "
        "start the broker (./run kafka start) or fix KAFKA_BROKER"
    )


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


async def broker_problem(settings: Settings, timeout: float = 20.0) -> str | None:
    """Return why the Kafka bootstrap servers do not answer, or None."""
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
    except (KafkaError, OSError, TimeoutError) as exc:
        return unreachable_broker(settings, exc)
    finally:
        aiokafka_log.setLevel(level)
        await client.close()
    return None
