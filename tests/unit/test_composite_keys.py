"""Composite keys in the pure parts: their forms (``streams.core.keys``), routing, the fold and
the version guard per key, and the forms the cache, the HTTP reads and the repartitioning use."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace
from typing import Any

import pytest

from models.planet import Planet
from models.registry import build_spec, default_registry
from streams.apply.forwarder import _forwarded
from streams.core.decisions import Delete, Outcome, Rejection, RejectReason, Upsert
from streams.core.guard import Current, resolve
from streams.core.keys import (
    BadKey,
    decode_record_key,
    key_path,
    key_text,
    parse_key_text,
    path_segments,
    record_key_bytes,
)
from streams.core.records import SourceRecord
from streams.core.routing import entity_key_of, route, route_batch
from tables.api import entity_target, parse_key
from tables.cache import cache_key
from tests.models.order_lines import OrderLine

LINE = build_spec(OrderLine)
default_registry.unregister(OrderLine)  # declared for the worker test, not for this process
PLANET = build_spec(Planet)
COLUMNS = ("order_id", "line_no")

_offsets = iter(range(1_000_000))


def line(
    order: Any = "o-7",
    no: Any = 2,
    *,
    change: str | None = None,
    ts: int | None = None,
    partition: int = 0,
    **fields: Any,
) -> SourceRecord:
    offset = next(_offsets)
    event: dict[str, Any] = {"sku": "s", "quantity": 1, **fields}
    if order is not None:
        event["orderId"] = order
    if no is not None:
        event["lineNo"] = no
    if change is not None:
        event["changeType"] = change
    stamp = 1_000 + offset if ts is None else ts
    value = json.dumps(event).encode()
    return SourceRecord("order-line-changed", partition, offset, stamp, b"any", value)


def tombstone(key: bytes | None, ts: int | None = None) -> SourceRecord:
    offset = next(_offsets)
    return SourceRecord(
        "order-line-changed", 0, offset, 1_000 + offset if ts is None else ts, key, None
    )


# --- the forms of a key --------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"order_id": "o-7", "line_no": 2}',
        b'{"line_no": 2, "order_id": "o-7", "extra": true}',
        b'{"schema": {"type": "struct"}, "payload": {"order_id": "o-7", "line_no": 2}}',
    ],
    ids=["object", "any-order-and-extra-fields", "jsonconverter-envelope"],
)
def test_a_record_key_object_gives_the_parts_in_key_order(raw: bytes) -> None:
    assert decode_record_key(raw, COLUMNS) == ("o-7", 2)


@pytest.mark.parametrize(
    ("raw", "reason", "detail"),
    [
        (b"o-7/2", RejectReason.BAD_KEY, "not a JSON object"),
        (b'["o-7", 2]', RejectReason.BAD_KEY, "not a JSON object"),
        (b'{"schema": {}, "payload": 5}', RejectReason.MISSING_KEY, "has no 'order_id'"),
        (b'{"order_id": "o-7"}', RejectReason.MISSING_KEY, "has no 'line_no'"),
        (b'{"order_id": "o-7", "line_no": 2.5}', RejectReason.BAD_KEY, "'line_no'"),
        (b'{"order_id": "o-7", "line_no": true}', RejectReason.BAD_KEY, "'line_no'"),
        (b'{"order_id": "", "line_no": 2}', RejectReason.BAD_KEY, "'order_id'"),
        (b'{"order_id": null, "line_no": 2}', RejectReason.BAD_KEY, "'order_id'"),
        (b"\xff\xfe", RejectReason.BAD_ENCODING, "not UTF-8"),
    ],
)
def test_any_other_record_key_is_a_bad_key(raw: bytes, reason: RejectReason, detail: str) -> None:
    bad = decode_record_key(raw, COLUMNS)
    assert isinstance(bad, BadKey)
    assert bad.reason is reason
    assert detail in bad.detail


@pytest.mark.parametrize("key", [("o-7", 2), ('a/b "c" é', -1), "plain", 5])
def test_the_text_forms_round_trip(key: Any) -> None:
    width = len(key) if isinstance(key, tuple) else 1
    assert parse_key_text(key_text(key), width) == (key if width > 1 else str(key))
    assert path_segments(key_path(key)) == [str(p) for p in (key if width > 1 else (key,))]
    columns = [f"c{i}" for i in range(width)]
    parts = decode_record_key(record_key_bytes(key, columns), columns)
    assert parts == (key if width > 1 else (key,))


def test_the_text_of_a_composite_key_is_a_compact_json_array() -> None:
    assert key_text(("o-7", 2)) == '["o-7",2]'
    assert cache_key(("o-7", 2)) == b'["o-7",2]'
    assert cache_key("p1") == b"p1" and cache_key(7) == b"7"  # single keys as they always were
    assert key_path(("a/b", 2)) == "a%2Fb/2"
    with pytest.raises(ValueError, match="JSON array of 2"):
        parse_key_text('["o-7"]', 2)


# --- routing ----------------------------------------------------------------------------


def test_a_composite_key_routes_to_the_tuple_of_its_columns() -> None:
    upsert = route(line("o-7", 2), LINE)
    assert isinstance(upsert, Upsert)
    assert upsert.key == ("o-7", 2)
    assert upsert.row == {"order_id": "o-7", "line_no": 2, "sku": "s", "quantity": 1}
    delete = route(line("o-7", 2, change="DELETED"), LINE)
    assert isinstance(delete, Delete) and delete.key == ("o-7", 2)


@pytest.mark.parametrize(
    ("order", "no", "reason", "detail"),
    [
        (None, 2, RejectReason.MISSING_KEY, "orderId"),
        ("o-7", None, RejectReason.MISSING_KEY, "lineNo"),
        ("o-7", True, RejectReason.BAD_KEY, "line_no"),
        ("o-7", 2.5, RejectReason.BAD_KEY, "line_no"),
        ("o" * 65, 2, RejectReason.BAD_KEY, "order_id"),
        ("o-7", 2**40, RejectReason.BAD_KEY, "line_no"),
    ],
)
def test_each_part_of_a_composite_key_is_checked(
    order: Any, no: Any, reason: RejectReason, detail: str
) -> None:
    for change in (None, "DELETED"):
        decision = route(line(order, no, change=change), LINE)
        assert isinstance(decision, Rejection), (change, decision)
        assert decision.reason is reason
        assert detail in decision.detail


def test_a_tombstone_deletes_the_key_its_json_record_key_names() -> None:
    decision = route(tombstone(b'{"order_id": "o-7", "line_no": 2}'), LINE)
    assert isinstance(decision, Delete) and decision.key == ("o-7", 2)
    for raw, reason in [
        (b"o-7", RejectReason.BAD_KEY),
        (b'{"order_id": "o-7"}', RejectReason.MISSING_KEY),
        (b'{"order_id": "o-7", "line_no": 99999999999}', RejectReason.BAD_KEY),
        (None, RejectReason.MISSING_KEY),
    ]:
        rejected = route(tombstone(raw), LINE)
        assert isinstance(rejected, Rejection) and rejected.reason is reason, raw


def test_a_single_key_reads_json_record_keys_when_its_format_says_so() -> None:
    raw = tombstone(b'{"uuid": "p1"}')
    plain = route(raw, PLANET)
    assert isinstance(plain, Delete) and plain.key == '{"uuid": "p1"}'  # as it always was
    fmt = SimpleNamespace(name="debezium-like", json_record_keys=True)

    class Declared:
        """The planet, its input format declaring JSON record keys."""

        input_format = fmt

        def __getattr__(self, name: str) -> Any:
            return getattr(PLANET, name)

    declared: Any = Declared()
    decision = route(raw, declared)
    assert isinstance(decision, Delete) and decision.key == "p1"
    assert isinstance(route(tombstone(b"p1"), declared), Rejection)


def test_the_entity_key_of_a_record_is_the_tuple_for_repartitioning() -> None:
    assert entity_key_of(line("o-7", 2), LINE) == ("o-7", 2)
    assert entity_key_of(line("o-7", None), LINE) is None
    assert entity_key_of(tombstone(b'{"order_id": "o-7", "line_no": 2}'), LINE) == ("o-7", 2)
    key, _, headers = _forwarded(line("o-7", 2), LINE)
    assert json.loads(key or b"") == {"order_id": "o-7", "line_no": 2}
    # A forwarded tombstone is read back by the key it was forwarded with.
    gone = tombstone(b'{"line_no": 2, "order_id": "o-7"}')
    forwarded_key, _, _ = _forwarded(gone, LINE)
    again = route(dataclasses.replace(gone, key=forwarded_key), LINE)
    assert isinstance(again, Delete) and again.key == ("o-7", 2)
    assert (
        _forwarded(SourceRecord("planet-changed", 0, 0, 1, b"x", b'{"planetUuid": "p1"}'), PLANET)[
            0
        ]
        == b"p1"
    )
    del headers


# --- the fold and the guard, per composite key ----------------------------------------------


def test_keys_sharing_a_part_are_folded_and_guarded_apart() -> None:
    decisions = route_batch(
        [
            line("o-7", 1, sku="a", ts=100),
            line("o-7", 2, sku="b", ts=101),
            line("o-8", 1, sku="c", ts=102),
            line("o-7", 1, sku="a2", ts=103),
            line("o-7", 2, sku="stale", ts=50, partition=1),  # older than the store's row
            line("o-8", 1, change="DELETED", ts=104),
        ],
        LINE,
    )
    # Versions from another partition: timestamps decide.
    stored = {
        ("o-7", 2): Current(row=(100_000, 3, 0)),
        ("o-8", 2): Current(tombstone=(100_000, 3, 0)),
    }
    plan = resolve(decisions, stored)
    assert {k: u.row["sku"] for k, u in plan.upserts.items()} == {("o-7", 1): "a2"}
    assert set(plan.deletes) == {("o-8", 1)}
    assert [outcome for _, outcome in plan.outcomes] == [
        Outcome.APPLIED,
        Outcome.SKIPPED,  # the stored row of ("o-7", 2) is newer
        Outcome.APPLIED,
        Outcome.APPLIED,
        Outcome.SKIPPED,
        Outcome.APPLIED,
    ]
    # A tombstone of one key holds back only that key.
    later = resolve(route_batch([line("o-8", 2, ts=400), line("o-8", 3, ts=400)], LINE), stored)
    assert set(later.upserts) == {("o-8", 3)}


# --- the HTTP form -----------------------------------------------------------------------


def test_a_url_names_a_composite_key_by_one_segment_per_column() -> None:
    registry = SimpleNamespace(by_kind=lambda kind: LINE if kind == "order_line" else None)
    target = entity_target(registry, "order_line", ["o-7", "2"])  # type: ignore[arg-type]
    assert not isinstance(target, tuple) and target.key == ("o-7", 2)
    status, body = entity_target(registry, "order_line", "o-7")  # type: ignore[arg-type,misc]
    assert status == 404 and "/entities/order_line/{order_id}/{line_no}" in body["error"]
    status, body = entity_target(registry, "order_line", ["o-7", "two"])  # type: ignore[arg-type,misc]
    assert status == 400 and "line_no" in body["error"]
    assert parse_key(LINE, '["o-7",2]') == ("o-7", 2)  # ?after= of a list
    with pytest.raises(ValueError, match="JSON array"):
        parse_key(LINE, "o-7")


def test_a_composite_key_takes_each_part_as_its_column_holds_it() -> None:
    # A producer sending the line number as text, or the order id as a number: the key (and
    # the row) are what the table will read back, so the guard and the cache find them.
    upsert = route(line(7, "2"), LINE)
    assert isinstance(upsert, Upsert)
    assert upsert.key == ("7", 2)
    assert (upsert.row["order_id"], upsert.row["line_no"]) == ("7", 2)
    gone = route(tombstone(b'{"order_id": "o-7", "line_no": "2"}'), LINE)
    assert isinstance(gone, Delete) and gone.key == ("o-7", 2)
    assert entity_key_of(line("o-7", "2"), LINE) == ("o-7", 2)
    assert route(line("o-7", 2), LINE).key == ("o-7", 2)  # type: ignore[union-attr]
