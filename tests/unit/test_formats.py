"""Input formats (streams/core/formats.py): every entity's records decode through its format,
and routing after the format is the same for every format."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from models.planet import Planet
from models.registry import build_spec
from streams.core.changetype_json import CHANGE_TYPE_JSON
from streams.core.decisions import ChangeType, Delete, Rejection, RejectReason, Upsert
from streams.core.formats import Change
from streams.core.records import JsonLoads, Record, SourceRecord
from streams.core.routing import entity_key_of, format_of, route

PLANET = build_spec(Planet)


def record(value: bytes | None, key: bytes | None = b"k") -> SourceRecord:
    return SourceRecord("planet-changed", 0, 7, 1_700_000_000_000, key, value)


class Verbs:
    """A format of another shape: ``{"verb": "put"|"drop", "body": {...}}``."""

    name = "verbs"

    def decode(self, record: Record, loads: JsonLoads) -> Change | Rejection:
        value: Any = loads(record.value or b"null")
        verb = value.get("verb") if isinstance(value, dict) else None
        if verb == "put":
            return ChangeType.UPDATED, dict(value["body"])
        if verb == "drop":
            return ChangeType.DELETED, dict(value["body"])
        return Rejection(RejectReason.UNKNOWN_CHANGE_TYPE, f"verb {verb!r}", record)


@dataclasses.dataclass(frozen=True)
class Declared:
    """The planet, declaring the format of its records."""

    input_format: Any

    def __getattr__(self, name: str) -> Any:
        return getattr(PLANET, name)


def test_an_entity_without_a_format_reads_changetype_json() -> None:
    assert format_of(PLANET) is CHANGE_TYPE_JSON
    body = {"planetUuid": "p1", "planetName": "Earth", "changeType": "CREATED"}
    decision = route(record(json.dumps(body).encode()), PLANET)
    assert isinstance(decision, Upsert) and decision.change_type is ChangeType.CREATED


def test_changetype_json_rejects_an_unknown_change_type_with_its_reason() -> None:
    decoded = CHANGE_TYPE_JSON.decode(record(b'{"changeType": "MERGED"}'), json.loads)
    assert isinstance(decoded, Rejection)
    assert decoded.reason is RejectReason.UNKNOWN_CHANGE_TYPE


def test_a_declared_format_decodes_and_routing_after_it_is_shared() -> None:
    entity: Any = Declared(Verbs())
    put = {"verb": "put", "body": {"planetUuid": "p2", "planetName": "Mars"}}
    decision = route(record(json.dumps(put).encode()), entity)
    assert isinstance(decision, Upsert)
    assert (decision.key, dict(decision.row)) == ("p2", {"uuid": "p2", "name": "Mars"})
    drop = {"verb": "drop", "body": {"planetUuid": "p2"}}
    deleted = route(record(json.dumps(drop).encode()), entity)
    assert isinstance(deleted, Delete) and deleted.key == "p2"
    assert entity_key_of(record(json.dumps(put).encode()), entity, json.loads) == "p2"


def test_a_declared_formats_rejection_is_the_records_outcome() -> None:
    entity: Any = Declared(Verbs())
    decision = route(record(b'{"verb": "merge"}'), entity)
    assert isinstance(decision, Rejection) and decision.detail == "verb 'merge'"


def test_a_tombstone_deletes_by_record_key_whatever_the_format() -> None:
    entity: Any = Declared(Verbs())
    decision = route(record(None, key=b"p3"), entity)
    assert isinstance(decision, Delete) and decision.key == "p3"
