"""A single key is one type whatever the producer wrote (models/registry.py ``canonical_key``,
streams/core/routing.py): an integer column's ``"2"`` is ``2``, a text column's ``7`` is ``"7"``,
and a tombstone's key (text: a record key is bytes) names the same entity as its events. Before,
an event keyed ``2`` and a tombstone keyed ``"2"`` were two keys of one batch's fold."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import Boolean, Date, DateTime, MetaData, Numeric, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from models.base import MirroredEntity
from models.registry import build_spec, default_registry
from streams.core.decisions import Delete, Rejection, RejectReason, Upsert
from streams.core.errors import RegistryError
from streams.core.guard import resolve
from streams.core.records import SourceRecord
from streams.core.routing import entity_key_of, route, route_batch
from tables.api import parse_key
from tests.models.tickets import Ticket


class _Base(DeclarativeBase):
    metadata = MetaData()


class Label(MirroredEntity, _Base):
    __tablename__ = "unit_label"
    __topic__ = "unit-label-changed"
    __event_fields__ = {"code": "code", "title": "title"}

    code: Mapped[str] = mapped_column(String(20), primary_key=True)
    title: Mapped[str | None] = mapped_column(String(40), nullable=True)


for _model in (Ticket, Label):
    default_registry.unregister(_model)
TICKET = build_spec(Ticket)
LABEL = build_spec(Label)

_offsets = iter(range(1_000_000))


def record(topic: str, value: object, key: bytes = b"k") -> SourceRecord:
    offset = next(_offsets)
    raw = None if value is None else json.dumps(value).encode()
    return SourceRecord(topic, 0, offset, 1_700_000_000_000 + offset, key, raw)


@pytest.mark.parametrize("written", [2, "2", " 2"])
def test_an_integer_columns_key_is_an_integer_wherever_it_enters(written: object) -> None:
    upsert = route(record(TICKET.topic, {"ticketId": written, "title": "t"}), TICKET)
    assert isinstance(upsert, Upsert) and upsert.key == 2 and type(upsert.key) is int
    assert upsert.row["id"] == 2
    deleted = route(record(TICKET.topic, {"ticketId": written, "changeType": "DELETED"}), TICKET)
    assert isinstance(deleted, Delete) and deleted.key == 2 and type(deleted.key) is int
    tombstone = route(record(TICKET.topic, None, key=str(written).encode()), TICKET)
    assert isinstance(tombstone, Delete) and tombstone.key == 2 and type(tombstone.key) is int
    assert entity_key_of(record(TICKET.topic, {"ticketId": written}), TICKET) == 2
    assert parse_key(TICKET, "2") == 2


def test_a_text_columns_key_is_text_wherever_it_enters() -> None:
    upsert = route(record(LABEL.topic, {"code": 7, "title": "t"}), LABEL)
    assert isinstance(upsert, Upsert) and upsert.key == "7" and upsert.row["code"] == "7"
    tombstone = route(record(LABEL.topic, None, key=b"7"), LABEL)
    assert isinstance(tombstone, Delete) and tombstone.key == "7"


def test_a_key_already_of_its_columns_type_is_passed_on_as_it_is() -> None:
    key = "a-label"
    assert LABEL.canonical_key(key) is key and TICKET.canonical_key(12) == 12


def test_an_event_and_the_tombstone_after_it_are_one_key_of_the_fold() -> None:
    batch = [
        record(TICKET.topic, {"ticketId": 2, "title": "created"}),
        record(TICKET.topic, None, key=b"2"),
        record(TICKET.topic, {"ticketId": "3", "title": "x"}),
        record(TICKET.topic, {"ticketId": 3, "title": "newer"}),
    ]
    plan = resolve(route_batch(batch, TICKET), {})
    assert set(plan.deletes) == {2} and set(plan.upserts) == {3}
    assert plan.upserts[3].row["title"] == "newer"


def test_a_key_the_column_cannot_hold_is_still_a_bad_key() -> None:
    for decision in (
        route(record(TICKET.topic, {"ticketId": "two", "title": "t"}), TICKET),
        route(record(TICKET.topic, None, key=b"two"), TICKET),
    ):
        assert isinstance(decision, Rejection) and decision.reason is RejectReason.BAD_KEY


@pytest.mark.parametrize("column", [Date(), Numeric(10, 2), DateTime(), Boolean()])
def test_a_key_column_of_another_type_is_refused_at_declaration_saying_what_to_declare(
    column: Any,
) -> None:
    # A key is text or an integer in URLs, record keys and the cache: a date part made a
    # composite key that the cache could not encode (json.dumps of a date).
    class LocalBase(DeclarativeBase):
        metadata = MetaData()

    with pytest.raises(RegistryError, match=r"Event\.day is a \w+ key column.*String"):

        class Event(MirroredEntity, LocalBase):
            __tablename__ = "unit_event"
            __topic__ = "unit-event"
            __event_fields__ = {"store": "store", "day": "day"}

            store: Mapped[str] = mapped_column(String(10), primary_key=True)
            day: Mapped[Any] = mapped_column(column, primary_key=True)
