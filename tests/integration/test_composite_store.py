"""Composite keys in the SQL store, on SQLite, PostgreSQL and MariaDB: upserts, the version
guard, deletes and tombstones keyed by every key column, keys that share a part, the bulk paths
(PostgreSQL's COPY from 50 rows on), soft deletes and partial updates by composite key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import DateTime, Integer, MetaData, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from models.base import MirroredEntity
from models.registry import EntitySpec, Registry, default_registry
from models.store import SqlStore
from streams.apply.sql_applier import SqlApplier
from streams.core.decisions import Outcome, Rejection, RejectReason
from streams.core.keys import record_key_bytes
from streams.core.records import SourceRecord
from tests.models.order_lines import OrderLine

default_registry.unregister(OrderLine)  # declared for the worker test; here a registry of ours


class LocalBase(DeclarativeBase):
    metadata = MetaData()


class Membership(MirroredEntity, LocalBase):
    """A membership of a user in a group: soft deletes and partial updates by composite key."""

    __tablename__ = "test_membership"
    __topic__ = "membership-changed"
    __event_fields__ = {"user_id": "user", "group_id": "group", "role": "role", "note": "note"}
    __soft_delete__ = "deleted_at"
    __partial_updates__ = True

    user_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    group_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    role: Mapped[str] = mapped_column(String(32), nullable=False)
    note: Mapped[str | None] = mapped_column(String(64), nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


default_registry.unregister(Membership)


@pytest.fixture
def mirror(db_url: str) -> Iterator[SqlApplier]:
    registry = Registry()
    registry.register(OrderLine)
    registry.register(Membership)
    store = SqlStore.from_url(db_url)
    store.create_tables(list(registry))
    yield SqlApplier(registry, store, group="test")
    store.dispose()


def spec_of(mirror: SqlApplier, kind: str) -> EntitySpec:
    spec = mirror.registry.by_kind(kind)
    assert spec is not None
    return spec


_offsets = iter(range(1_000_000))


def line(
    order: str,
    no: int,
    sku: str = "sku",
    qty: int = 1,
    *,
    change: str | None = None,
    ts: int | None = None,
    partition: int = 0,
) -> SourceRecord:
    offset = next(_offsets)
    event: dict[str, Any] = {"orderId": order, "lineNo": no, "sku": sku, "quantity": qty}
    if change is not None:
        event["changeType"] = change
    stamp = 1_000_000 + offset if ts is None else ts
    key = f"{order}/{no}".encode()
    return SourceRecord(
        "order-line-changed", partition, offset, stamp, key, json.dumps(event).encode()
    )


def tombstone(key: bytes, *, ts: int | None = None) -> SourceRecord:
    offset = next(_offsets)
    stamp = 1_000_000 + offset if ts is None else ts
    return SourceRecord("order-line-changed", 0, offset, stamp, key, None)


def lines(mirror: SqlApplier) -> dict[Any, tuple[str, int]]:
    rows = mirror.store.rows(spec_of(mirror, "order_line"))
    return {k: (r["sku"], r["quantity"]) for k, r in rows.items()}


def tombstones(mirror: SqlApplier) -> set[tuple[Any, ...]]:
    table = spec_of(mirror, "order_line").tombstone_table
    with mirror.store.engine.connect() as conn:
        return {tuple(r) for r in conn.execute(select(table.c.order_id, table.c.line_no))}


def test_upserts_and_the_guard_per_composite_key(mirror: SqlApplier) -> None:
    spec = spec_of(mirror, "order_line")
    mirror.apply(
        spec,
        [
            line("o-1", 1, "apple", 1),
            line("o-1", 2, "pear", 2),  # shares its order with the line above
            line("o-2", 1, "plum", 3),  # shares its line number with the first
            line("o-1", 1, "apple", 5, change="UPDATED"),
        ],
        read_back=True,
    )
    assert lines(mirror) == {
        ("o-1", 1): ("apple", 5),
        ("o-1", 2): ("pear", 2),
        ("o-2", 1): ("plum", 3),
    }
    # Older than what the store holds, from another partition: stale, for that key only.
    result = mirror.apply(
        spec, [line("o-1", 2, "stale", 9, ts=5, partition=1), line("o-2", 2, "new", 1)]
    )
    assert [r.outcome for r in result.results] == [Outcome.SKIPPED, Outcome.APPLIED]
    assert lines(mirror)[("o-1", 2)] == ("pear", 2)
    assert lines(mirror)[("o-2", 2)] == ("new", 1)


def test_deletes_and_tombstones_keyed_by_every_column(mirror: SqlApplier) -> None:
    spec = spec_of(mirror, "order_line")
    mirror.apply(spec, [line("o-1", 1), line("o-1", 2), line("o-2", 1)])
    deleted = mirror.apply(
        spec,
        [
            line("o-1", 1, change="DELETED"),
            # Kafka Connect's JsonConverter envelope, as Debezium writes with schemas on.
            tombstone(
                json.dumps(
                    {"schema": {"type": "struct"}, "payload": {"order_id": "o-2", "line_no": 1}}
                ).encode()
            ),
        ],
    )
    assert [r.outcome for r in deleted.results] == [Outcome.APPLIED, Outcome.APPLIED]
    assert set(lines(mirror)) == {("o-1", 2)}  # the line sharing a part with a deleted one stays
    assert tombstones(mirror) == {("o-1", 1), ("o-2", 1)}
    # An older create of a deleted line is stale (its tombstone); a newer one brings it back.
    again = mirror.apply(spec, [line("o-1", 1, "old", ts=10, partition=2), line("o-2", 1, "new")])
    assert [r.outcome for r in again.results] == [Outcome.SKIPPED, Outcome.APPLIED]
    assert set(lines(mirror)) == {("o-1", 2), ("o-2", 1)}
    assert tombstones(mirror) == {("o-1", 1)}


def test_a_tombstone_key_that_is_not_the_key_object_is_rejected(mirror: SqlApplier) -> None:
    spec = spec_of(mirror, "order_line")
    mirror.apply(spec, [line("o-1", 1)])
    result = mirror.apply(
        spec,
        [
            tombstone(b"o-1"),
            tombstone(b'{"order_id": "o-1"}'),
            tombstone(b'{"order_id": "o-1", "line_no": "x"}'),
        ],
    )
    reasons = [r.decision.reason for r in result.results if isinstance(r.decision, Rejection)]
    assert reasons == [RejectReason.BAD_KEY, RejectReason.MISSING_KEY, RejectReason.BAD_KEY]
    assert set(lines(mirror)) == {("o-1", 1)}


def test_large_batches_take_the_bulk_paths(mirror: SqlApplier) -> None:
    spec = spec_of(mirror, "order_line")
    created = [line(f"o-{n // 4}", n % 4, f"s{n}", n) for n in range(240)]
    mirror.apply(spec, created)
    expected = {(f"o-{n // 4}", n % 4): (f"s{n}", n) for n in range(240)}
    assert lines(mirror) == expected
    # 120 deletes (COPY on PostgreSQL) and 120 updates, one batch; every other line of an order.
    batch = [
        line(f"o-{n // 4}", n % 4, change="DELETED")
        if n % 2
        else line(f"o-{n // 4}", n % 4, "u", n)
        for n in range(240)
    ]
    mirror.apply(spec, batch, read_back=True)
    expected = {(f"o-{n // 4}", n % 4): ("u", n) for n in range(0, 240, 2)}
    assert lines(mirror) == expected
    assert tombstones(mirror) == {(f"o-{n // 4}", n % 4) for n in range(1, 240, 2)}
    # Recreated: the tombstones of the keys written again are cleared.
    mirror.apply(spec, [line(f"o-{n // 4}", n % 4, "back", n) for n in range(1, 240, 2)])
    assert len(lines(mirror)) == 240 and not tombstones(mirror)
    with mirror.store.transaction("read versions") as tx:
        keys = [(f"o-{n // 4}", n % 4) for n in range(240)] + [("o-none", 0)]
        stored = tx.current(spec, keys)  # every version, by key arrays
        assert set(stored.newest) == set(keys[:-1]) and set(stored.present) == set(keys[:-1])
        assert set(tx.rows_of(spec, keys)) == set(keys[:-1])


def member(user: int, group: str, **fields: Any) -> SourceRecord:
    offset = next(_offsets)
    event = {"user": user, "group": group, **fields}
    key = record_key_bytes((user, group), ("user_id", "group_id"))
    return SourceRecord(
        "membership-changed", 0, offset, 1_000_000 + offset, key, json.dumps(event).encode()
    )


def test_soft_deletes_and_partial_updates_by_composite_key(mirror: SqlApplier) -> None:
    spec = spec_of(mirror, "membership")
    mirror.apply(
        spec,
        [
            member(1, "admins", role="owner", note="first"),
            member(1, "users", role="member"),
            member(2, "admins", role="member"),
        ],
    )
    result = mirror.apply(
        spec,
        [
            member(1, "admins", role="admin", changeType="UPDATED"),  # note left as it is
            member(2, "admins", changeType="DELETED"),
        ],
        read_back=True,
    )
    assert [r.outcome for r in result.results] == [Outcome.APPLIED, Outcome.APPLIED]
    rows = mirror.store.rows(spec)
    assert (rows[(1, "admins")]["role"], rows[(1, "admins")]["note"]) == ("admin", "first")
    assert rows[(1, "users")]["deleted_at"] is None
    assert rows[(2, "admins")]["deleted_at"] is not None
    assert rows[(1, "admins")]["deleted_at"] is None
