"""The pure routing core: decode a record in its entity's format and route its change to a
decision.

Each record becomes one *decision* (upsert, delete, reject), in consumption order
(:func:`route`, :func:`route_batch`); the worker's batches, the MSK adapter and ``verify``
all route through here. Folding a batch to one write per key and the version guard are
the next step, in :mod:`streams.core.guard` (:func:`~streams.core.guard.resolve`). These
functions import only the standard library and never do I/O: the SQL store and the
batch lanes carry the decisions out. "Unknown changeType" or "not JSON" is a value, not an
exception, so one bad event can never stop a partition.
"""

from __future__ import annotations

import dataclasses
import json
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from streams.core.changetype_json import CHANGE_TYPE_JSON
from streams.core.decisions import (
    ChangeType,
    Decision,
    Delete,
    Rejection,
    RejectReason,
    Upsert,
)
from streams.core.formats import InputFormat
from streams.core.keys import BadKey, decode_record_key, valid_part
from streams.core.records import EntityKey, JsonLoads, Record, Version, first_of, position_of

#: Record metadata injected into the event that ``from_kafka_event`` sees.
TIMESTAMP_FIELD = "kafkaRecordTimestamp"
TOPIC_FIELD = "kafkaTopic"
PARTITION_FIELD = "kafkaPartition"
OFFSET_FIELD = "kafkaOffset"

#: No bound: a timestamp as large as any.
UNBOUNDED = 2**62


@dataclass(frozen=True, slots=True)
class Clock:
    """How far record timestamps are believed, as versions.

    A producer's clock can run ahead: a record stamped an hour in the future would outrank
    every event of its entity from another partition for that hour. Versions take at most
    ``ahead_limit`` (the worker's clock plus MAX_TIMESTAMP_AHEAD when the batch was read), so
    such a record holds its entity against other partitions for that long at most; within its
    partition, later events apply anyway (``streams.core.guard.newer_in_partition``).
    """

    ahead_limit: int = UNBOUNDED
    """The largest timestamp (ms) a version takes."""

    def version(self, record: Record) -> Version:
        """Return the default version of ``record``: where first produced, bounded."""
        version = position_of(record)
        if version[0] > self.ahead_limit:
            return (self.ahead_limit, version[1], version[2])
        return version


def lift_to_floor(decisions: list[Decision], floor: int) -> list[Decision]:
    """Return ``decisions`` with every version's timestamp at least ``floor`` (the least version
    of the records of a topic found recreated: above every row of its old log). A pass with no
    copy when none is below it, the usual case."""
    lifted: list[Decision] | None = None
    for i, decision in enumerate(decisions):
        if isinstance(decision, Rejection) or decision.version is None:
            continue
        version = decision.version
        if version[0] < floor:
            if lifted is None:
                lifted = list(decisions)
            lifted[i] = dataclasses.replace(decision, version=(floor, version[1], version[2]))
    return decisions if lifted is None else lifted


BELIEVED = Clock()
"""Timestamps taken as they are (tests, the one-event tools)."""


def stamped_ahead(records: Sequence[Record], limit: int, *, forwarded: bool = True) -> list[Record]:
    """Return the records whose first timestamp is above ``limit``. Unless some record may
    carry its origin (``forwarded``), a C-level pass over the timestamps first: the usual
    answer is none."""
    if not forwarded and max(map(_TIMESTAMP, records), default=limit) <= limit:
        return []
    return [r for r in records if first_of(r).timestamp > limit]


_TIMESTAMP = operator.attrgetter("timestamp")


class Entity(Protocol):
    """What the core needs to know of a declared entity (see ``models.registry``)."""

    @property
    def kind(self) -> str:
        """Lower-case entity name, e.g. ``planet``."""

    @property
    def key_column(self) -> str:
        """Column holding the entity key in a row."""

    @property
    def key_field(self) -> str | None:
        """Event field holding the entity key, when known without mapping the whole event."""

    @property
    def version_field(self) -> str | None:
        """Event field holding the entity's version (an integer), if the model declares one."""

    # Optional, for a composite key (several columns): ``composite`` (default False),
    # ``key_columns`` (the columns in key order), ``key_fields`` (the event field of each,
    # None where the field map does not say) and ``canonical_key(key)`` (each part as its
    # column holds it); its keys are tuples (``streams.core.keys``).
    # Optional: ``canonical_single_keys`` (default False), True when a single key is converted
    # by ``canonical_key`` too (text, integer and UUID key columns: one type, one form).
    # Optional: ``input_format`` (an ``streams.core.formats.InputFormat``, default
    # ``CHANGE_TYPE_JSON``), the format of the entity's records.
    # Optional: ``reads_record_fields`` (default True), False when the mapping never reads the
    # record fields injected into the event (kafkaRecordTimestamp ...), which then are not.

    def row_from_event(self, event: dict[str, Any]) -> Mapping[str, Any]:
        """Map an event to a row of column values (calls the model's ``from_kafka_event``)."""

    def prepare_row(self, row: Mapping[str, Any]) -> Mapping[str, Any]:
        """Return ``row`` as the table takes it; raise ``ValueError`` saying why it would not."""

    def check_key(self, key: Any) -> str | None:
        """Say why the key column cannot hold ``key`` (a NUL, too long), or None."""

    # Optional, for models taking partial updates: ``partial_updates`` (default False),
    # ``patch_from_event(event)`` (the columns the event carries) and ``prepare_patch(row)``
    # (like ``prepare_row``, returning the row and the NOT NULL columns it does not give).


_valid_key = valid_part


def route(
    record: Record,
    entity: Entity,
    loads: JsonLoads = json.loads,
    clock: Clock = BELIEVED,
    input_format: InputFormat | None = None,
    composite: bool | None = None,
) -> Decision:
    """Decide what one record means for its entity: upsert, delete or reject
    (``input_format``, ``composite``: the entity's, when the caller has them already)."""
    if record.value is None:
        return _route_tombstone(record, entity, clock, loads)
    decoded = (input_format or format_of(entity)).decode(record, loads)
    if isinstance(decoded, Rejection):
        return decoded
    change, event = decoded
    version = _version_of(event, record, entity, clock)
    if isinstance(version, Rejection):
        return version
    if getattr(entity, "reads_record_fields", True):
        first = first_of(record)
        event[TIMESTAMP_FIELD] = first.timestamp
        event[TOPIC_FIELD] = first.topic
        event[PARTITION_FIELD] = first.partition
        event[OFFSET_FIELD] = first.offset

    if change is ChangeType.DELETED and entity.key_field is not None:
        key = event.get(entity.key_field)
        if key is None:
            return Rejection(RejectReason.MISSING_KEY, f"event has no {entity.key_field!r}", record)
        if not _valid_key(key):
            return Rejection(
                RejectReason.BAD_KEY, f"{entity.key_field!r} is not a string or integer", record
            )
        problem = entity.check_key(key)
        if problem is not None:
            return Rejection(RejectReason.BAD_KEY, problem, record)
        return Delete(key=_single_key(entity, key), record=record, version=version)

    partial = change is ChangeType.UPDATED and getattr(entity, "partial_updates", False)
    mapping = entity.patch_from_event if partial else entity.row_from_event  # type: ignore[attr-defined]
    try:
        row = mapping(event)
    except Exception as exc:  # a user's mapping may raise anything; the worker must go on
        absent = _absent_key_field(entity, event)
        if absent is not None:
            return Rejection(
                RejectReason.MISSING_KEY, f"event has no {absent!r}", record, type(exc).__name__
            )
        return Rejection(
            RejectReason.MAPPING_FAILED,
            f"from_kafka_event raised {type(exc).__name__}: {exc}",
            record,
            type(exc).__name__,
        )
    if composite is None:
        composite = getattr(entity, "composite", False)
    if composite:
        keyed = _composite_key(row, entity, record)
        if isinstance(keyed, Rejection):
            return keyed
        key, row = keyed
    else:
        key = row.get(entity.key_column)
        if key is None:
            field_name = entity.key_field or entity.key_column
            return Rejection(RejectReason.MISSING_KEY, f"event has no {field_name!r}", record)
        if not _valid_key(key):
            return Rejection(
                RejectReason.BAD_KEY, f"{entity.key_column!r} is not a string or integer", record
            )
        problem = entity.check_key(key)
        if problem is not None:
            return Rejection(RejectReason.BAD_KEY, problem, record)
        canonical = _single_key(entity, key)
        if canonical != key:  # converted ("2" to 2): the row holds the key as its column does
            key, row = canonical, {**row, entity.key_column: canonical}
    if change is ChangeType.DELETED:
        return Delete(key=key, record=record, version=version)
    try:
        if partial:
            row, missing = entity.prepare_patch(row)  # type: ignore[attr-defined]
            return Upsert(key, row, change, record, version, partial=True, missing=missing)
        row = entity.prepare_row(row)
    except ValueError as exc:
        return Rejection(RejectReason.INVALID_ROW, str(exc), record)
    return Upsert(key=key, row=row, change_type=change, record=record, version=version)


def _absent_key_field(entity: Entity, event: Mapping[str, Any]) -> str | None:
    """Return a key field the field map names that ``event`` lacks, or None."""
    fields = getattr(entity, "key_fields", None) or (entity.key_field,)
    for name in fields:
        if name is not None and name not in event:
            return name
    return None


def _composite_key(
    row: Mapping[str, Any], entity: Entity, record: Record
) -> tuple[tuple[str | int, ...], Mapping[str, Any]] | Rejection:
    """Return the composite key of ``row`` (the tuple of its key columns' values, each as its
    column holds it: ``Entity.canonical_key``) and ``row`` with those values, or why it has
    none."""
    parts = []
    for column, field_name in zip(entity.key_columns, entity.key_fields, strict=True):  # type: ignore[attr-defined]
        part = row.get(column)
        if part is None:
            return Rejection(
                RejectReason.MISSING_KEY, f"event has no {field_name or column!r}", record
            )
        if not _valid_key(part):
            return Rejection(RejectReason.BAD_KEY, f"{column!r} is not a string or integer", record)
        parts.append(part)
    key = tuple(parts)
    problem = entity.check_key(key)
    if problem is not None:
        return Rejection(RejectReason.BAD_KEY, problem, record)
    canonical = entity.canonical_key(key)  # type: ignore[attr-defined]
    if canonical == key:  # the usual case ("2" == 2 is False: a conversion is seen)
        return key, row
    columns = entity.key_columns  # type: ignore[attr-defined]
    return canonical, {**row, **dict(zip(columns, canonical, strict=True))}


def _version_of(
    event: Mapping[str, Any], record: Record, entity: Entity, clock: Clock
) -> Version | Rejection:
    field_name = entity.version_field
    if field_name is None:
        return clock.version(record)
    value = event.get(field_name)
    if isinstance(value, bool) or not isinstance(value, int):
        return Rejection(
            RejectReason.BAD_VERSION,
            f"version field {field_name!r} must be an integer, got {value!r}",
            record,
        )
    return (value, 0, 0)


def _route_tombstone(
    record: Record, entity: Entity, clock: Clock = BELIEVED, loads: JsonLoads = json.loads
) -> Decision:
    """A Kafka tombstone (null value) deletes the entity named by the record key: its text,
    or for a composite key (or a format with ``json_record_keys``) the JSON object of its
    key columns (``streams.core.keys.decode_record_key``)."""
    if not record.key:
        return Rejection(RejectReason.MISSING_KEY, "tombstone without a record key", record)
    if json_record_keys(entity):
        parts = decode_record_key(record.key, _key_columns(entity), loads)
        if isinstance(parts, BadKey):
            return Rejection(parts.reason, parts.detail, record)
        json_key: EntityKey = parts if getattr(entity, "composite", False) else parts[0]
        problem = entity.check_key(json_key)
        if problem is not None:
            return Rejection(RejectReason.BAD_KEY, problem, record)
        if type(json_key) is tuple:
            json_key = entity.canonical_key(json_key)  # type: ignore[attr-defined]
        else:
            json_key = _single_key(entity, json_key)
        return Delete(
            key=json_key, record=record, version=_tombstone_version(record, entity, clock)
        )
    try:
        key = record.key.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(
            RejectReason.BAD_ENCODING,
            f"tombstone key is not UTF-8: {exc}",
            record,
            type(exc).__name__,
        )
    problem = "tombstone key is empty" if not key else entity.check_key(key)
    if problem is not None:
        return Rejection(RejectReason.BAD_KEY, problem, record)
    return Delete(
        key=_single_key(entity, key),
        record=record,
        version=_tombstone_version(record, entity, clock),
    )


def _single_key(entity: Entity, key: Any) -> Any:
    """Return a single key (that ``check_key`` passed) as its column holds it, where the
    entity converts single keys (an integer column's ``"2"`` is ``2``, a UUID its lower-case
    text), so that what a producer wrote, or a tombstone's text record key, does not make a
    second key of one entity; else ``key`` itself."""
    if getattr(entity, "canonical_single_keys", False):
        return entity.canonical_key(key)  # type: ignore[attr-defined]
    return key


def _tombstone_version(record: Record, entity: Entity, clock: Clock) -> Version | None:
    """A tombstone's version: its record's position, or with a version field none of its own
    (it deletes what is there) unless its format gives it one (Debezium's, with versions from
    the LSN: the delete before it carries the version)."""
    if entity.version_field is None:
        return clock.version(record)
    return getattr(format_of(entity), "tombstone_version", None)


def route_batch(
    records: Iterable[Record],
    entity: Entity,
    loads: JsonLoads = json.loads,
    clock: Clock = BELIEVED,
) -> list[Decision]:
    """Route every record of a batch, in consumption order."""
    input_format = format_of(entity)
    composite = bool(getattr(entity, "composite", False))
    return [route(record, entity, loads, clock, input_format, composite) for record in records]


def entity_key_of(
    record: Record, entity: Entity, loads: JsonLoads = json.loads
) -> EntityKey | None:
    """Return the entity key a record is about, or None when it cannot be told.

    Used to repartition by entity key; a record without one is forwarded anyway and
    rejected, with its reason, where it is applied.
    """
    if record.value is None:
        decision = _route_tombstone(record, entity, loads=loads)
        return None if isinstance(decision, Rejection) else decision.key
    decoded = format_of(entity).decode(record, loads)
    if isinstance(decoded, Rejection):
        return None
    event = decoded[1]
    if getattr(entity, "composite", False):
        fields = entity.key_fields  # type: ignore[attr-defined]
        try:
            row = (
                {c: event.get(f) for c, f in zip(entity.key_columns, fields, strict=True)}  # type: ignore[attr-defined]
                if None not in fields
                else entity.row_from_event(event)
            )
        except Exception:  # a mapping that raises is rejected where the record is applied
            return None
        parts = tuple(row.get(c) for c in entity.key_columns)  # type: ignore[attr-defined]
        if not all(map(_valid_key, parts)) or entity.check_key(parts) is not None:
            return None
        return entity.canonical_key(parts)  # type: ignore[attr-defined,no-any-return]
    if entity.key_field is not None:
        key = event.get(entity.key_field)
    else:
        try:
            key = entity.row_from_event(event).get(entity.key_column)
        except Exception:  # a mapping that raises is rejected where the record is applied
            return None
    if not _valid_key(key):
        return None
    if getattr(entity, "canonical_single_keys", False):
        return None if entity.check_key(key) is not None else _single_key(entity, key)
    return key


def json_record_keys(entity: Entity) -> bool:
    """Tell whether ``entity``'s record keys are JSON objects of its key columns: always for
    a composite key; for a single one when its input format says ``json_record_keys``."""
    return bool(
        getattr(entity, "composite", False) or getattr(format_of(entity), "json_record_keys", False)
    )


def _key_columns(entity: Entity) -> tuple[str, ...]:
    columns: tuple[str, ...] = getattr(entity, "key_columns", None) or (entity.key_column,)
    return columns


def format_of(entity: Entity) -> InputFormat:
    """Return the input format of ``entity``'s records (``changeType`` JSON unless declared)."""
    declared: InputFormat | None = getattr(entity, "input_format", None)
    return CHANGE_TYPE_JSON if declared is None else declared
