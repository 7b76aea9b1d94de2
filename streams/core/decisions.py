"""What a record means for its entity: a decision (upsert, delete or reject), and the outcome
it ends in. Plain values: the store carries them out, dead letters carry the rejections.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from streams.core.records import EntityKey, Record, Version


class ChangeType(StrEnum):
    """The closed set of ``changeType`` values an event may carry."""

    CREATED = "CREATED"
    UPDATED = "UPDATED"
    DELETED = "DELETED"


class Outcome(StrEnum):
    """What happened to one consumed record; every record gets exactly one."""

    APPLIED = "applied"
    SKIPPED = "skipped"
    REJECTED = "rejected"


class RejectReason(StrEnum):
    """Why a record was rejected; stable strings, fit for dead-letter headers and metrics."""

    BAD_ENCODING = "bad_encoding"
    BAD_JSON = "bad_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_KEY = "missing_key"
    BAD_KEY = "bad_key"
    UNKNOWN_CHANGE_TYPE = "unknown_change_type"
    MAPPING_FAILED = "mapping_failed"
    INVALID_ROW = "invalid_row"
    BAD_VERSION = "bad_version"
    UNKNOWN_TOPIC = "unknown_topic"
    STORE_REFUSED = "store_refused"
    NO_ROW = "no_row"
    """A change event without the row its operation needs (Debezium: no ``after``/``before``)."""
    NOT_MIRRORED = "not_mirrored"
    """A change event of a kind the mirror does not apply (Debezium: truncate, message)."""


@dataclass(frozen=True, slots=True)
class Upsert:
    """Create the entity, or update it when it exists."""

    key: EntityKey
    row: Mapping[str, Any]
    change_type: ChangeType
    record: Record
    version: Version
    partial: bool = False
    """A partial update (the model takes them): ``row`` holds only the columns the event
    carries, and only those change."""
    missing: tuple[str, ...] = ()
    """For a partial update: the NOT NULL columns it does not give, which an entity the
    table does not have yet would need."""


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete the entity; its absence is not an error."""

    key: EntityKey
    record: Record
    version: Version | None
    """None for a Kafka tombstone of an entity with a version field: it has no version of
    its own and deletes whatever state is there."""
    change_type: ChangeType = ChangeType.DELETED


@dataclass(frozen=True, slots=True)
class Rejection:
    """The record cannot be applied; carries the original bytes for a dead-letter topic."""

    reason: RejectReason
    detail: str
    record: Record
    error_type: str = ""

    @property
    def message(self) -> str:
        """Return a one-line description naming the record's position."""
        r = self.record
        return f"rejected {r.topic}[{r.partition}]@{r.offset}: {self.reason.value}: {self.detail}"


Write = Upsert | Delete
Decision = Upsert | Delete | Rejection
