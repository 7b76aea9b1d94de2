"""UUID columns on every database: a key is one entity whatever form a producer writes it in.

``Mapped[uuid.UUID]`` gets SQLAlchemy's ``Uuid()``, which on SQLite and MariaDB binds only
``uuid.UUID`` objects: events carry text, so each batch holding one failed there (and went to
the dead letters as refused). A key column keeps the mirror's keys text
(``Uuid(as_uuid=False)``), canonical, so ``{ABC...}`` and ``abc...`` are one entity.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from models.registry import EntitySpec, default_registry
from streams.apply.sql_applier import SqlApplier
from streams.core.decisions import Outcome, Rejection, RejectReason
from streams.core.records import SourceRecord
from tests.models.devices import Device

default_registry.unregister(Device)


@pytest.fixture
def mirror(
    applier_of: Callable[[type[Any]], tuple[SqlApplier, EntitySpec]],
) -> tuple[SqlApplier, EntitySpec]:
    return applier_of(Device)


_offsets = iter(range(1_000_000))


def event(key: str, **fields: Any) -> SourceRecord:
    offset = next(_offsets)
    value = json.dumps({"deviceId": key, **fields}).encode()
    return SourceRecord("device-changed", 0, offset, 1_000_000 + offset, key.encode(), value)


def tombstone(key: str) -> SourceRecord:
    offset = next(_offsets)
    return SourceRecord("device-changed", 0, offset, 1_000_000 + offset, key.encode(), None)


def test_every_form_of_a_uuid_key_is_one_entity(mirror: tuple[SqlApplier, EntitySpec]) -> None:
    applier, spec = mirror
    key, owner = uuid.uuid4(), uuid.uuid4()
    forms = [str(key).upper(), "{" + str(key) + "}", key.hex, f"urn:uuid:{key}"]
    created = applier.apply(
        spec, [event(forms[0], name="a", ownerId=str(owner).upper(), changeType="CREATED")]
    )
    assert created.outcomes == [Outcome.APPLIED]
    for n, form in enumerate(forms[1:]):
        applier.apply(spec, [event(form, name=f"v{n}", ownerId=owner.hex)], read_back=True)
    rows = applier.store.rows(spec)
    assert list(rows) == [str(key)]
    assert rows[str(key)]["name"] == "v2" and rows[str(key)]["owner"] == owner
    deleted = applier.apply(spec, [tombstone(forms[1])], read_back=True)
    assert deleted.outcomes == [Outcome.APPLIED] and deleted.states[str(key)][0] is None
    assert applier.store.rows(spec) == {}


def test_a_value_that_is_no_uuid_is_a_rejection_naming_its_column(
    mirror: tuple[SqlApplier, EntitySpec],
) -> None:
    applier, spec = mirror
    good = str(uuid.uuid4())
    result = applier.apply(
        spec,
        [
            event("not-a-uuid", name="x"),
            event(good, name="x", ownerId="12345"),
            event(good, name="kept", ownerId=None),
        ],
    )
    first, second, third = result.decisions
    assert isinstance(first, Rejection) and first.reason is RejectReason.BAD_KEY
    assert isinstance(second, Rejection) and second.reason is RejectReason.INVALID_ROW
    assert "'owner' takes a UUID" in second.detail
    assert not isinstance(third, Rejection)
    assert applier.store.rows(spec)[good]["name"] == "kept"


def test_large_batches_take_the_bulk_paths(mirror: tuple[SqlApplier, EntitySpec]) -> None:
    # 300 rows: COPY on PostgreSQL, the multi-row statement text on MariaDB.
    applier, spec = mirror
    keys = [uuid.uuid4() for _ in range(300)]
    applier.apply(
        spec, [event(str(k).upper(), name=f"n{i}", ownerId=k.hex) for i, k in enumerate(keys)]
    )
    applier.apply(
        spec,
        [
            tombstone(k.hex) if i % 2 else event(str(k), name="u", ownerId=str(k))
            for i, k in enumerate(keys)
        ],
        read_back=True,
    )
    rows = applier.store.rows(spec)
    assert set(rows) == {str(k) for k in keys[::2]}
    assert all(rows[str(k)]["owner"] == k and rows[str(k)]["name"] == "u" for k in keys[::2])
