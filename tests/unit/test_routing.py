"""The pure routing core: decisions per changeType, bad input, folding."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from models.planet import Planet
from models.registry import build_spec
from streams.core.decisions import ChangeType, Delete, Rejection, RejectReason, Upsert
from streams.core.records import Origin, SourceRecord
from streams.core.routing import entity_key_of, route, route_batch

PLANET = build_spec(Planet)


def record(
    value: Any, *, offset: int = 0, key: bytes | None = b"k", raw: bool = False
) -> SourceRecord:
    data = value if raw else json.dumps(value).encode()
    return SourceRecord("planet-changed", 1, offset, 1_700_000_000_000 + offset, key, data)


def planet(
    uuid: str = "p1", name: str = "Earth", change: str | None = None, **extra: Any
) -> dict[str, Any]:
    event: dict[str, Any] = {"planetUuid": uuid, "planetName": name, **extra}
    if change is not None:
        event["changeType"] = change
    return event


@pytest.mark.parametrize(
    ("change", "expected"),
    [("CREATED", ChangeType.CREATED), ("UPDATED", ChangeType.UPDATED), (None, ChangeType.UPDATED)],
)
def test_created_updated_and_missing_change_type_upsert(
    change: str | None, expected: ChangeType
) -> None:
    decision = route(record(planet(change=change)), PLANET)
    assert isinstance(decision, Upsert)
    assert decision.change_type is expected
    assert decision.key == "p1"
    assert dict(decision.row) == {"uuid": "p1", "name": "Earth"}


def test_null_change_type_means_updated() -> None:
    decision = route(record({**planet(), "changeType": None}), PLANET)
    assert isinstance(decision, Upsert) and decision.change_type is ChangeType.UPDATED


def test_deleted_needs_only_the_key() -> None:
    decision = route(record({"planetUuid": "p9", "changeType": "DELETED"}), PLANET)
    assert isinstance(decision, Delete)
    assert decision.key == "p9"


def test_extra_fields_are_ignored() -> None:
    decision = route(record(planet(change="CREATED", mass=5.97, moons=["Moon"])), PLANET)
    assert isinstance(decision, Upsert)
    assert dict(decision.row) == {"uuid": "p1", "name": "Earth"}


@pytest.mark.parametrize("change", ["REMOVED", "created", "", 7, ["CREATED"]])
def test_unknown_change_type_is_rejected_naming_the_value(change: Any) -> None:
    decision = route(record(planet(change=change)), PLANET)
    assert isinstance(decision, Rejection)
    assert decision.reason is RejectReason.UNKNOWN_CHANGE_TYPE
    assert repr(change) in decision.detail


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe not utf8", RejectReason.BAD_ENCODING),
        (b"{not json", RejectReason.BAD_JSON),
        (b"", RejectReason.BAD_JSON),
        (b"[1, 2]", RejectReason.NOT_AN_OBJECT),
        (b'"a string"', RejectReason.NOT_AN_OBJECT),
        (b"42", RejectReason.NOT_AN_OBJECT),
        (b'{"planetName": "no key"}', RejectReason.MISSING_KEY),
        (b'{"changeType": "DELETED"}', RejectReason.MISSING_KEY),
        (b'{"planetUuid": null, "planetName": "x"}', RejectReason.MISSING_KEY),
        (b'{"planetUuid": {"a": 1}, "planetName": "x"}', RejectReason.BAD_KEY),
        (b'{"planetUuid": true, "changeType": "DELETED"}', RejectReason.BAD_KEY),
    ],
)
@pytest.mark.parametrize("loads", [json.loads, orjson.loads], ids=["json", "orjson"])
def test_bad_input_is_rejected_with_a_reason(
    raw: bytes, reason: RejectReason, loads: Callable[[str], Any]
) -> None:
    source = record(raw, raw=True, offset=17)
    decision = route(source, PLANET, loads)
    assert isinstance(decision, Rejection)
    assert decision.reason is reason
    assert decision.record is source  # original bytes kept for a dead letter
    assert "planet-changed[1]@17" in decision.message


class Exploding:
    kind = "exploding"
    key_column = "id"
    key_field = "id"
    version_field = None

    def row_from_event(self, event: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("boom")

    def prepare_row(self, row: Any) -> Any:
        return row

    def check_key(self, key: Any) -> str | None:
        return None


def test_a_mapping_that_raises_is_rejected() -> None:
    decision = route(record({"id": "x"}), Exploding())
    assert isinstance(decision, Rejection)
    assert decision.reason is RejectReason.MAPPING_FAILED
    assert "RuntimeError: boom" in decision.detail
    assert decision.error_type == "RuntimeError"


def test_record_metadata_is_injected_into_the_event() -> None:
    seen: dict[str, Any] = {}

    class Spy:
        kind = "spy"
        key_column = "id"
        key_field = None
        version_field = None

        def row_from_event(self, event: dict[str, Any]) -> dict[str, Any]:
            seen.update(event)
            return {"id": event["id"]}

        def prepare_row(self, row: Any) -> Any:
            return row

        def check_key(self, key: Any) -> str | None:
            return None

    route(record({"id": "a"}, offset=5), Spy())
    assert seen["kafkaRecordTimestamp"] == 1_700_000_000_005
    assert seen["kafkaTopic"] == "planet-changed"
    assert seen["kafkaPartition"] == 1
    assert seen["kafkaOffset"] == 5


def test_kafka_tombstone_deletes_the_record_key() -> None:
    decision = route(SourceRecord("planet-changed", 0, 3, 1, b"p7", None), PLANET)
    assert isinstance(decision, Delete) and decision.key == "p7"
    keyless = route(SourceRecord("planet-changed", 0, 4, 1, None, None), PLANET)
    assert isinstance(keyless, Rejection) and keyless.reason is RejectReason.MISSING_KEY


def test_versions_default_to_the_record_position() -> None:
    decision = route(record(planet(), offset=9), PLANET)
    assert isinstance(decision, Upsert)
    assert decision.version == (1_700_000_000_009, 1, 9)


def test_route_batch_keeps_consumption_order() -> None:
    decisions = route_batch(
        [record(planet("a"), offset=0), record(b"junk", raw=True, offset=1)], PLANET
    )
    assert [d.record.offset for d in decisions] == [0, 1]
    assert isinstance(decisions[1], Rejection)


class Versioned:
    kind = "versioned"
    key_column = "id"
    key_field = "id"
    version_field = "version"

    def row_from_event(self, event: dict[str, Any]) -> dict[str, Any]:
        return {"id": event["id"], "v": event["version"]}

    def prepare_row(self, row: Any) -> Any:
        return row

    def check_key(self, key: Any) -> str | None:
        return None


@pytest.mark.parametrize("bad", [None, "3", 1.5, True])
def test_a_declared_version_field_must_be_an_integer(bad: Any) -> None:
    event = {"id": "a"} if bad is None else {"id": "a", "version": bad}
    decision = route(record(event), Versioned())
    assert isinstance(decision, Rejection) and decision.reason is RejectReason.BAD_VERSION


def test_a_declared_version_field_is_the_version() -> None:
    decision = route(record({"id": "a", "version": 42}, offset=7), Versioned())
    assert isinstance(decision, Upsert) and decision.version == (42, 0, 0)
    tombstone = route(SourceRecord("t", 0, 1, 5, b"a", None), Versioned())
    assert isinstance(tombstone, Delete) and tombstone.version is None


def test_a_forwarded_record_keeps_its_first_position_as_version() -> None:
    origin = Origin("planet-changed", 3, 99, 1_700_000_000_123)
    forwarded = SourceRecord(
        "app-planet-changed-repartition",
        0,
        5,
        1_800_000_000_000,
        b"p1",
        json.dumps(planet("p1")).encode(),
        origin=origin,
    )
    decision = route(forwarded, PLANET)
    assert isinstance(decision, Upsert) and decision.version == (1_700_000_000_123, 3, 99)
    assert Origin.from_header(origin.header()) == origin
    assert Origin.from_header(b"garbage") is None


@pytest.mark.parametrize(
    ("value", "key", "expected"),
    [
        (planet("p1"), b"tenant", "p1"),
        ({"planetUuid": "p2", "changeType": "DELETED"}, None, "p2"),
        (None, b"p3", "p3"),
        (b"not json", b"x", None),
        ({"planetName": "no key"}, b"x", None),
    ],
)
def test_entity_key_of_reads_the_key_from_the_event(
    value: Any, key: bytes | None, expected: str | None
) -> None:
    raw = value if isinstance(value, bytes) or value is None else json.dumps(value).encode()
    assert entity_key_of(SourceRecord("t", 0, 0, 0, key, raw), PLANET) == expected


@pytest.mark.parametrize(
    ("event", "detail"),
    [
        ({"planetUuid": "p1", "changeType": "CREATED"}, "'name' is NOT NULL"),
        ({"planetUuid": "p1", "planetName": "x" * 256}, "'name' takes at most 255 characters"),
    ],
)
def test_a_row_the_table_would_refuse_is_rejected_before_any_sql(
    event: dict[str, Any], detail: str
) -> None:
    decision = route(record(event), PLANET)
    assert isinstance(decision, Rejection) and decision.reason is RejectReason.INVALID_ROW
    assert detail in decision.detail
