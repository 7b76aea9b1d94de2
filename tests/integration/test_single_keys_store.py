"""One entity is one key on every database, whatever type the producer wrote its key in: an
integer column's ``"2"`` and ``2`` and a tombstone's text ``2`` (tests/unit/test_single_keys.py
has the routing; here the applier's read-back, which feeds the cache, says one state per key)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from models.registry import EntitySpec, default_registry
from streams.apply.sql_applier import SqlApplier
from streams.core.records import SourceRecord
from tests.models.tickets import Ticket

default_registry.unregister(Ticket)

_offsets = iter(range(1_000_000))


def record(topic: str, value: object, key: bytes = b"k") -> SourceRecord:
    offset = next(_offsets)
    raw = None if value is None else json.dumps(value).encode()
    return SourceRecord(topic, 0, offset, 1_700_000_000_000 + offset, key, raw)


@pytest.fixture
def mirror(
    applier_of: Callable[[type[Any]], tuple[SqlApplier, EntitySpec]],
) -> tuple[SqlApplier, EntitySpec]:
    return applier_of(Ticket)


def test_an_integer_key_written_as_text_or_number_is_one_entity(
    mirror: tuple[SqlApplier, EntitySpec],
) -> None:
    applier, spec = mirror
    created_and_gone = applier.apply(
        spec,
        [record(spec.topic, {"ticketId": 2, "title": "a"}), record(spec.topic, None, key=b"2")],
        read_back=True,
    )
    assert {k: state for k, (state, _) in created_and_gone.states.items()} == {2: None}
    updated = applier.apply(
        spec,
        [
            record(spec.topic, {"ticketId": "5", "title": "old"}),
            record(spec.topic, {"ticketId": 5, "title": "new"}),
        ],
        read_back=True,
    )
    assert list(updated.states) == [5]
    assert applier.store.rows(spec) == {5: {**applier.store.rows(spec)[5], "title": "new"}}
