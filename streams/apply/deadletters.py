"""Dead letters: rejected records go to ``<source topic>.dlq`` with the reason in headers.

The original key and value bytes are kept unchanged. Headers (``dlq.*``) say why and where
the record came from, like Kafka Connect's ``__connect.errors.*``. Dead letters of a batch are
sent, and confirmed by the broker, *before* the batch's transaction commits: if sending fails,
the batch rolls back and is retried, so a rejected record is never lost; a crash between the
two can only send a dead letter twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streams.core.decisions import Rejection
from streams.core.errors import DeadLetterError, MirrorError
from streams.core.records import first_of
from streams.kafka.aiokafka_fixes import send_record
from streams.kafka.producers import OwnProducer, passing_failure
from streams.settings import Settings

REASON = "dlq.reason"
DETAIL = "dlq.detail"
ERROR_TYPE = "dlq.error.type"
SOURCE_TOPIC = "dlq.source.topic"
SOURCE_PARTITION = "dlq.source.partition"
SOURCE_OFFSET = "dlq.source.offset"
SOURCE_TIMESTAMP = "dlq.source.timestamp"
DLQ_HEADERS = frozenset(
    {REASON, DETAIL, ERROR_TYPE, SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET, SOURCE_TIMESTAMP}
)

_MAX_DETAIL = 1000


def dead_letter_topic(source_topic: str, suffix: str) -> str:
    """Return the dead-letter topic of ``source_topic``."""
    return f"{source_topic}{suffix}"


def dead_letter_headers(rejection: Rejection) -> list[tuple[str, bytes]]:
    """Return the record's own headers plus the ``dlq.*`` ones describing the rejection."""
    first = first_of(rejection.record)
    own = [(k, v) for k, v in rejection.record.headers if k not in DLQ_HEADERS]
    return [
        *own,
        (REASON, rejection.reason.value.encode()),
        (DETAIL, rejection.detail[:_MAX_DETAIL].encode("utf-8", "replace")),
        (ERROR_TYPE, rejection.error_type.encode()),
        (SOURCE_TOPIC, first.topic.encode()),
        (SOURCE_PARTITION, str(first.partition).encode()),
        (SOURCE_OFFSET, str(first.offset).encode()),
        (SOURCE_TIMESTAMP, str(first.timestamp).encode()),
    ]


def headers_dict(headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    """Decode ``dlq.*`` headers (for the command line and tests)."""
    return {k: v.decode("utf-8", "replace") for k, v in headers if k in DLQ_HEADERS}


class DeadLetterRefused(MirrorError):
    """The broker will never take this dead letter (too large, not allowed): hold its partition."""

    def __init__(self, rejection: Rejection, cause: BaseException) -> None:
        self.rejection = rejection
        self.cause = cause
        record = rejection.record
        super().__init__(
            f"the dead letter of {record.topic}[{record.partition}]@{record.offset} "
            f"({len(record.value or b'')} bytes) cannot be written: {type(cause).__name__}: {cause}"
        )


class DeadLetterWriter:
    """Sends rejected records to dead-letter topics with a producer of its own.

    Its own producer, sized for the largest record a dead-letter topic takes (a source topic's
    ``max.message.bytes`` can exceed the producer default of 1 MB), idempotent with acks from
    all replicas: a dead letter is confirmed before its batch commits.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._max_bytes = 1024 * 1024
        self._producer = OwnProducer(
            settings, "dead-letter", lambda: {"max_request_size": self._max_bytes}
        )

    async def prepare(self, source: str, topic: str) -> None:
        """Create ``topic`` when missing, to take any record of ``source``; size the producer."""
        from streams.kafka.topics import ensure_dead_letter_topic

        limit = await ensure_dead_letter_topic(self.settings, source, topic)
        # Room for the dlq.* headers and the batch framing around one record.
        self._max_bytes = max(self._max_bytes, limit + 64 * 1024)

    async def write(self, topic: str, rejections: Sequence[Rejection]) -> None:
        """Send ``rejections`` to ``topic`` and wait until the broker has each of them.

        Raises :class:`DeadLetterRefused` for a record the broker will never take (the others
        sent before it are on the broker), :class:`DeadLetterError` for a passing failure.
        """
        from aiokafka.errors import KafkaError

        producer = await self._producer.get()
        for rejection in rejections:
            record = rejection.record
            try:
                future = await send_record(
                    producer, topic, record.key, record.value, dead_letter_headers(rejection)
                )
                await future
            except KafkaError as exc:
                broken = await self._producer.discard_if_broken(producer, exc)
                if broken or passing_failure(exc):
                    raise DeadLetterError(
                        f"could not write dead letters to {topic} yet: {exc!r}"
                    ) from exc
                raise DeadLetterRefused(rejection, exc) from exc

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes | None]],
    ) -> Any:
        """Send any record with this producer (header keys byte for byte); return its future."""
        return await send_record(await self._producer.get(), topic, key, value, headers)

    async def close(self) -> None:
        """Stop the producer."""
        await self._producer.close()
