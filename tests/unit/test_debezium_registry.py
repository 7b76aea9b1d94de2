"""Declaring a Debezium-fed entity (models/input_formats.py): one line beside the columns, and
one-line errors for what does not exist."""

from __future__ import annotations

import itertools
import json
import re
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import DateTime, Integer, MetaData, String
from sqlalchemy.orm import DeclarativeBase, mapped_column

from models.base import MirroredEntity
from models.registry import build_spec, default_registry
from streams.core.debezium import LSN_FIELD, DebeziumEnvelope, DebeziumFlat
from streams.core.decisions import Delete, Upsert
from streams.core.errors import RegistryError
from streams.core.records import SourceRecord
from streams.core.routing import format_of, route
from tests.debezium_events import envelope


class LocalBase(DeclarativeBase):
    metadata = MetaData()


COUNT = itertools.count()


def declare(**attributes: Any) -> type[Any]:
    """Declare a throwaway Debezium-fed model with ``attributes``, outside the default registry."""
    n = next(COUNT)
    namespace: dict[str, Any] = {
        "__tablename__": f"dbz_{n}",
        "__topic__": f"dbz-topic-{n}",
        "id": mapped_column(Integer, primary_key=True),
        "title": mapped_column(String(50), nullable=False),
        "gone": mapped_column(DateTime, nullable=True),
        **attributes,
    }
    model = type(f"Thing{n}", (MirroredEntity, LocalBase), namespace)
    default_registry.unregister(model)
    return model


def test_a_debezium_fed_model_is_its_columns_and_one_line() -> None:
    spec = build_spec(declare(__input_format__="debezium"))
    assert isinstance(spec.input_format, DebeziumEnvelope) and format_of(spec) is spec.input_format
    assert spec.key_field == "id" and spec.version_field is None
    assert dict(spec.model.__event_fields__) == {"id": "id", "title": "title", "gone": "gone"}
    value = json.dumps(envelope("c", after={"id": 3, "title": "T", "gone": None})).encode()
    decision = route(SourceRecord("t", 0, 1, 5, b'{"id":3}', value), spec)
    assert isinstance(decision, Upsert) and dict(decision.row) == {
        "id": 3,
        "title": "T",
        "gone": None,
    }


def test_the_flat_format_and_versions_from_the_lsn() -> None:
    spec = build_spec(declare(__input_format__="debezium-flat", __version_from__="source.lsn"))
    assert isinstance(spec.input_format, DebeziumFlat) and spec.version_field == LSN_FIELD
    value = json.dumps({"id": 3, "title": "T", "__deleted": "true", "__lsn": 77}).encode()
    decision = route(SourceRecord("t", 0, 1, 5, None, value), spec)
    assert isinstance(decision, Delete) and decision.version == (77, 0, 0)


def test_a_declared_field_map_is_kept() -> None:
    spec = build_spec(
        declare(__input_format__="debezium", __event_fields__={"id": "thing_id", "title": "label"})
    )
    assert spec.key_field == "thing_id"
    value = json.dumps(envelope("u", after={"thing_id": 4, "label": "L"})).encode()
    decision = route(SourceRecord("t", 0, 1, 5, None, value), spec)
    assert isinstance(decision, Upsert) and dict(decision.row) == {"id": 4, "title": "L"}


def test_the_soft_delete_column_is_left_out_of_the_field_map_it_owns() -> None:
    spec = build_spec(declare(__input_format__="debezium", __soft_delete__="gone"))
    assert "gone" not in spec.model.__event_fields__ and spec.soft_delete == "gone"


def test_changetype_json_may_be_named_and_is_the_default() -> None:
    assert (
        build_spec(
            declare(__input_format__="changetype-json", __event_fields__={"id": "i", "title": "t"})
        ).input_format
        is None
    )


def test_a_custom_mapping_gets_its_values_converted_by_their_logical_types_only() -> None:
    def from_kafka_event(cls: Any, event: Any) -> dict[str, Any]:
        return {"id": event["id"], "title": str(event["gone"])}

    spec = build_spec(
        declare(__input_format__="debezium", from_kafka_event=classmethod(from_kafka_event))
    )
    assert spec.input_format is not None and spec.input_format._targets is None  # type: ignore[attr-defined]
    schema = {
        "type": "struct",
        "fields": [
            {
                "type": "struct",
                "field": "after",
                "fields": [
                    {"type": "int32", "field": "id"},
                    {"type": "int64", "name": "io.debezium.time.Timestamp", "field": "gone"},
                ],
            }
        ],
    }
    value = json.dumps(
        {"schema": schema, "payload": envelope("c", after={"id": 1, "gone": 0})},
        separators=(",", ":"),
    ).encode()
    decision = route(SourceRecord("t", 0, 1, 5, None, value), spec)
    assert isinstance(decision, Upsert) and decision.row["title"] == str(datetime(1970, 1, 1))


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        (
            {"__input_format__": "avro"},
            "Thing.__input_format__ is 'avro', not one of 'changetype-json', 'debezium', "
            "'debezium-flat'",
        ),
        (
            {"__input_format__": "debezium", "__version_from__": "source.scn"},
            "Thing.__version_from__ is 'source.scn', not one of 'source.lsn'",
        ),
        (
            {"__version_from__": "source.lsn", "__event_fields__": {"id": "id"}},
            "Thing.__version_from__ needs a Debezium __input_format__",
        ),
        (
            {
                "__input_format__": "debezium",
                "__version_from__": "source.lsn",
                "__version_field__": "v",
            },
            "Thing declares both __version_field__ and __version_from__: keep one",
        ),
    ],
)
def test_a_declaration_naming_what_does_not_exist_fails_in_one_line(
    attributes: dict[str, Any], message: str
) -> None:
    with pytest.raises(RegistryError) as raised:
        declare(**attributes)
    said = str(raised.value)
    assert re.sub(r"^Thing\d+", "Thing", said).startswith(message) and "\n" not in said, said


def test_a_model_taking_partial_updates_keeps_the_columns_an_update_does_not_carry() -> None:
    spec = build_spec(declare(__input_format__="debezium", __partial_updates__=True))
    after = {"id": 3, "title": "__debezium_unavailable_value", "gone": None}
    value = json.dumps(envelope("u", after=after)).encode()
    decision = route(SourceRecord("t", 0, 1, 5, None, value), spec)
    assert isinstance(decision, Upsert) and decision.partial
    assert dict(decision.row) == {"id": 3, "gone": None}
