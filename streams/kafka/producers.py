"""The idempotent producers of our own (changelog entries, dead letters), made again when broken.

An idempotent producer numbers its record batches per partition; after some errors its numbers
no longer match the broker's, and every later batch to that partition fails the same way. A
broker restart with batches in flight can cause it: the test of that
(``tests/integration/test_broker_faults.py``, the broker restarted mid-stream) saw every cache
write fail with ``OutOfOrderSequenceNumber`` for minutes, until the test gave up. aiokafka
treats these errors as fatal, not retriable (``aiokafka/producer/sender.py``:
``_can_retry`` is ``error.retriable``, and the sender routine re-raises
``OutOfOrderSequenceNumber``), as the Java client does, whose answer is to close the producer:
so :meth:`OwnProducer.discard_if_broken` stops it, and the next use makes a new one (a new
producer id, numbering from zero). The caller retries its send; a changelog entry or a dead
letter sent twice is harmless (the last value per key wins; dead letters are at least once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiokafka.errors import (
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    KafkaConnectionError,
    KafkaTimeoutError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)

from streams.settings import Settings

log = logging.getLogger(__name__)

#: Errors after which an idempotent producer cannot send again.
BROKEN_PRODUCER_ERRORS: tuple[type[BaseException], ...] = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    ProducerFenced,
)


def passing_failure(exc: BaseException) -> bool:
    """Tell whether a send that failed with ``exc`` may succeed later (the broker unreachable,
    a leader moving), as opposed to a refusal of the record itself (too large, not allowed).

    aiokafka marks ``KafkaTimeoutError`` not retriable, but it is what a send gets when the
    broker stays unreachable past the request timeout (a batch expired): back-pressure, not a
    verdict on the record.
    """
    return bool(getattr(exc, "retriable", False)) or isinstance(
        exc, (KafkaTimeoutError, KafkaConnectionError, OSError)
    )


class OwnProducer:
    """An idempotent producer with acks from all replicas, started on first use."""

    def __init__(self, settings: Settings, name: str, options: Callable[[], Mapping[str, Any]]):
        self.settings = settings
        self.name = name
        self._options = options
        """The producer's size settings, read when it is made (they may grow before that)."""
        self._producer: Any = None
        self._lock = asyncio.Lock()

    async def get(self) -> Any:
        """Return the producer, making and starting it if there is none."""
        async with self._lock:
            if self._producer is None:
                from aiokafka import AIOKafkaProducer

                producer = AIOKafkaProducer(
                    bootstrap_servers=self.settings.broker_hosts,
                    **self.settings.kafka_client_options(),
                    acks="all",
                    enable_idempotence=True,
                    request_timeout_ms=30_000,
                    **self._options(),
                )
                await producer.start()
                self._producer = producer
            return self._producer

    async def discard_if_broken(
        self, producer: Any, exc: BaseException, pending: Iterable[Any] = ()
    ) -> bool:
        """Stop ``producer`` if ``exc`` broke it (the next :meth:`get` makes a new one).

        ``pending`` are the futures of sends not awaited yet: awaited here, so that their
        errors are not reported as never retrieved. Return whether it was broken. Another
        sender that failed on the same producer finds it replaced already and leaves the new
        one alone.
        """
        if not isinstance(exc, BROKEN_PRODUCER_ERRORS):
            return False
        await self.discard(producer, exc, pending)
        return True

    async def discard(self, producer: Any, exc: BaseException, pending: Iterable[Any] = ()) -> None:
        """Stop ``producer`` (unless replaced already): the next :meth:`get` makes a new one.

        Also after a batch the broker refused: the idempotent producer has numbered it, so the
        next batch to that partition would fail with ``OutOfOrderSequenceNumber``.
        """
        await asyncio.gather(*pending, return_exceptions=True)
        async with self._lock:
            if self._producer is not producer:
                return  # replaced by another sender already
            self._producer = None
            log.warning("the %s producer is broken (%r); a new one takes over", self.name, exc)
            with contextlib.suppress(Exception):  # its sender may have died of the same error
                await producer.stop()

    async def close(self) -> None:
        """Stop the producer."""
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
