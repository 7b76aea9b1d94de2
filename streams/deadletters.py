"""Dead letters: rejected records go to ``<source topic>.dlq`` with the reason in headers.

The original key and value bytes are kept unchanged. Headers (``dlq.*``) say why and where
the record came from, like Kafka Connect's ``__connect.errors.*``. Dead letters of a batch are
sent, and confirmed by the broker, *before* the batch's transaction commits: if sending fails,
the batch rolls back and is retried, so a rejected record is never lost; a crash between the
two can only send a dead letter twice.
"""

from __future__ import annotations

from collections.abc import Sequence

from streams.routing import Rejection

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
    first = rejection.record.first
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
