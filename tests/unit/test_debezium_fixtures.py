"""The real connector's events (tests/fixtures/debezium/, captured and checked every run by
tests/integration/test_debezium_capture.py) decided by the models of the pipeline test: every
column type as the real connector encodes it reaches its column as the column holds it."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from models.registry import EntitySpec, build_spec, default_registry
from streams.core.decisions import Decision, Delete, Rejection, RejectReason, Upsert
from streams.core.records import SourceRecord
from streams.core.routing import route_batch
from tests.models.debezium_flat_pipeline import FlatPipelineCustomer, FlatPipelineOrderLine
from tests.models.debezium_pipeline import PipelineCustomer, PipelineOrderLine

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "debezium"


for _model in (PipelineCustomer, PipelineOrderLine, FlatPipelineCustomer, FlatPipelineOrderLine):
    default_registry.unregister(_model)
SPECS = {
    ("schemas", "pipeline_customer"): build_spec(PipelineCustomer),
    ("plain", "pipeline_customer"): build_spec(PipelineCustomer),
    ("flat", "pipeline_customer"): build_spec(FlatPipelineCustomer),
    ("schemas", "pipeline_order_line"): build_spec(PipelineOrderLine),
    ("flat", "pipeline_order_line"): build_spec(FlatPipelineOrderLine),
}

#: c1 as the snapshot read it (tests/integration/test_debezium_capture.py's SNAPSHOT).
C1 = {
    "id": "c1",
    "name": "Ada",
    "visits": 3,
    "points": 9_000_000_000,
    "active": True,
    "balance": Decimal("12.50"),
    "seen_at": datetime(2026, 1, 2, 3, 4, 5, 123456),
    "changed_at": datetime(2026, 1, 2, 1, 4, 5, 500000, tzinfo=UTC),
    "born_on": date(1990, 5, 17),
    "ref": uuid.UUID("0f8fad5b-d9cb-469f-a165-70867728950e"),
    "notice": timedelta(days=3, hours=4, minutes=5, seconds=6.5),
    "amount": Decimal("-1234567890123456789012345678.9012345678"),
}


def decisions(variant: str, table: str) -> tuple[EntitySpec, list[Decision]]:
    fixture = json.loads((FIXTURES / f"{variant}.{table}.json").read_text())
    spec = SPECS[variant, table]
    records = [
        SourceRecord(
            spec.topic,
            0,
            offset,
            1_700_000_000_000 + offset,
            None if r["key"] is None else r["key"].encode(),
            None if r["value"] is None else r["value"].encode(),
        )
        for offset, r in enumerate(fixture["records"])
    ]
    return spec, route_batch(records, spec)


def public(row: Any) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k in C1}


@pytest.mark.parametrize("variant", ["schemas", "flat"])
def test_every_record_of_an_exact_setting_is_applied_with_every_value_as_its_column_holds_it(
    variant: str,
) -> None:
    _, decided = decisions(variant, "pipeline_customer")
    assert not [d for d in decided if isinstance(d, Rejection)]
    c1 = decided[0]
    assert isinstance(c1, Upsert) and c1.key == "c1"
    row = public(c1.row)
    if variant == "flat":  # isostring: the timestamp without a zone as UTC text, kept by value
        row["seen_at"] = row["seen_at"].replace(tzinfo=None)
    assert row == C1
    c3 = decided[2]
    assert isinstance(c3, Upsert)
    assert c3.row["notice"] == timedelta(days=-1, microseconds=1)
    assert c3.row["amount"] == Decimal("1E-10")
    assert c3.row["ref"] == uuid.UUID(int=0)
    assert [type(d).__name__ for d in decided] == [
        "Upsert",  # the snapshot: c1, c2, c3
        "Upsert",
        "Upsert",
        "Upsert",  # c4 inserted
        "Upsert",  # c1 updated
        "Delete",  # c2 deleted, then its tombstone
        "Delete",
        "Delete",  # c3 rekeyed to c3b: the old key's delete and tombstone, the new key's create
        "Delete",
        "Upsert",
    ]


def test_without_schemas_a_precise_decimal_is_refused_saying_what_to_set() -> None:
    # decimal.handling.mode=precise without schemas writes base64 with no scale.
    _, decided = decisions("plain", "pipeline_customer")
    refused = [d for d in decided if isinstance(d, Rejection)]
    # The rows with an amount: c1, c3, c4, c1 updated, c3b.
    assert {d.record.offset for d in refused} == {0, 2, 3, 4, 9}
    assert all(d.reason is RejectReason.INVALID_ROW for d in refused)
    assert all("decimal.handling.mode=string" in d.detail for d in refused)


@pytest.mark.parametrize("variant", ["schemas", "flat"])
def test_the_composite_keyed_table_is_applied_whole(variant: str) -> None:
    _, decided = decisions(variant, "pipeline_order_line")
    assert not [d for d in decided if isinstance(d, Rejection)]
    deletes = [d.key for d in decided if isinstance(d, Delete)]
    assert deletes == [("o-2", 1), ("o-2", 1), ("o-1", 2), ("o-1", 2)]
