"""Soft deletes and partial updates, folded per batch, end as applied one by one.

Random moon streams (``tests/moon_oracle.py``) go through the pure core (``route``, then
``resolve`` per batch) into an in-memory table that does what the SQL store does with a plan;
for any batching the rows and every event's outcome equal the one-by-one oracle's.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.registry import EntitySpec, build_spec, default_registry
from streams.core.decisions import ChangeType, Delete, Rejection, RejectReason, Upsert
from streams.core.guard import Current, Plan, resolve
from streams.core.records import SourceRecord
from streams.core.routing import route
from tests.models.declared_moons import PatchedMoon, SoftMoon, SoftPatchedMoon
from tests.moon_oracle import FIELD_OF, MoonEvent, MoonOracle, moon_stream

SPECS = {m.__name__: build_spec(m) for m in (SoftMoon, PatchedMoon, SoftPatchedMoon)}
for _model in (SoftMoon, PatchedMoon, SoftPatchedMoon):
    default_registry.unregister(_model)  # declared for the worker tests, not for this process


@dataclass
class MemoryTable:
    """What the SQL store does with a plan (models/store/batch.py ``write``), in dictionaries."""

    spec: EntitySpec
    rows: dict[Any, dict[str, Any]] = field(default_factory=dict)
    versions: dict[Any, tuple[int, int, int]] = field(default_factory=dict)
    tombstones: dict[Any, tuple[int, int, int]] = field(default_factory=dict)

    def current(self) -> dict[Any, Current]:
        return {
            k: Current(
                row=self.versions.get(k) if k in self.rows else None,
                tombstone=self.tombstones.get(k),
            )
            for k in set(self.rows) | set(self.tombstones)
        }

    def apply(self, plan: Plan) -> None:
        for key in plan.recreated:
            self.rows.pop(key, None)
        for key, upsert in plan.upserts.items():
            if key in self.rows:  # ON CONFLICT DO UPDATE of the columns it names
                self.rows[key].update(upsert.row)
            else:
                self.rows[key] = {c: upsert.row.get(c) for c in (*FIELD_OF, "deleted_at")}
            self.versions[key] = upsert.version
            self.tombstones.pop(key, None)
        for key, patch in plan.patches.items():
            assert key in self.rows, "a patch is planned only for a row the table has"
            self.rows[key].update(patch.row)
            self.versions[key] = patch.version
            self.tombstones.pop(key, None)
        for key, delete in plan.deletes.items():
            assert delete.version is not None
            if self.spec.soft_delete is not None:
                if key in self.rows:
                    assert self.versions[key] <= delete.version
                    self.rows[key]["deleted_at"] = delete.record.timestamp
                    self.versions[key] = delete.version
            else:
                self.rows.pop(key, None)
            self.tombstones[key] = delete.version

    def table(self) -> dict[str, tuple[Any, ...]]:
        out = {}
        for key, row in self.rows.items():
            values = tuple(row[c] for c in FIELD_OF)
            if self.spec.soft_delete is not None:
                values = (*values, row["deleted_at"] is not None)
            out[key] = values
        return out


def records(events: list[MoonEvent]) -> list[SourceRecord]:
    return [
        SourceRecord("moons", 0, n, 1_000 + n, e.key.encode(), e.value)
        for n, e in enumerate(events)
    ]


def run_batched(
    spec: EntitySpec, events: list[MoonEvent], cuts: list[int]
) -> tuple[MemoryTable, Counter[str]]:
    table = MemoryTable(spec)
    outcomes: Counter[str] = Counter()
    recs = records(events)
    bounds = sorted({0, len(recs), *(c % (len(recs) + 1) for c in cuts)})
    for start, end in itertools.pairwise(bounds):
        decisions = [route(r, spec) for r in recs[start:end]]
        plan = resolve(decisions, table.current(), soft_deletes=spec.soft_delete is not None)
        table.apply(plan)
        outcomes.update(o.value for _, o in plan.outcomes)
    return table, outcomes


@pytest.mark.parametrize("name", sorted(SPECS))
@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 10_000), cuts=st.lists(st.integers(0, 400), max_size=12))
def test_a_batch_fold_ends_as_one_event_at_a_time(name: str, seed: int, cuts: list[int]) -> None:
    spec = SPECS[name]
    events = moon_stream(300, 12, seed=seed)
    oracle = MoonOracle(spec.soft_delete is not None, spec.partial_updates)
    oracle.apply_all(events)
    table, outcomes = run_batched(spec, events, cuts)
    assert table.table() == oracle.table()
    assert {k: outcomes[k] for k in oracle.outcomes} == oracle.outcomes


def moon(key: str, version: int, change: str | None = None, **fields: Any) -> SourceRecord:
    event: dict[str, Any] = {"moonUuid": key, "moonVersion": version, **fields}
    if change is not None:
        event["changeType"] = change
    return records([MoonEvent(key, event)])[0]


def test_two_partial_updates_of_one_key_in_a_batch_both_count() -> None:
    spec = SPECS["PatchedMoon"]
    decisions = [
        route(moon("m", 2, moonSize=5), spec),
        route(moon("m", 3, moonColor="red"), spec),
    ]
    plan = resolve(decisions, {"m": Current(row=(1, 0, 0))})
    assert list(plan.patches) == ["m"]
    assert dict(plan.patches["m"].row) == {"uuid": "m", "size": 5, "color": "red"}
    assert plan.patches["m"].version == (3, 0, 0)


def test_a_patch_of_an_entity_the_table_does_not_have_needs_every_not_null_column() -> None:
    spec = SPECS["PatchedMoon"]
    lacking = route(moon("m", 2, moonSize=5), spec)
    assert isinstance(lacking, Upsert) and lacking.partial and lacking.missing == ("name",)
    plan = resolve([lacking], {})
    ((rejection, _),) = plan.outcomes
    assert isinstance(rejection, Rejection) and rejection.reason is RejectReason.INVALID_ROW
    assert "lacks name" in rejection.detail
    complete = route(moon("m", 2, moonName="Io"), spec)
    assert list(resolve([complete], {}).upserts) == ["m"]


def test_a_create_and_a_null_for_a_not_null_column_are_checked_in_full() -> None:
    spec = SPECS["PatchedMoon"]
    create = route(moon("m", 1, "CREATED", moonSize=1), spec)
    assert isinstance(create, Rejection) and create.reason is RejectReason.INVALID_ROW
    nulled = route(moon("m", 1, moonName=None), spec)
    assert isinstance(nulled, Rejection) and nulled.reason is RejectReason.INVALID_ROW


def test_a_soft_delete_keeps_the_row_and_an_older_create_stays_stale() -> None:
    spec = SPECS["SoftMoon"]
    table = MemoryTable(spec)
    for batch in (
        [moon("m", 1, "CREATED", moonName="Io")],
        [moon("m", 3, "DELETED")],
        [moon("m", 2, "CREATED", moonName="old")],
    ):
        table.apply(resolve([route(r, spec) for r in batch], table.current(), soft_deletes=True))
    assert table.table() == {"m": ("Io", None, None, True)}
    newer = route(moon("m", 4, "UPDATED", moonName="Io II"), spec)
    assert isinstance(newer, Upsert) and newer.row["deleted_at"] is None
    assert newer.change_type is ChangeType.UPDATED


def test_with_soft_deletes_a_create_then_delete_in_one_batch_leaves_a_marked_row() -> None:
    spec = SPECS["SoftMoon"]
    decisions = [
        route(moon("m", 1, "CREATED", moonName="Io"), spec),
        route(moon("m", 2, "DELETED"), spec),
    ]
    plan = resolve(decisions, {}, soft_deletes=True)
    assert list(plan.upserts) == ["m"] and isinstance(plan.deletes["m"], Delete)
    hard = resolve(decisions, {})
    assert not hard.upserts and list(hard.deletes) == ["m"]
