"""The MSK/Lambda adapter: flattening, timestamp order, base64, status codes."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import models.planet  # noqa: F401  (declares Planet in the default registry, run alone too)
from models.base import MirroredEntity
from models.registry import Registry, default_registry
from models.store import SqlStore
from streams.apply.sql_applier import SqlApplier
from streams.msk import MskEventError, handle_msk_event, records_from_msk_event


class LocalBase(DeclarativeBase):
    """Models of these tests only, outside the app's metadata."""


def b64(value: Any) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.b64encode(raw).decode()


def msk_record(
    value: Any, *, ts: int, offset: int, partition: int = 0, topic: str = "planet-changed"
) -> dict[str, Any]:
    return {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "timestamp": ts,
        "timestampType": "CREATE_TIME",
        "key": b64(b"k"),
        "value": b64(value),
        "headers": [{"source": [115, 118, 99]}],
    }


def msk_event(*records: dict[str, Any]) -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault(f"{rec['topic']}-{rec['partition']}", []).append(rec)
    return {"eventSource": "aws:kafka", "records": groups}


@pytest.fixture
def mirror(tmp_path: Path) -> SqlApplier:
    store = SqlStore.from_url(f"sqlite:///{tmp_path / 'm.sqlite3'}")
    store.create_tables(list(default_registry))
    return SqlApplier(default_registry, store, group="lambda")


def test_records_are_flattened_decoded_and_kept_in_partition_order() -> None:
    event = msk_event(
        msk_record({"a": 1}, ts=30, offset=5, partition=0),
        msk_record({"a": 2}, ts=10, offset=9, partition=1),
        msk_record({"a": 3}, ts=20, offset=6, partition=0),
    )
    records = records_from_msk_event(event)
    assert [(r.partition, r.offset) for r in records] == [(0, 5), (0, 6), (1, 9)]
    assert records[2].value == b'{"a": 2}'
    assert records[2].key == b"k"
    assert records[2].headers == (("source", b"svc"),)


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"records": []},
        {"records": {"t-0": {}}},
        {"records": {"t-0": [{"topic": "t"}]}},
        {"records": {"t-0": [{"topic": "t", "partition": 0, "offset": 1, "value": "%%%"}]}},
    ],
)
def test_a_malformed_lambda_event_raises_one_clear_error(event: dict[str, Any]) -> None:
    with pytest.raises(MskEventError):
        records_from_msk_event(event)


def test_statuses_follow_the_lambda_contract(mirror: SqlApplier) -> None:
    event = msk_event(
        msk_record({"planetUuid": "a", "planetName": "A", "changeType": "CREATED"}, ts=1, offset=0),
        msk_record({"planetUuid": "b", "planetName": "B"}, ts=2, offset=1),
        msk_record({"planetUuid": "a", "changeType": "DELETED"}, ts=3, offset=2),
        msk_record(
            {"planetUuid": "b", "planetName": "B2", "changeType": "UPDATED"}, ts=4, offset=3
        ),
    )
    status, results = handle_msk_event(event, None, mirror=mirror)
    assert [r["status"] for r in results] == [201, 200, 204, 200]
    assert status == 204
    spec = default_registry.by_kind("planet")
    assert spec is not None
    assert {k: v["name"] for k, v in mirror.store.rows(spec).items()} == {"b": "B2"}


def test_a_rejected_record_gives_400_and_the_rest_still_apply(mirror: SqlApplier) -> None:
    event = msk_event(
        msk_record({"planetUuid": "a", "planetName": "A"}, ts=1, offset=0),
        msk_record({"planetUuid": "x", "changeType": "ARCHIVED"}, ts=2, offset=1),
        msk_record(b"not json", ts=3, offset=2),
        msk_record({"planetUuid": "c", "planetName": "C"}, ts=4, offset=3, topic="unknown-topic"),
        msk_record({"planetUuid": "d", "planetName": "D", "changeType": "CREATED"}, ts=5, offset=4),
    )
    status, results = handle_msk_event(event, None, mirror=mirror)
    assert status == 400
    # In partition order: the planet topic's records, then the unknown topic's.
    assert [r["status"] for r in results] == [200, 400, 400, 201, 400]
    assert [r.get("reason") for r in results] == [
        None,
        "unknown_change_type",
        "bad_json",
        None,
        "unknown_topic",
    ]
    assert "'ARCHIVED'" in results[1]["detail"]
    spec = default_registry.by_kind("planet")
    assert spec is not None
    assert set(mirror.store.rows(spec)) == {"a", "d"}


def test_records_out_of_timestamp_order_apply_in_timestamp_order(mirror: SqlApplier) -> None:
    event = msk_event(
        msk_record({"planetUuid": "a", "planetName": "new"}, ts=20, offset=1, partition=1),
        msk_record({"planetUuid": "a", "planetName": "old"}, ts=10, offset=7, partition=0),
    )
    handle_msk_event(event, None, mirror=mirror)
    spec = default_registry.by_kind("planet")
    assert spec is not None
    assert mirror.store.rows(spec)["a"]["name"] == "new"


def test_a_later_record_of_a_partition_applies_whatever_its_producers_clock(
    mirror: SqlApplier,
) -> None:
    # The Lambda pattern sorted by timestamp: the update from a host 2 s behind was lost.
    event = msk_event(
        msk_record({"planetUuid": "a", "planetName": "created"}, ts=10_000, offset=1),
        msk_record({"planetUuid": "a", "planetName": "updated"}, ts=8_000, offset=2),
    )
    handle_msk_event(event, None, mirror=mirror)
    spec = default_registry.by_kind("planet")
    assert spec is not None
    assert mirror.store.rows(spec)["a"]["name"] == "updated"


def test_an_empty_event_is_fine(mirror: SqlApplier) -> None:
    assert handle_msk_event({"records": {}}, None, mirror=mirror) == (200, [])


def test_the_msk_adapter_calls_a_models_batch_hook_once_per_change(tmp_path: Path) -> None:
    calls: list[tuple[dict[str, str], list[str]]] = []

    class Star(MirroredEntity, LocalBase):
        __tablename__ = "star"
        __topic__ = "star-changed"
        __event_fields__ = {"uuid": "starUuid", "name": "starName"}

        uuid: Mapped[str] = mapped_column(String(64), primary_key=True)
        name: Mapped[str] = mapped_column(String(64))

        @classmethod
        def on_batch(cls, conn: Any, applied: Any, deleted: list[str]) -> None:
            calls.append(({k: row["name"] for k, row in applied.items()}, sorted(deleted)))

    default_registry.unregister(Star)
    registry = Registry()
    registry.register(Star)
    store = SqlStore.from_url(f"sqlite:///{tmp_path / 'h.sqlite3'}")
    store.create_tables(list(registry))
    mirror = SqlApplier(registry, store, group="lambda")
    event = msk_event(
        msk_record(
            {"starUuid": "a", "starName": "A", "changeType": "CREATED"},
            ts=1,
            offset=0,
            topic="star-changed",
        ),
        msk_record({"starUuid": "b", "starName": "B"}, ts=2, offset=1, topic="star-changed"),
        msk_record(
            {"starUuid": "a", "changeType": "DELETED"}, ts=3, offset=2, topic="star-changed"
        ),
    )
    handle_msk_event(event, None, mirror=mirror)
    assert calls == [({"b": "B"}, ["a"])]
    handle_msk_event(event, None, mirror=mirror)  # Lambda delivers the batch again
    assert len(calls) == 1
    store.dispose()


def test_the_msk_adapter_honours_soft_deletes_and_partial_updates(tmp_path: Path) -> None:
    from tests.models.declared_moons import SoftPatchedMoon

    default_registry.unregister(SoftPatchedMoon)  # declared for the worker tests
    registry = Registry()
    spec = registry.register(SoftPatchedMoon)
    store = SqlStore.from_url(f"sqlite:///{tmp_path / 'moons.sqlite3'}")
    store.create_tables(list(registry))
    mirror = SqlApplier(registry, store, group="lambda")
    topic = spec.topic

    def moon(offset: int, **event: Any) -> dict[str, Any]:
        return msk_record(
            {"moonUuid": "a", "moonVersion": offset + 1, **event},
            ts=1_000 + offset,
            offset=offset,
            topic=topic,
        )

    first = msk_event(
        moon(0, changeType="CREATED", moonName="Io", moonSize=3, moonColor="grey"),
        moon(1, moonSize=4),  # a partial update: name and color stay
        moon(2, changeType="DELETED"),
        msk_record(
            {"moonUuid": "b", "moonVersion": 1, "moonSize": 9}, ts=1_003, offset=3, topic=topic
        ),
    )
    _, results = handle_msk_event(first, None, mirror=mirror)
    assert [r["status"] for r in results] == [201, 200, 204, 400]
    assert results[3]["reason"] == "invalid_row" and "lacks name" in results[3]["detail"]
    row = store.rows(spec)["a"]
    assert (row["name"], row["size"], row["color"]) == ("Io", 4, "grey")
    assert row["deleted_at"] is not None  # soft-deleted: the row stays, marked
    assert "b" not in store.rows(spec)

    again = msk_event(moon(4, moonColor=None))  # a newer patch undeletes; null sets NULL
    assert handle_msk_event(again, None, mirror=mirror)[0] == 200
    handle_msk_event(first, None, mirror=mirror)  # Lambda delivers the first batch again
    row = store.rows(spec)["a"]
    assert (row["name"], row["size"], row["color"], row["deleted_at"]) == ("Io", 4, None, None)
    assert store.outcome_counts("lambda") == {(topic, "applied"): 4, (topic, "rejected"): 1}
    store.dispose()


def test_the_msk_adapter_applies_composite_keys_and_names_them_as_lists(tmp_path: Path) -> None:
    from tests.models.order_lines import OrderLine

    default_registry.unregister(OrderLine)  # declared for the worker tests
    registry = Registry()
    spec = registry.register(OrderLine)
    store = SqlStore.from_url(f"sqlite:///{tmp_path / 'lines.sqlite3'}")
    store.create_tables(list(registry))
    mirror = SqlApplier(registry, store, group="lambda")

    def line(offset: int, no: int, **event: Any) -> dict[str, Any]:
        fields = {"orderId": "o-7", "lineNo": no, "sku": "s", "quantity": offset, **event}
        return msk_record(fields, ts=1_000 + offset, offset=offset, topic=spec.topic)

    tombstone = msk_record(None, ts=1_003, offset=3, topic=spec.topic)
    tombstone.update(key=b64(b'{"order_id": "o-7", "line_no": 2}'), value=None)
    _, results = handle_msk_event(
        msk_event(line(0, 1), line(1, 2), line(2, 1, changeType="UPDATED"), tombstone),
        None,
        mirror=mirror,
    )
    assert [r["key"] for r in results] == [["o-7", 1], ["o-7", 2], ["o-7", 1], ["o-7", 2]]
    assert [r["status"] for r in results] == [200, 200, 200, 204]
    assert {k: r["quantity"] for k, r in store.rows(spec).items()} == {("o-7", 1): 2}
    store.dispose()
