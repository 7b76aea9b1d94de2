"""Declaring entities: the field map, custom from_kafka_event, and declaration errors."""

from __future__ import annotations

from typing import Any, Self

import pytest
from sqlalchemy import Integer, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from models.base import MirroredEntity
from models.planet import Planet
from models.registry import Registry, build_spec, default_registry
from streams.core.errors import RegistryError


class LocalBase(DeclarativeBase):
    metadata = MetaData()


def test_planet_is_declared_exactly_as_the_contract_says() -> None:
    spec = default_registry.by_kind("planet")
    assert spec is not None and spec.model is Planet
    assert spec.topic == "planet-changed"
    assert spec.table.name == "servicea_planet"
    assert spec.key_column == "uuid" and spec.key_field == "planetUuid"
    assert spec.table.c.uuid.primary_key
    name = spec.table.c.name
    assert isinstance(name.type, String) and name.type.length == 255 and not name.nullable
    assert spec.row_from_event({"planetUuid": "u", "planetName": "n", "other": 1}) == {
        "uuid": "u",
        "name": "n",
    }


def test_from_kafka_event_returning_an_instance_is_the_mapping() -> None:
    class Moon(MirroredEntity, LocalBase):
        __tablename__ = "moon"
        __topic__ = "moon-changed-a"

        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        label: Mapped[str] = mapped_column(String(50))

        @classmethod
        def from_kafka_event(cls, event: Any) -> Self:
            return cls(id=int(event["moonId"]), label=event["label"].upper())

    default_registry.unregister(Moon)
    spec = build_spec(Moon)
    assert spec.row_from_event({"moonId": "3", "label": "io"}) == {"id": 3, "label": "IO"}
    assert spec.key_field is None


def test_from_kafka_event_may_return_a_dict() -> None:
    class Comet(MirroredEntity, LocalBase):
        __tablename__ = "comet"
        __topic__ = "comet-changed-a"
        __update_columns__ = ("label",)

        id: Mapped[str] = mapped_column(String(10), primary_key=True)
        label: Mapped[str] = mapped_column(String(50))
        first_seen: Mapped[str] = mapped_column(String(50))

        @classmethod
        def from_kafka_event(cls, event: Any) -> Any:
            return {"id": event["id"], "label": event["l"], "first_seen": event["t"]}

    default_registry.unregister(Comet)
    spec = build_spec(Comet)
    assert spec.row_from_event({"id": "c", "l": "x", "t": "now"})["first_seen"] == "now"
    assert spec.update_columns == ("label",)


def test_several_primary_key_columns_make_a_composite_key() -> None:
    class TwoKeys(MirroredEntity, LocalBase):
        __tablename__ = "two_keys"
        __topic__ = "two-keys"
        __event_fields__ = {"a": "A", "b": "B", "label": "L"}
        a: Mapped[int] = mapped_column(primary_key=True)
        b: Mapped[str] = mapped_column(String(8), primary_key=True)
        label: Mapped[str | None] = mapped_column(String(50))

    try:
        spec = default_registry.by_topic("two-keys")
        assert spec is not None and spec.composite
        assert spec.key_columns == ("a", "b") and spec.key_fields == ("A", "B")
        assert spec.key_field is None and spec.update_columns == ("label",)
        assert [c.name for c in spec.tombstone_table.primary_key.columns] == ["a", "b"]
        assert spec.key_of({"a": 1, "b": "x", "label": None}) == (1, "x")
        assert spec.check_key((1, "x")) is None
        assert "'b'" in (spec.check_key((1, "x" * 9)) or "")
        assert spec.check_key(1) is not None
    finally:
        default_registry.unregister(TwoKeys)


def test_declaration_errors_are_clear() -> None:
    with pytest.raises(RegistryError, match="composite key"):

        class KeyFieldOfTwo(MirroredEntity, LocalBase):
            __tablename__ = "two_keys_field"
            __topic__ = "two-keys-field"
            __key_field__ = "other"
            a: Mapped[int] = mapped_column(primary_key=True)
            b: Mapped[int] = mapped_column(primary_key=True)

    assert default_registry.by_topic("two-keys-field") is None


def test_two_models_cannot_mirror_one_topic() -> None:
    class First(MirroredEntity, LocalBase):
        __tablename__ = "first"
        __topic__ = "shared-topic"
        id: Mapped[int] = mapped_column(primary_key=True)

    try:
        with pytest.raises(RegistryError, match="shared-topic"):

            class Second(MirroredEntity, LocalBase):
                __tablename__ = "second"
                __topic__ = "shared-topic"
                id: Mapped[int] = mapped_column(primary_key=True)
    finally:
        default_registry.unregister(First)


def test_a_model_without_the_mixin_is_refused() -> None:
    class Plain(LocalBase):
        __tablename__ = "plain"
        id: Mapped[int] = mapped_column(primary_key=True)

    for name in (
        "__event_fields__",
        "__key_field__",
        "__update_columns__",
        "__cached__",
        "__version_field__",
    ):
        setattr(Plain, name, getattr(MirroredEntity, name))
    Plain.__topic__ = "plain-topic"  # type: ignore[attr-defined]
    Plain.from_kafka_event = MirroredEntity.from_kafka_event  # type: ignore[attr-defined]
    Plain.row_from_event = MirroredEntity.row_from_event  # type: ignore[attr-defined]
    with pytest.raises(RegistryError, match="inherit from MirroredEntity"):
        Registry().register(Plain)


def test_throwaway_entities_leave_the_default_registry_as_shipped() -> None:
    assert [spec.kind for spec in default_registry] == ["planet"]


def test_an_unmapped_not_null_column_without_a_default_is_refused_at_declaration() -> None:
    with pytest.raises(RegistryError, match=r"Star\.spectral_class is NOT NULL without a default"):

        class Star(MirroredEntity, LocalBase):
            __tablename__ = "star"
            __topic__ = "star-changed"
            __event_fields__ = {"code": "starCode"}

            code: Mapped[str] = mapped_column(String(8), primary_key=True)
            spectral_class: Mapped[str] = mapped_column(String(4), nullable=False)


def test_unmapped_nullable_or_defaulted_columns_are_left_out_of_the_row() -> None:
    class Nebula(MirroredEntity, LocalBase):
        __tablename__ = "nebula"
        __topic__ = "nebula-changed"
        __event_fields__ = {"code": "nebulaCode", "name": "nebulaName"}

        code: Mapped[str] = mapped_column(String(8), primary_key=True)
        name: Mapped[str] = mapped_column(String(50), nullable=False)
        note: Mapped[str | None] = mapped_column(String(50), nullable=True)
        brightness: Mapped[int] = mapped_column(Integer, nullable=False, server_default="3")

    default_registry.unregister(Nebula)
    spec = build_spec(Nebula)
    row = spec.prepare_row(spec.row_from_event({"nebulaCode": "n1", "nebulaName": "Crab"}))
    assert row == {"code": "n1", "name": "Crab"}


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"__soft_delete__": "gone"}, r"__soft_delete__ names no column of the table: 'gone'"),
        ({"__soft_delete__": "name"}, r"must name a nullable column of its own, not 'name'"),
        ({"__soft_delete__": "label"}, r"Bad\.label \(__soft_delete__\) must be a DateTime"),
        (
            {"__soft_delete__": "deleted_at", "__event_fields__": {"uuid": "u", "deleted_at": "d"}},
            r"maps 'deleted_at', which __soft_delete__ gives to the mirror",
        ),
        ({"__partial_updates__": "yes"}, r"__partial_updates__ must be True or False"),
    ],
)
def test_a_wrong_soft_delete_or_partial_updates_declaration_is_refused_in_one_line(
    attributes: dict[str, Any], message: str
) -> None:
    from datetime import datetime

    from sqlalchemy import DateTime

    body: dict[str, Any] = {
        "__tablename__": f"bad_{abs(hash(message))}",
        "__topic__": f"bad-{abs(hash(message))}",
        "__event_fields__": {"uuid": "u"},
        "__annotations__": {
            "uuid": Mapped[str],
            "name": Mapped[str],
            "label": Mapped[str | None],
            "deleted_at": Mapped[datetime | None],
        },
        "uuid": mapped_column(String(8), primary_key=True),
        "name": mapped_column(String(8), nullable=False, default="n"),
        "label": mapped_column(String(8), nullable=True),
        "deleted_at": mapped_column(DateTime(timezone=True), nullable=True),
        **attributes,
    }
    with pytest.raises(RegistryError, match=message):
        # A base of its own each time: the declarations share a class name.
        type("Bad", (MirroredEntity, type("Base", (DeclarativeBase,), {})), body)
