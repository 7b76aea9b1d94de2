"""Debezium change events written by hand, in the shapes Debezium 3.x's PostgreSQL connector and
Kafka Connect's JsonConverter write (read from their documentation and sources): the envelope,
its Connect schema, the flattened rows of ``ExtractNewRecordState``. Shared by the unit and the
integration tests.
"""

from __future__ import annotations

import json
from typing import Any

#: The ``source`` block of a PostgreSQL change event (Debezium 3.x), the LSN given per event.
SOURCE = {
    "version": "3.1.0.Final",
    "connector": "postgresql",
    "name": "dbserver1",
    "ts_ms": 1_700_000_000_000,
    "snapshot": "false",
    "db": "shop",
    "sequence": '[null,"24023128"]',
    "schema": "public",
    "table": "customer",
    "txId": 555,
    "lsn": 24023128,
    "xmin": None,
}

SOURCE_SCHEMA = {
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
            "parameters": {"allowed": "true,last,false,incremental"},
            "default": "false",
            "field": "snapshot",
        },
        {"type": "string", "optional": False, "field": "db"},
        {"type": "string", "optional": True, "field": "sequence"},
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

#: The row schema of ``public.customer`` (id text, name varchar, born date, seen timestamp(6),
#: at timestamptz, price numeric(10,2), photo bytea, prefs jsonb, opens time(6), note jsonb
#: mirrored into a text column).
ROW_FIELDS: list[dict[str, Any]] = [
    {"type": "string", "optional": False, "field": "id"},
    {"type": "string", "optional": True, "field": "name"},
    {
        "type": "int32",
        "optional": True,
        "name": "io.debezium.time.Date",
        "version": 1,
        "field": "born",
    },
    {
        "type": "int64",
        "optional": True,
        "name": "io.debezium.time.MicroTimestamp",
        "version": 1,
        "field": "seen",
    },
    {
        "type": "string",
        "optional": True,
        "name": "io.debezium.time.ZonedTimestamp",
        "version": 1,
        "field": "at",
    },
    {
        "type": "bytes",
        "optional": True,
        "name": "org.apache.kafka.connect.data.Decimal",
        "version": 1,
        "parameters": {"scale": "2", "connect.decimal.precision": "10"},
        "field": "price",
    },
    {"type": "bytes", "optional": True, "field": "photo"},
    {
        "type": "string",
        "optional": True,
        "name": "io.debezium.data.Json",
        "version": 1,
        "field": "prefs",
    },
    {
        "type": "int64",
        "optional": True,
        "name": "io.debezium.time.MicroTime",
        "version": 1,
        "field": "opens",
    },
    {
        "type": "string",
        "optional": True,
        "name": "io.debezium.data.Json",
        "version": 1,
        "field": "note",
    },
]


def envelope_schema(row_fields: list[dict[str, Any]] = ROW_FIELDS) -> dict[str, Any]:
    """The JsonConverter's schema of a change event whose rows have ``row_fields``."""
    value = {
        "type": "struct",
        "fields": row_fields,
        "optional": True,
        "name": "dbserver1.public.customer.Value",
    }
    return {
        "type": "struct",
        "fields": [
            {**value, "field": "before"},
            {**value, "field": "after"},
            SOURCE_SCHEMA,
            {"type": "string", "optional": False, "field": "op"},
            {"type": "int64", "optional": True, "field": "ts_ms"},
            {"type": "int64", "optional": True, "field": "ts_us"},
            {"type": "int64", "optional": True, "field": "ts_ns"},
        ],
        "optional": False,
        "name": "dbserver1.public.customer.Envelope",
        "version": 2,
    }


def envelope(
    op: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    lsn: int = 24023128,
    snapshot: str = "false",
) -> dict[str, Any]:
    """A change event (the JsonConverter's payload)."""
    return {
        "before": before,
        "after": after,
        "source": {**SOURCE, "lsn": lsn, "snapshot": snapshot},
        "transaction": None,
        "op": op,
        "ts_ms": 1_700_000_000_100,
        "ts_us": 1_700_000_000_100_000,
        "ts_ns": 1_700_000_000_100_000_000,
    }


def compact(value: Any) -> bytes:
    """JSON as Kafka Connect's JsonConverter (Jackson) writes it: no spaces."""
    return json.dumps(value, separators=(",", ":")).encode()


def with_schema(payload: Any, schema: dict[str, Any] | None = None) -> bytes:
    """The value the JsonConverter writes with ``schemas.enable=true``."""
    return compact({"schema": schema or envelope_schema(), "payload": payload})


def key_of(**columns: Any) -> bytes:
    """The record key Debezium writes (schemas off): a JSON object of the key columns."""
    return compact(columns)
