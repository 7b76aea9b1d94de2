"""The bench's events as Debezium change events (``./run bench --inputs debezium``).

What Debezium's PostgreSQL connector writes for a table ``public.planet`` of the planet's
twelve fields (column names ``uuid``, ``name``, then the others as the bench names them; the
two JSON-valued fields as ``jsonb``), through Kafka Connect's JsonConverter with schemas on,
keys and values alike: compact JSON (Jackson writes no spaces), each value
``{"schema": <envelope schema>, "payload": {"before", "after", "source", "transaction", "op",
"ts_ms", "ts_us", "ts_ns"}}``,
each key ``{"schema": <key schema>, "payload": {"uuid": ...}}``.

A CREATED event becomes ``op: c``, an UPDATED one (or one without changeType) ``op: u``, both
with ``after`` the row and ``before`` null (``REPLICA IDENTITY DEFAULT``); a DELETED one becomes
``op: d`` with ``before`` holding the key alone, followed by a tombstone of the same key
(``tombstones.on.delete``, the connector's default). So the topic holds one record per event,
two per delete. The worker reads it as an entity declared ``__input_format__ = "debezium"``
(``bench/debezium_planet.py``) and Debezium's JDBC sink reads it natively
(``bench/peers/debezium_native.py``): the same bytes, reshaped for neither.
"""

from __future__ import annotations

import itertools
import json
from typing import Any, Final

import orjson

from bench.measure import Event

#: The name of the Debezium-input topics (``bench.paths.topic_of``) and of the input.
ENCODING: Final = "debezium-events"
#: The columns the source table has, by the field of the bench's event each comes from.
COLUMNS: Final = {"planetUuid": "uuid", "planetName": "name"}
#: Fields whose values are JSON (``jsonb`` at the source): Debezium writes them as JSON text.
JSON_FIELDS: Final = ("atmosphere", "tags")


def _column(field: str, kind: str, name: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": kind, "optional": field != "uuid"}
    if name is not None:
        schema.update(name=name, version=1)
    schema["field"] = field
    return schema


#: The row struct of ``public.planet`` (``before`` and ``after``), as Debezium types it.
ROW_FIELDS: Final = [
    _column("uuid", "string"),
    _column("name", "string"),
    _column("massKg", "double"),
    _column("radiusKm", "double"),
    _column("orbitalPeriodDays", "double"),
    _column("discoveredBy", "string"),
    _column("discoveredAt", "string", "io.debezium.time.ZonedTimestamp"),
    _column("habitable", "boolean"),
    _column("moons", "int32"),
    _column("atmosphere", "string", "io.debezium.data.Json"),
    _column("tags", "string", "io.debezium.data.Json"),
    _column("updatedBy", "string"),
]
#: The ``source`` block of the PostgreSQL connector (3.x); ``lsn`` and ``txId`` per event.
SOURCE: Final[dict[str, Any]] = {
    "version": "3.6.0.Final",
    "connector": "postgresql",
    "name": "bench",
    "ts_ms": 1_764_000_000_000,
    "snapshot": "false",
    "db": "bench",
    "sequence": None,
    "ts_us": 1_764_000_000_000_000,
    "ts_ns": 1_764_000_000_000_000_000,
    "schema": "public",
    "table": "planet",
    "txId": 0,
    "lsn": 0,
    "xmin": None,
}
_SOURCE_SCHEMA: Final = {
    "type": "struct",
    "fields": [
        {"type": "string", "optional": False, "field": "version"},
        {"type": "string", "optional": False, "field": "connector"},
        {"type": "string", "optional": False, "field": "name"},
        {"type": "int64", "optional": False, "field": "ts_ms"},
        {
            "type": "string",
            "optional": True,
            "name": "io.debezium.data.Enum",
            "version": 1,
            "parameters": {"allowed": "true,first,first_in_data_collection,last,false"},
            "default": "false",
            "field": "snapshot",
        },
        {"type": "string", "optional": False, "field": "db"},
        {"type": "string", "optional": True, "field": "sequence"},
        {"type": "int64", "optional": True, "field": "ts_us"},
        {"type": "int64", "optional": True, "field": "ts_ns"},
        {"type": "string", "optional": False, "field": "schema"},
        {"type": "string", "optional": False, "field": "table"},
        {"type": "int64", "optional": True, "field": "txId"},
        {"type": "int64", "optional": True, "field": "lsn"},
        {"type": "int64", "optional": True, "field": "xmin"},
    ],
    "optional": False,
    "name": "io.debezium.connector.postgresql.Source",
    "field": "source",
}
_ROW: Final = {
    "type": "struct",
    "fields": ROW_FIELDS,
    "optional": True,
    "name": "bench.public.planet.Value",
}
VALUE_SCHEMA: Final = {
    "type": "struct",
    "fields": [
        {**_ROW, "field": "before"},
        {**_ROW, "field": "after"},
        _SOURCE_SCHEMA,
        {
            "type": "struct",
            "fields": [
                {"type": "string", "optional": False, "field": "id"},
                {"type": "int64", "optional": False, "field": "total_order"},
                {"type": "int64", "optional": False, "field": "data_collection_order"},
            ],
            "optional": True,
            "name": "event.block",
            "version": 1,
            "field": "transaction",
        },
        {"type": "string", "optional": False, "field": "op"},
        {"type": "int64", "optional": True, "field": "ts_ms"},
        {"type": "int64", "optional": True, "field": "ts_us"},
        {"type": "int64", "optional": True, "field": "ts_ns"},
    ],
    "optional": False,
    "name": "bench.public.planet.Envelope",
    "version": 2,
}
KEY_SCHEMA: Final = {
    "type": "struct",
    "fields": [{"type": "string", "optional": False, "field": "uuid"}],
    "optional": False,
    "name": "bench.public.planet.Key",
}
_OPS: Final = {"CREATED": "c", "UPDATED": "u", None: "u"}
#: The wrappers' heads, joined as bytes once: a million events are encoded per workload.
_VALUE_HEAD: Final = b'{"schema":' + orjson.dumps(VALUE_SCHEMA) + b',"payload":'
_KEY_HEAD: Final = '{"schema":' + orjson.dumps(KEY_SCHEMA).decode() + ',"payload":{"uuid":'
#: A delete's ``before`` under ``REPLICA IDENTITY DEFAULT``: the key, every other column null.
_KEY_ONLY: Final[dict[str, Any]] = {column["field"]: None for column in ROW_FIELDS}
#: The source position of each event, rising as a connector's would.
_positions = itertools.count(24_000_000, 8)


def record_key(uuid: str, schemas: bool = True) -> str:
    """The record key the connector writes for the planet ``uuid`` (JsonConverter, schema on
    unless ``schemas`` is False)."""
    if not schemas:
        return json.dumps({"uuid": uuid}, separators=(",", ":"))
    return _KEY_HEAD + json.dumps(uuid) + "}}"


def source_row(body: dict[str, Any]) -> dict[str, Any]:
    """The source table's row holding the bench event ``body``'s fields (no changeType)."""
    row: dict[str, Any] = {}
    for field, value in body.items():
        if field == "changeType":
            continue
        if field in JSON_FIELDS:
            value = orjson.dumps(value).decode()
        row[COLUMNS.get(field, field)] = value
    return row


def encode_event(event: Event, schemas: bool = True) -> tuple[Event, ...]:
    """The records the connector writes for the change ``event`` says: its change event, and
    a tombstone after a delete (``schemas`` False: the JsonConverter's schemas off, the
    envelope alone, about 800 bytes)."""
    assert event.value is not None
    body = orjson.loads(event.value)
    change = body.get("changeType")
    key = record_key(event.key, schemas)
    position = next(_positions)
    source = {**SOURCE, "txId": position // 8, "lsn": position}
    if change == "DELETED":
        before, after, op = {**_KEY_ONLY, "uuid": event.key}, None, "d"
    else:
        before, after, op = None, source_row(body), _OPS[change]
    ts_ms = SOURCE["ts_ms"]
    payload = {
        "before": before,
        "after": after,
        "source": source,
        # No transaction metadata (provide.transaction.metadata=false): null, but written.
        "transaction": None,
        "op": op,
        "ts_ms": ts_ms,
        "ts_us": ts_ms * 1_000,
        "ts_ns": ts_ms * 1_000_000,
    }
    value = orjson.dumps(payload)
    if schemas:
        value = _VALUE_HEAD + value + b"}"
    if change == "DELETED":
        return Event(key, value), Event(key, None)
    return (Event(key, value),)
