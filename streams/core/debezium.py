"""Debezium change events as an input format (:mod:`streams.core.formats`'s interface).

Two shapes, each with or without Kafka Connect's JsonConverter wrapper
(``{"schema": ..., "payload": ...}``, told apart per record):

- :class:`DebeziumEnvelope` (``"debezium"``): the change event itself,
  ``{"before", "after", "source", "op", "ts_ms", ...}``. ``c`` and ``r`` (a snapshot read) are
  CREATED, ``u`` UPDATED (from ``after``), ``d`` DELETED (from ``before``, which under
  ``REPLICA IDENTITY DEFAULT`` holds only the key columns). ``t`` (truncate) and ``m`` (a
  logical decoding message) are not mirrored: rejected as ``not_mirrored``.
- :class:`DebeziumFlat` (``"debezium-flat"``): the rows Debezium's ``ExtractNewRecordState``
  transform writes: the row itself, ``__deleted`` (``"true"``/``"false"`` or a boolean) when
  deletes are rewritten, ``__op``, ``__lsn``, ``__source_ts_ms`` ... when ``add.fields`` asks.

A delete's tombstone has no value: routing deletes by the record key, whatever the format (the
record key, Debezium's JSON object of the key columns, is read by the record-key decoder for
every format with :attr:`json_record_keys`). With versions from the source position
(``__version_from__ = "source.lsn"``) a tombstone has the least version (:data:`TOMBSTONE_VERSION`):
the delete before it carries the LSN, and a tombstone re-emitted by a restarted connector must
not delete a row an event has versioned since.

Values are converted to what their columns take (:mod:`streams.core.debezium_values`): by the
schema's logical types when the wrapper is there, with the converters built once per distinct
schema (the schema's bytes are the cache key, and a known schema is not parsed again), or by the
target columns' kinds without it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from streams.core.changetype_json import decode_value
from streams.core.debezium_values import (
    Converters,
    Target,
    convert_row,
    schema_converters,
    schemaless_converters,
)
from streams.core.decisions import ChangeType, Rejection, RejectReason
from streams.core.formats import Change
from streams.core.records import JsonLoads, Record, Version

#: The event field a Debezium format puts the source's LSN in (and the flattened rows'
#: ``add.fields=lsn`` name): the entity's version field under ``__version_from__``.
LSN_FIELD: Final = "__lsn"

#: A tombstone's version when versions come from the source position (see the module doc).
TOMBSTONE_VERSION: Version = (0, 0, 0)

_OPS: Mapping[str, ChangeType] = {
    "c": ChangeType.CREATED,
    "r": ChangeType.CREATED,
    "u": ChangeType.UPDATED,
    "d": ChangeType.DELETED,
}
_NOT_MIRRORED: Mapping[str, str] = {
    "t": (
        "a truncate (op 't') is not mirrored: empty the mirrored table yourself, or keep 't' "
        "in the connector's skipped.operations (its default)"
    ),
    "m": (
        "a logical decoding message (op 'm') is not a row change: leave its prefix out of "
        "this topic (the connector's message.prefix.exclude.list)"
    ),
}


def _change_of(op: Any, name: str, record: Record) -> ChangeType | Rejection:
    """Return the change Debezium's ``op`` (or a flattened row's ``__op``) says, or why none."""
    if isinstance(op, str):
        change = _OPS.get(op)
        if change is not None:
            return change
        if op in _NOT_MIRRORED:
            return Rejection(RejectReason.NOT_MIRRORED, _NOT_MIRRORED[op], record)
    return Rejection(
        RejectReason.UNKNOWN_CHANGE_TYPE,
        f"{name} {op!r:.40} is not one of c, r, u, d (t, m are not mirrored)",
        record,
    )


#: What Debezium writes for a value an update did not carry (an unchanged TOASTed value under
#: ``REPLICA IDENTITY DEFAULT``; ``unavailable.value.placeholder``), as text and as bytes
#: (base64, as the JsonConverter writes bytes).
UNAVAILABLE: Final = "__debezium_unavailable_value"
UNAVAILABLE_BASE64: Final = "X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ=="

_WRAPPER_HEAD: Final = b'{"schema":'
_PAYLOAD_KEY: Final = b',"payload":'
_UNPARSED: Final[Any] = object()
#: Distinct schemas kept per format object; beyond this the cache starts again.
SCHEMA_CACHE_SIZE: Final = 256


class _DebeziumFormat:
    """What both shapes share: the wrapper, the converters and their cache, the LSN.

    One object per entity, shared by the threads that route its partitions' batches
    (``asyncio.to_thread``): its caches change only by single assignments and dict operations,
    each atomic, and a lost update costs one more parse of a schema, never a wrong converter.
    """

    name = ""
    json_record_keys = True
    """The record key is Debezium's JSON object of the key columns (``streams/core/keys.py``)."""
    tombstone_version: Version | None = None
    """A tombstone's version when the entity has a version field (None: it deletes what is
    there); :data:`TOMBSTONE_VERSION` with versions from the LSN."""

    def __init__(
        self,
        targets: Mapping[str, Target] | None = None,
        *,
        version_from_lsn: bool = False,
        partial_updates: bool = False,
    ) -> None:
        self.partial_updates = partial_updates
        """The model takes partial updates: a column an update does not carry is left out."""
        self._targets = dict(targets) if targets is not None else None
        self._schemaless = schemaless_converters(self._targets)
        self._schemas: dict[bytes, Converters | None] = {}
        self._last: tuple[bytes, Converters] | None = None
        """The schema part (through ``,"payload":``) of the last wrapped record, and its
        converters: a topic's records mostly share one schema."""
        self.version_from_lsn = version_from_lsn
        if version_from_lsn:
            self.tombstone_version = TOMBSTONE_VERSION

    def _row_fields(self, schema: Mapping[str, Any]) -> object:
        """Return the field list of the row struct in a value's Connect schema."""
        raise NotImplementedError

    def decode(self, record: Record, loads: JsonLoads = json.loads) -> Change | Rejection:
        """Return the change ``record`` carries, or why it carries none."""
        raise NotImplementedError

    def _converters_of(self, schema: object) -> Converters | None:
        """Return the converters a value schema asks for (None: not a Connect struct schema)."""
        if not isinstance(schema, dict) or schema.get("type") != "struct":
            return None
        try:
            return schema_converters(self._row_fields(schema), self._targets)
        except ValueError:
            return None

    def _payload(
        self, record: Record, loads: JsonLoads
    ) -> tuple[dict[str, Any], Converters] | Rejection:
        """Return the record's payload and its converters; a known schema is not parsed again."""
        raw = record.value
        if raw is not None and raw.startswith(_WRAPPER_HEAD):
            found = self._unwrap(raw, loads)
            if found is not None:
                if isinstance(found[0], dict):
                    return found
                return Rejection(RejectReason.NOT_AN_OBJECT, "the payload is not an object", record)
        value = decode_value(record, loads)
        if isinstance(value, Rejection):
            return value
        if len(value) == 2 and "schema" in value and "payload" in value:
            # The wrapper, written otherwise than the JsonConverter writes it: the slow way.
            converters = self._converters_of(value["schema"])
            if converters is None:
                return Rejection(
                    RejectReason.NOT_AN_OBJECT,
                    "the value's schema is not a Kafka Connect struct schema",
                    record,
                )
            payload = value["payload"]
            if not isinstance(payload, dict):
                return Rejection(RejectReason.NOT_AN_OBJECT, "the payload is not an object", record)
            return payload, converters
        return value, self._schemaless

    def _unwrap(self, raw: bytes, loads: JsonLoads) -> tuple[Any, Converters] | None:
        """Return the payload of a value the JsonConverter wrote and its converters, parsing
        only the payload when the schema is known (None: decode the value whole)."""
        if not raw.endswith(b"}"):
            return None
        last = self._last
        if last is not None and raw.startswith(last[0]):
            # The usual case: the schema of the record before (a memcmp, no hash, no copy).
            head, converters = last
        else:
            split = raw.find(_PAYLOAD_KEY)
            if split <= 0:
                return None
            schema_bytes = raw[:split]
            head = raw[: split + len(_PAYLOAD_KEY)]
            known = self._schemas.get(schema_bytes, _UNPARSED)
            learnt = self._learn(schema_bytes, loads) if known is _UNPARSED else known
            if learnt is None:
                return None
            converters = learnt
            self._last = (head, converters)
        try:
            return loads(raw[len(head) : -1]), converters
        except ValueError:
            return None  # not what it looked like: decoded whole

    def _learn(self, schema_bytes: bytes, loads: JsonLoads) -> Converters | None:
        try:
            schema = loads(schema_bytes[len(_WRAPPER_HEAD) :])
        except ValueError:
            return None
        converters = self._converters_of(schema)
        if len(self._schemas) >= SCHEMA_CACHE_SIZE:
            self._schemas.clear()
        self._schemas[schema_bytes] = converters
        return converters

    def _finish(
        self,
        change: ChangeType,
        row: dict[str, Any],
        converters: Converters,
        lsn: Any,
        record: Record,
    ) -> Change | Rejection:
        if change is ChangeType.UPDATED:
            values = row.values()
            if UNAVAILABLE in values or UNAVAILABLE_BASE64 in values:
                unavailable = self._drop_unavailable(row, record)
                if unavailable is not None:
                    return unavailable
        problem = convert_row(converters, row) if converters else None
        if problem is not None:
            return Rejection(RejectReason.INVALID_ROW, problem, record)
        if self.version_from_lsn:
            if isinstance(lsn, bool) or not isinstance(lsn, int):
                return Rejection(
                    RejectReason.BAD_VERSION,
                    f"the event has no integer LSN ({lsn!r:.40}), which __version_from__ = "
                    f"'source.lsn' needs{self._lsn_help}",
                    record,
                )
            row[LSN_FIELD] = lsn
        return change, row

    _lsn_help = ""

    def _drop_unavailable(self, row: dict[str, Any], record: Record) -> Rejection | None:
        """Leave out the columns an update does not carry (unchanged TOASTed values, which
        Debezium writes as a placeholder), or refuse the update when they would be written."""
        names = [k for k, v in row.items() if v in (UNAVAILABLE, UNAVAILABLE_BASE64)]
        if not self.partial_updates:
            return Rejection(
                RejectReason.INVALID_ROW,
                f"{', '.join(repr(n) for n in names)} holds Debezium's placeholder of a value "
                "the update did not carry (an unchanged TOASTed value): set REPLICA IDENTITY "
                "FULL on the source table, or declare __partial_updates__ to keep the column",
                record,
            )
        for name in names:
            del row[name]
        return None


class DebeziumEnvelope(_DebeziumFormat):
    """Debezium's change-event envelope, with or without the JsonConverter's schema."""

    name = "debezium"

    def _row_fields(self, schema: Mapping[str, Any]) -> object:
        for field_schema in schema.get("fields") or ():
            if isinstance(field_schema, dict) and field_schema.get("field") in ("after", "before"):
                return field_schema.get("fields")
        raise ValueError("the envelope's schema has neither 'after' nor 'before'")

    def decode(self, record: Record, loads: JsonLoads = json.loads) -> Change | Rejection:
        """Return the change a Debezium change event carries, or why it carries none."""
        payload = self._payload(record, loads)
        if isinstance(payload, Rejection):
            return payload
        event, converters = payload
        op = event.get("op")
        if op is None:
            return Rejection(
                RejectReason.UNKNOWN_CHANGE_TYPE,
                "not a Debezium change event: it has no 'op'",
                record,
            )
        change = _change_of(op, "op", record)
        if isinstance(change, Rejection):
            return change
        side = "before" if change is ChangeType.DELETED else "after"
        row = event.get(side)
        if not isinstance(row, dict):
            return Rejection(
                RejectReason.NO_ROW, f"op {op!r} without an {side!r} row ({row!r:.40})", record
            )
        source = event.get("source")
        lsn = source.get("lsn") if self.version_from_lsn and isinstance(source, dict) else None
        return self._finish(change, row, converters, lsn, record)


#: The ``__deleted`` values of ``ExtractNewRecordState``'s rewrite mode (text in Debezium's own
#: transform, a boolean when another tool flattens).
_DELETED: Mapping[Any, bool] = {"true": True, "false": False, True: True, False: False}
_MARKER_TYPES = (str, bool)


class DebeziumFlat(_DebeziumFormat):
    """The rows of Debezium's ``ExtractNewRecordState`` transform, with or without schemas."""

    name = "debezium-flat"
    _lsn_help = ": add lsn to the transform's add.fields"

    def _row_fields(self, schema: Mapping[str, Any]) -> object:
        return schema.get("fields")

    def decode(self, record: Record, loads: JsonLoads = json.loads) -> Change | Rejection:
        """Return the change a flattened row carries: a delete when ``__deleted`` is true
        (rewrite mode) or ``__op`` is ``d``, else what ``__op`` says (no ``__op``: UPDATED)."""
        payload = self._payload(record, loads)
        if isinstance(payload, Rejection):
            return payload
        row, converters = payload
        raw_deleted = row.get("__deleted", False)
        deleted = _DELETED.get(raw_deleted) if type(raw_deleted) in _MARKER_TYPES else None
        if deleted is None:
            return Rejection(
                RejectReason.UNKNOWN_CHANGE_TYPE,
                f"__deleted {raw_deleted!r:.40} is not true or false",
                record,
            )
        op = row.get("__op")
        if deleted:
            change = ChangeType.DELETED
        elif op is None:
            change = ChangeType.UPDATED
        else:
            said = _OPS.get(op) if type(op) is str else None
            if said is None:
                rejected = _change_of(op, "__op", record)
                assert isinstance(rejected, Rejection)
                return rejected
            change = said
        return self._finish(change, row, converters, row.get(LSN_FIELD), record)


FORMATS: Mapping[str, type[_DebeziumFormat]] = {
    DebeziumEnvelope.name: DebeziumEnvelope,
    DebeziumFlat.name: DebeziumFlat,
}
"""The Debezium formats by the name an entity declares."""
