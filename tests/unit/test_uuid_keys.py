"""UUID columns (models/columns.py, models/registry.py, streams/core/routing.py): each value as
its column takes it, and a UUID key in one text form wherever a key enters."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import MetaData, String, Uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from models.base import MirroredEntity
from models.columns import ColumnKind, ColumnRule, Invalid, check_value, compile_row_check
from models.registry import build_spec, default_registry
from streams.core.decisions import Delete, Rejection, RejectReason, Upsert
from streams.core.errors import RegistryError
from streams.core.records import SourceRecord
from streams.core.routing import entity_key_of, route
from tables.api import parse_key
from tests.models.devices import Device

KEY = uuid.UUID("0f8fad5b-d9cb-469f-a165-70867728950e")
FORMS = [
    str(KEY),
    str(KEY).upper(),
    "{" + str(KEY) + "}",
    KEY.hex,
    f"urn:uuid:{KEY}",
]


class _Base(DeclarativeBase):
    metadata = MetaData()


class DebeziumDevice(MirroredEntity, _Base):
    __tablename__ = "unit_dbz_device"
    __topic__ = "dbserver1.public.device"
    __input_format__ = "debezium"

    id: Mapped[str] = mapped_column(Uuid(as_uuid=False), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(20), nullable=True)


for _model in (Device, DebeziumDevice):
    default_registry.unregister(_model)
DEVICE = build_spec(Device)
DBZ_DEVICE = build_spec(DebeziumDevice)


def record(value: object, key: bytes | None = None, topic: str = Device.__topic__) -> SourceRecord:
    raw = None if value is None else json.dumps(value).encode()
    return SourceRecord(topic, 0, 5, 1_700_000_000_000, key, raw)


@pytest.mark.parametrize("form", FORMS)
def test_a_uuid_column_takes_every_form_as_its_type_says(form: str) -> None:
    objects = ColumnRule("owner", ColumnKind.UUID, as_uuid=True)
    text = ColumnRule("owner", ColumnKind.UUID)
    assert check_value(objects, form) == KEY and check_value(objects, KEY) is KEY
    assert check_value(text, form) == str(KEY) and check_value(text, KEY) == str(KEY)


@pytest.mark.parametrize("value", ["not-a-uuid", "", 12, 1.5, True, ["a"]])
def test_what_is_no_uuid_is_invalid_naming_the_column(value: object) -> None:
    with pytest.raises(Invalid, match="column 'owner' takes a UUID"):
        check_value(ColumnRule("owner", ColumnKind.UUID), value)


def test_the_row_check_passes_canonical_values_as_they_are_and_converts_the_rest() -> None:
    check = compile_row_check(DEVICE.rules)
    row = {"owner": KEY, "name": "a"}
    assert check(row) is row  # nothing to convert: not copied
    assert check({"owner": str(KEY).upper(), "name": "a"})["owner"] == KEY


@pytest.mark.parametrize("form", FORMS)
def test_every_form_of_a_key_routes_to_one_entity(form: str) -> None:
    upsert = route(record({"deviceId": form, "ownerId": form, "name": "n"}), DEVICE)
    assert isinstance(upsert, Upsert), upsert
    assert upsert.key == str(KEY) and upsert.row["id"] == str(KEY) and upsert.row["owner"] == KEY
    deleted = route(record({"deviceId": form, "changeType": "DELETED"}), DEVICE)
    assert isinstance(deleted, Delete) and deleted.key == str(KEY)
    tomb = route(record(None, key=form.encode()), DEVICE)
    assert isinstance(tomb, Delete) and tomb.key == str(KEY)
    dbz_tomb = route(
        record(None, key=json.dumps({"id": form}).encode(), topic=DebeziumDevice.__topic__),
        DBZ_DEVICE,
    )
    assert isinstance(dbz_tomb, Delete) and dbz_tomb.key == str(KEY)
    assert entity_key_of(record({"deviceId": form}), DEVICE) == str(KEY)
    assert parse_key(DEVICE, form) == str(KEY)


def test_a_key_that_is_no_uuid_is_a_bad_key() -> None:
    for decision in (
        route(record({"deviceId": "nope", "name": "n"}), DEVICE),
        route(record({"deviceId": "nope", "changeType": "DELETED"}), DEVICE),
        route(record(None, key=b"nope"), DEVICE),
    ):
        assert isinstance(decision, Rejection) and decision.reason is RejectReason.BAD_KEY
        assert "takes a UUID" in decision.detail
    assert entity_key_of(record({"deviceId": "nope"}), DEVICE) is None
    with pytest.raises(ValueError, match="not a UUID"):
        parse_key(DEVICE, "nope")


def test_a_key_column_taking_uuid_objects_is_refused_saying_what_to_declare() -> None:
    # Declaring the class registers it (MirroredEntity), so the declaration itself fails.
    with pytest.raises(
        RegistryError, match=r"Bad\.id is a Uuid key column .*Uuid\(as_uuid=False\)"
    ):

        class Bad(MirroredEntity, _Base):
            __tablename__ = "unit_bad_device"
            __topic__ = "unit-bad-device-changed"

            id: Mapped[uuid.UUID] = mapped_column(primary_key=True)  # Uuid(): uuid.UUID objects


def test_a_uuid_part_of_a_composite_key_is_canonical_too() -> None:
    class LocalBase(DeclarativeBase):
        metadata = MetaData()

    class Seat(MirroredEntity, LocalBase):
        __tablename__ = "unit_seat"
        __topic__ = "unit-seat-changed"
        __event_fields__ = {"hall": "hall", "no": "no", "name": "name"}

        hall: Mapped[str] = mapped_column(Uuid(as_uuid=False), primary_key=True)
        no: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str | None] = mapped_column(String(20), nullable=True)

    default_registry.unregister(Seat)
    seat = build_spec(Seat)
    for form in FORMS:
        upsert = route(record({"hall": form, "no": "3", "name": "n"}, topic=Seat.__topic__), seat)
        assert isinstance(upsert, Upsert) and upsert.key == (str(KEY), 3)
        tomb = route(
            record(None, key=json.dumps({"hall": form, "no": 3}).encode(), topic=Seat.__topic__),
            seat,
        )
        assert isinstance(tomb, Delete) and tomb.key == (str(KEY), 3)
