"""The bench's Debezium input: its change events decode, through the worker's Debezium format,
to the rows the changeType events they come from decode to (no services)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson

from bench import debezium_input
from bench.measure import Event
from bench.paths import MIRROR_DBZ, PLANET, _debezium_planet
from bench.peers import debezium, debezium_native
from bench.workload import iter_initial_load, make_events
from streams.core.decisions import ChangeType, Delete, Upsert
from streams.core.records import SourceRecord
from streams.core.routing import route_batch


def _records(topic: str, events: list[Event]) -> list[SourceRecord]:
    return [
        SourceRecord(topic, 0, n, 1_700_000_000_000 + n, e.key.encode(), e.value)
        for n, e in enumerate(events)
    ]


def _outcome(decision: Any) -> tuple[Any, ...]:
    """What a decision does to the table: the kind, the key, the row (no version)."""
    if isinstance(decision, Upsert):
        return ("upsert", decision.key, dict(decision.row), decision.change_type)
    assert isinstance(decision, Delete), decision
    return ("delete", decision.key)


def test_change_events_decode_to_the_rows_of_the_changetype_events() -> None:
    events = make_events(2_000, 200, 3) + list(iter_initial_load(200, 4))
    spec = _debezium_planet()
    expected = [_outcome(d) for d in route_batch(_records(PLANET.topic, events), PLANET)]
    records = [r for e in events for r in debezium_input.encode_event(e)]
    decided = route_batch(_records(spec.topic, records), spec, orjson.loads)
    # Each event is one change event; a delete's is followed by a tombstone of the same key.
    changes, n = [], 0
    for event in events:
        changes.append(_outcome(decided[n]))
        if json.loads(event.value or b"").get("changeType") == "DELETED":
            assert records[n + 1] == Event(records[n].key, None)
            assert _outcome(decided[n + 1]) == ("delete", event.key)
            n += 1
        n += 1
    assert n == len(records)
    assert changes == expected
    kinds = {c[0] for c in changes} | {c[3] for c in changes if c[0] == "upsert"}
    assert kinds == {"upsert", "delete", ChangeType.CREATED, ChangeType.UPDATED}


def test_change_events_are_what_the_jsonconverter_writes() -> None:
    (created,) = debezium_input.encode_event(make_events(1, 1, 5)[0])
    deleted = next(e for e in make_events(200, 20, 5) if b'"DELETED"' in (e.value or b""))
    change, tombstone = debezium_input.encode_event(deleted)
    for record in (created, change):
        assert record.value is not None and b'": ' not in record.value  # Jackson: compact
        value = json.loads(record.value)
        assert value["schema"] == debezium_input.VALUE_SCHEMA
        fields = [f["field"] for f in debezium_input.VALUE_SCHEMA["fields"]]
        assert list(value["payload"]) == fields  # every field, in the schema's order
        key = json.loads(record.key)
        assert key["schema"] == debezium_input.KEY_SCHEMA
        row_fields = {f["field"] for f in debezium_input.ROW_FIELDS}
        row = value["payload"]["after"] or value["payload"]["before"]
        assert set(row) == row_fields
    assert json.loads(change.value or b"")["payload"]["op"] == "d"
    assert tombstone.value is None and tombstone.key == change.key
    assert json.loads(change.key)["payload"] == {"uuid": deleted.key}


def test_the_worker_and_the_native_sink_read_one_topic() -> None:
    assert MIRROR_DBZ.encoding == debezium_native.ENCODING == debezium_input.ENCODING
    assert _debezium_planet().topic == f"{debezium_input.ENCODING}.planet-changed"
    event = make_events(1, 1, 6)[0]
    mine, theirs = MIRROR_DBZ.encode(event), debezium_native.encode_event(event)
    assert [r.key for r in mine] == [r.key for r in theirs]


def _properties(text: str) -> dict[str, str]:
    lines = (line for line in text.splitlines() if line and not line.startswith("#"))
    return dict(line.split("=", 1) for line in lines)


def test_the_native_sink_reads_the_envelope_itself_with_no_transform(tmp_path: Path) -> None:
    url = "postgresql+psycopg2://u:p@127.0.0.1:5432/db"
    sink = _properties(
        debezium.sink_config(
            url, name="n", topic="t", batch=7, template=debezium_native.TEMPLATES[1]
        )
    )
    assert not {k for k in sink if k.startswith("transforms")}
    assert sink["primary.key.mode"] == "record_key"
    assert sink["primary.key.fields"] == "uuid"
    assert sink["delete.enabled"] == "true"
    assert sink["field.include.list"] == "t:uuid,t:name"
    # Every other setting as the sink's on changeType JSON, so the two rows compare.
    reshaped = _properties(debezium.sink_config(url, name="n", topic="t", batch=7))
    same = {k: v for k, v in reshaped.items() if not k.startswith("transforms")}
    assert {k: v for k, v in sink.items() if k != "field.include.list"} == same
    worker = _properties(
        debezium.worker_config(
            "b:9092",
            plugin_path=tmp_path,
            workdir=tmp_path,
            batch=7,
            name="n",
            template=debezium_native.TEMPLATES[0],
        )
    )
    assert worker["key.converter"] == worker["value.converter"]
    assert worker["key.converter"] == "org.apache.kafka.connect.json.JsonConverter"
    assert worker["key.converter.schemas.enable"] == "true"
