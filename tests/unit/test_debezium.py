"""Debezium change events as an input format (streams/core/debezium.py): every op, with and
without the JsonConverter's schema, the flattened rows, the rejections, versions from the LSN."""

from __future__ import annotations

import dataclasses
import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pytest

from models.registry import build_spec, default_registry
from streams.core.debezium import (
    LSN_FIELD,
    TOMBSTONE_VERSION,
    DebeziumEnvelope,
    DebeziumFlat,
)
from streams.core.decisions import ChangeType, Delete, Rejection, RejectReason, Upsert
from streams.core.guard import Current, resolve
from streams.core.records import SourceRecord
from streams.core.routing import route, route_batch
from tests.debezium_events import compact, envelope, envelope_schema, key_of, with_schema
from tests.models.debezium_customers import DbzCustomer, FlatCustomer

for _model in (DbzCustomer, FlatCustomer):
    default_registry.unregister(_model)  # declared for the worker tests, not for this process
ENVELOPE = build_spec(DbzCustomer)
FLAT = build_spec(FlatCustomer)

ROW = {"id": "c1", "name": "Ada", "born": 19000}
KEY_ONLY = {
    "id": "c1",
    "name": None,
    "born": None,
    "seen": None,
    "at": None,
    "price": None,
    "photo": None,
    "prefs": None,
    "opens": None,
    "note": None,
}


def record(value: bytes | None, key: bytes | None = None, offset: int = 7) -> SourceRecord:
    return SourceRecord("dbserver1.public.customer", 0, offset, 1_700_000_000_000, key, value)


def plain(value: Any) -> bytes:
    return json.dumps(value).encode()


SHAPES = {"schemaless": plain, "schema": with_schema}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("op", "change"), [("c", ChangeType.CREATED), ("r", ChangeType.CREATED)])
def test_a_create_and_a_snapshot_read_create_the_row_from_after(
    shape: str, op: str, change: ChangeType
) -> None:
    decision = route(record(SHAPES[shape](envelope(op, after=ROW))), ENVELOPE)
    assert isinstance(decision, Upsert), decision
    assert decision.change_type is change and decision.key == "c1"
    assert decision.row["name"] == "Ada" and decision.row["born"] == date(2022, 1, 8)


@pytest.mark.parametrize("shape", SHAPES)
def test_an_update_takes_after_and_ignores_before(shape: str) -> None:
    event = envelope("u", before={**ROW, "name": "Old"}, after={**ROW, "name": "New"})
    decision = route(record(SHAPES[shape](event)), ENVELOPE)
    assert isinstance(decision, Upsert) and decision.change_type is ChangeType.UPDATED
    assert decision.row["name"] == "New"


@pytest.mark.parametrize("shape", SHAPES)
def test_a_delete_takes_the_key_from_before_which_may_hold_only_the_key(shape: str) -> None:
    # REPLICA IDENTITY DEFAULT: ``before`` holds the key columns, the others are null.
    decision = route(record(SHAPES[shape](envelope("d", before=KEY_ONLY))), ENVELOPE)
    assert isinstance(decision, Delete) and decision.key == "c1"


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("op", ["t", "m"])
def test_truncate_and_messages_are_dead_letters_saying_they_are_not_mirrored(
    shape: str, op: str
) -> None:
    event = envelope(op)
    if op == "m":
        event["message"] = {"prefix": "audit", "content": "aGk="}
    decision = route(record(SHAPES[shape](event)), ENVELOPE)
    assert isinstance(decision, Rejection) and decision.reason is RejectReason.NOT_MIRRORED
    assert "not mirrored" in decision.detail or "not a row change" in decision.detail


@pytest.mark.parametrize(
    ("event", "reason", "detail"),
    [
        (envelope("c"), RejectReason.NO_ROW, "op 'c' without an 'after' row"),
        (envelope("u"), RejectReason.NO_ROW, "op 'u' without an 'after' row"),
        (envelope("d"), RejectReason.NO_ROW, "op 'd' without a"),
        (envelope("x", after=ROW), RejectReason.UNKNOWN_CHANGE_TYPE, "op 'x' is not one of"),
        ({"changeType": "CREATED"}, RejectReason.UNKNOWN_CHANGE_TYPE, "has no 'op'"),
        (envelope("c", after={"name": "keyless"}), RejectReason.MISSING_KEY, "'id'"),
        (envelope("d", before={"name": "x"}), RejectReason.MISSING_KEY, "'id'"),
        ([1, 2], RejectReason.NOT_AN_OBJECT, "list"),
    ],
)
def test_what_the_declaration_cannot_map_is_rejected_with_its_reason(
    event: Any, reason: RejectReason, detail: str
) -> None:
    decision = route(record(plain(event)), ENVELOPE)
    assert isinstance(decision, Rejection), decision
    assert decision.reason is reason and detail in decision.detail, decision.detail


def test_bad_bytes_are_rejected_as_for_any_format() -> None:
    not_json = route(record(b'{"schema":{"type":"struct"},"payload":{'), ENVELOPE)
    assert isinstance(not_json, Rejection) and not_json.reason is RejectReason.BAD_JSON
    not_utf8 = route(record(b'{"op":"c","after":{"id":"\xff"}}'), ENVELOPE)
    assert isinstance(not_utf8, Rejection) and not_utf8.reason is RejectReason.BAD_ENCODING


def test_a_primary_key_change_is_a_delete_of_the_old_key_and_a_create_of_the_new() -> None:
    # Debezium emits ``d`` of the old key, its tombstone, then ``c`` of the new key.
    events = [
        record(plain(envelope("c", after={**ROW, "id": "old"}, lsn=100)), offset=1),
        record(plain(envelope("d", before={**KEY_ONLY, "id": "old"}, lsn=200)), offset=2),
        record(None, key=key_of(id="old"), offset=3),
        record(plain(envelope("c", after={**ROW, "id": "new"}, lsn=200)), offset=4),
    ]
    plan = resolve(route_batch(events, ENVELOPE), {})
    assert set(plan.upserts) == {"new"}
    assert "old" in plan.deletes


def test_a_schema_with_spaces_or_other_key_order_is_read_the_slow_way() -> None:
    value = json.dumps({"payload": envelope("c", after=ROW), "schema": envelope_schema()})
    decision = route(record(value.encode()), ENVELOPE)
    assert isinstance(decision, Upsert) and decision.row["born"] == date(2022, 1, 8)


def test_a_known_schema_is_parsed_once_and_its_converters_kept() -> None:
    fmt = DebeziumEnvelope({"id": ENVELOPE_TARGETS["id"], "born": ENVELOPE_TARGETS["born"]})
    parsed: list[bytes] = []

    def loads(raw: bytes) -> Any:
        parsed.append(bytes(raw[:12]))
        return json.loads(raw)

    for n in range(3):
        decoded = fmt.decode(
            record(with_schema(envelope("c", after={**ROW, "id": f"c{n}"}))), loads
        )
        assert not isinstance(decoded, Rejection) and decoded[1]["born"] == date(2022, 1, 8)
    schema_parses = [p for p in parsed if p.startswith(b'{"type":"str')]
    assert len(schema_parses) == 1, parsed  # the later records parse their payload only


def test_a_changed_schema_gets_its_own_converters() -> None:
    renamed = [
        dict(f, field="born_on") if f["field"] == "born" else f
        for f in envelope_schema()["fields"][0]["fields"]
    ]
    fmt = DebeziumEnvelope({"born": ENVELOPE_TARGETS["born"], "born_on": ENVELOPE_TARGETS["born"]})
    first = fmt.decode(record(with_schema(envelope("c", after=ROW))), json.loads)
    second = fmt.decode(
        record(
            with_schema(envelope("c", after={"id": "c1", "born_on": 1}), envelope_schema(renamed))
        ),
        json.loads,
    )
    assert not isinstance(first, Rejection) and first[1]["born"] == date(2022, 1, 8)
    assert not isinstance(second, Rejection) and second[1]["born_on"] == date(1970, 1, 2)


ENVELOPE_TARGETS = ENVELOPE.input_format._targets  # type: ignore[union-attr]


# --- versions from the source position ------------------------------------------------------


def test_the_version_comes_from_source_lsn() -> None:
    decision = route(record(plain(envelope("u", after=ROW, lsn=987_654))), ENVELOPE)
    assert isinstance(decision, Upsert) and decision.version == (987_654, 0, 0)
    assert LSN_FIELD not in decision.row


def test_an_event_without_an_lsn_is_rejected_when_versions_come_from_it() -> None:
    event = envelope("c", after=ROW)
    del event["source"]["lsn"]
    decision = route(record(plain(event)), ENVELOPE)
    assert isinstance(decision, Rejection) and decision.reason is RejectReason.BAD_VERSION
    assert "source.lsn" in decision.detail


def test_a_reemitted_old_event_does_not_move_a_newer_row_back() -> None:
    # A connector that restarts emits events again, at later offsets: their LSN is older.
    old = route(
        record(plain(envelope("u", after={**ROW, "name": "Old"}, lsn=100)), offset=90), ENVELOPE
    )
    plan = resolve([old], {"c1": Current(row=(500, 0, 0))})
    assert not plan.upserts and plan.outcomes[0][1].value == "skipped"


def test_a_tombstone_under_lsn_versions_deletes_nothing_an_event_has_versioned() -> None:
    tombstone = route(record(None, key=b'{"id": "c1"}'), ENVELOPE)
    assert isinstance(tombstone, Delete) and tombstone.version == TOMBSTONE_VERSION
    # Re-emitted ``d`` + tombstone of a row created again since: neither deletes it.
    stale_delete = route(record(plain(envelope("d", before=KEY_ONLY, lsn=100)), offset=8), ENVELOPE)
    plan = resolve([stale_delete, tombstone], {"c1": Current(row=(500, 0, 0))})
    assert not plan.deletes
    assert [o.value for _, o in plan.outcomes] == ["skipped", "skipped"]


def test_without_lsn_versions_a_tombstone_has_the_records_position() -> None:
    tombstone = route(record(None, key=b'{"id": "c1"}'), FLAT)
    assert isinstance(tombstone, Delete) and tombstone.version == (1_700_000_000_000, 0, 7)


def test_formats_say_their_record_keys_are_json_objects() -> None:
    assert DebeziumEnvelope().json_record_keys and DebeziumFlat().json_record_keys


# --- the flattened rows of ExtractNewRecordState -----------------------------------------------


FLAT_SCHEMA_FIELDS = [
    *envelope_schema()["fields"][0]["fields"],
    {"type": "string", "optional": True, "field": "__deleted"},
    {"type": "string", "optional": True, "field": "__op"},
    {"type": "int64", "optional": True, "field": "__lsn"},
    {"type": "int64", "optional": True, "field": "__source_ts_ms"},
]
FLAT_SCHEMA = {
    "type": "struct",
    "fields": FLAT_SCHEMA_FIELDS,
    "optional": False,
    "name": "flat.public.customer.Value",
}


def flat_value(shape: str, row: dict[str, Any]) -> bytes:
    return with_schema(row, FLAT_SCHEMA) if shape == "schema" else plain(row)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    ("extra", "change"),
    [
        ({}, ChangeType.UPDATED),
        ({"__deleted": "false"}, ChangeType.UPDATED),
        ({"__deleted": False, "__op": "c"}, ChangeType.CREATED),
        ({"__deleted": "false", "__op": "r"}, ChangeType.CREATED),
        ({"__deleted": "false", "__op": "u"}, ChangeType.UPDATED),
    ],
)
def test_a_flattened_row_is_an_upsert(
    shape: str, extra: dict[str, Any], change: ChangeType
) -> None:
    decision = route(record(flat_value(shape, {**ROW, **extra, "__source_ts_ms": 1})), FLAT)
    assert isinstance(decision, Upsert) and decision.change_type is change
    assert decision.row["born"] == date(2022, 1, 8) and "__deleted" not in decision.row


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    "extra",
    [{"__deleted": "true"}, {"__deleted": True}, {"__deleted": "true", "__op": "d"}, {"__op": "d"}],
)
def test_a_rewritten_delete_deletes(shape: str, extra: dict[str, Any]) -> None:
    decision = route(record(flat_value(shape, {**KEY_ONLY, **extra})), FLAT)
    assert isinstance(decision, Delete) and decision.key == "c1"


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"__deleted": "maybe"}, RejectReason.UNKNOWN_CHANGE_TYPE),
        ({"__op": "x"}, RejectReason.UNKNOWN_CHANGE_TYPE),
        ({"__op": "t"}, RejectReason.NOT_MIRRORED),
    ],
)
def test_a_flattened_row_saying_nothing_known_is_rejected(
    extra: dict[str, Any], reason: RejectReason
) -> None:
    decision = route(record(plain({**ROW, **extra})), FLAT)
    assert isinstance(decision, Rejection) and decision.reason is reason


def test_a_flattened_rows_lsn_is_its_version_when_declared() -> None:
    fmt = DebeziumFlat(version_from_lsn=True)
    decoded = fmt.decode(record(plain({**ROW, "__lsn": 42})), json.loads)
    assert not isinstance(decoded, Rejection) and decoded[1][LSN_FIELD] == 42
    missing = fmt.decode(record(plain(ROW)), json.loads)
    assert isinstance(missing, Rejection) and "add.fields" in missing.detail


def test_a_flat_tombstone_deletes_by_the_record_key() -> None:
    decision = route(record(None, key=b'{"id": "c1"}'), FLAT)
    assert isinstance(decision, Delete) and decision.key == "c1"


# --- values ------------------------------------------------------------------------------------


def test_with_a_schema_every_logical_type_reaches_its_column_as_it_takes_it() -> None:
    row = {
        "id": "c1",
        "name": "Ada",
        "born": 19000,
        "seen": 1_700_000_000_123_456,
        "at": "2024-05-01T10:15:30.123456Z",
        "price": "AeJA",
        "photo": "AQID",
        "prefs": '{"tea": true}',
        "opens": 34_200_000_000,
        "note": '{"tea": true}',
    }
    decision = route(record(with_schema(envelope("c", after=row))), ENVELOPE)
    assert isinstance(decision, Upsert), decision
    got = dict(decision.row)
    assert got["born"] == date(2022, 1, 8)
    assert got["seen"] == datetime(2023, 11, 14, 22, 13, 20, 123456)
    assert got["at"].isoformat() == "2024-05-01T10:15:30.123456+00:00"
    assert got["price"] == Decimal("1234.56")
    assert got["photo"] == b"\x01\x02\x03"
    assert got["prefs"] == {"tea": True}
    assert got["note"] == '{"tea": true}'  # a text column keeps the document's text
    assert got["opens"].isoformat() == "09:30:00"


def test_without_a_schema_values_are_converted_by_their_columns_where_unambiguous() -> None:
    # As the README recommends: decimal.handling.mode=string, time.precision.mode=isostring.
    row = {
        "id": "c1",
        "name": "Ada",
        "born": "2022-01-08Z",
        "seen": "2023-11-14T22:13:20.123456Z",
        "at": "2024-05-01T10:15:30.123456Z",
        "price": "1234.56",
        "photo": "AQID",
        "prefs": '{"tea": true}',
        "opens": "09:30:00Z",
    }
    decision = route(record(plain(envelope("c", after=row))), ENVELOPE)
    assert isinstance(decision, Upsert), decision
    got = dict(decision.row)
    assert got["born"] == date(2022, 1, 8)
    assert got["price"] == Decimal("1234.56") and got["photo"] == b"\x01\x02\x03"
    assert got["prefs"] == {"tea": True} and got["opens"].hour == 9
    days = route(record(plain(envelope("c", after={**row, "born": 19000}))), ENVELOPE)
    assert isinstance(days, Upsert) and days.row["born"] == date(2022, 1, 8)


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("seen", 1_700_000_000_123_456, "time.precision.mode=isostring"),
        ("opens", 34_200_000_000, "ambiguous"),
        ("price", "AeJA", "decimal.handling.mode=string"),
        ("photo", "not base64!", "photo"),
    ],
)
def test_without_a_schema_an_ambiguous_value_is_rejected_saying_what_to_configure(
    field: str, value: Any, says: str
) -> None:
    decision = route(record(plain(envelope("c", after={**ROW, field: value}))), ENVELOPE)
    assert isinstance(decision, Rejection) and decision.reason is RejectReason.INVALID_ROW
    assert says in decision.detail, decision.detail


def test_a_value_its_logical_type_cannot_read_is_rejected_naming_the_field() -> None:
    decision = route(record(with_schema(envelope("c", after={**ROW, "born": "soon"}))), ENVELOPE)
    assert isinstance(decision, Rejection) and decision.reason is RejectReason.INVALID_ROW
    assert "'born'" in decision.detail


def test_the_schema_wrapper_of_a_value_that_is_no_connect_schema_is_rejected() -> None:
    decision = route(record(plain({"schema": "x", "payload": envelope("c", after=ROW)})), ENVELOPE)
    assert isinstance(decision, Rejection) and decision.reason is RejectReason.NOT_AN_OBJECT


def test_a_flat_row_named_schema_is_not_taken_for_the_wrapper() -> None:
    fmt = DebeziumFlat()
    decoded = fmt.decode(record(compact({"schema": "public", "id": "c1"})), json.loads)
    assert not isinstance(decoded, Rejection) and decoded[1]["schema"] == "public"


@pytest.mark.parametrize(
    "row",
    [{"id": "c1", "__deleted": []}, {"id": "c1", "__op": ["c"]}, {"id": "c1", "__op": 1}],
)
def test_unhashable_or_odd_markers_are_rejected_not_raised(row: dict[str, Any]) -> None:
    decision = route(record(plain(row)), FLAT)
    assert isinstance(decision, Rejection) and decision.reason is RejectReason.UNKNOWN_CHANGE_TYPE


@pytest.mark.parametrize("op", [["c"], {"c": 1}, 3])
def test_an_odd_op_is_rejected_not_raised(op: Any) -> None:
    decision = route(record(plain({**envelope("c", after=ROW), "op": op})), ENVELOPE)
    assert isinstance(decision, Rejection) and decision.reason is RejectReason.UNKNOWN_CHANGE_TYPE


class CountingDict(dict[bytes, Any]):
    """The format's schema cache, counting its lookups."""

    lookups = 0

    def get(self, key: bytes, default: Any = None) -> Any:
        CountingDict.lookups += 1
        return super().get(key, default)


def test_schemas_that_alternate_are_each_parsed_once_and_a_repeated_one_not_looked_up() -> None:
    fmt = DebeziumEnvelope({"born": ENVELOPE_TARGETS["born"], "born_on": ENVELOPE_TARGETS["born"]})
    fmt._schemas = CountingDict()
    CountingDict.lookups = 0
    renamed = [
        dict(f, field="born_on") if f["field"] == "born" else f
        for f in envelope_schema()["fields"][0]["fields"]
    ]
    schemas = {"born": envelope_schema(), "born_on": envelope_schema(renamed)}
    parsed: list[bytes] = []

    def loads(raw: bytes) -> Any:
        parsed.append(bytes(raw[:12]))
        return json.loads(raw)

    def decode(field: str) -> None:
        value = with_schema(envelope("c", after={"id": "c1", field: 1}), schemas[field])
        decoded = fmt.decode(record(value), loads)
        assert not isinstance(decoded, Rejection) and decoded[1][field] == date(1970, 1, 2)

    for field in ("born", "born_on", "born", "born_on"):
        decode(field)
    assert len([p for p in parsed if p.startswith(b'{"type":"str')]) == 2
    lookups = CountingDict.lookups
    for _ in range(3):
        decode("born_on")  # the schema of the record before: matched by its bytes, no lookup
    assert CountingDict.lookups == lookups


# --- values an update does not carry (unchanged TOASTed values) --------------------------------


def test_an_update_carrying_debeziums_placeholder_is_refused_rather_than_written() -> None:
    after = {**ROW, "name": "__debezium_unavailable_value"}
    decision = route(record(plain(envelope("u", after=after))), ENVELOPE)
    assert isinstance(decision, Rejection) and decision.reason is RejectReason.INVALID_ROW
    assert "'name'" in decision.detail and "REPLICA IDENTITY FULL" in decision.detail


def test_with_partial_updates_a_placeholder_column_is_left_as_it_is() -> None:
    spec = dataclasses.replace(
        ENVELOPE,
        partial_updates=True,
        patch_mapper=lambda event: {k: event[k] for k in ("id", "name", "photo") if k in event},
        patch_check=lambda row: (row, ()),
        input_format=DebeziumEnvelope(
            ENVELOPE_TARGETS, version_from_lsn=True, partial_updates=True
        ),
    )
    after = {
        "id": "c1",
        "name": "__debezium_unavailable_value",
        "photo": "X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ==",
    }
    decision = route(record(plain(envelope("u", after=after, lsn=5))), spec)
    assert isinstance(decision, Upsert) and decision.partial
    assert dict(decision.row) == {"id": "c1"}
    # A create never carries the placeholder; only updates are looked at.
    created = DebeziumEnvelope(partial_updates=True).decode(
        record(plain(envelope("c", after={"id": "c1", "name": "__debezium_unavailable_value"}))),
        json.loads,
    )
    assert (
        not isinstance(created, Rejection) and created[1]["name"] == "__debezium_unavailable_value"
    )
