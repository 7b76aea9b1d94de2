"""The bench's expected state and the peers' encodings of the bench's events (no services)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.measure import Event, newest_state
from bench.mirror_bench import make_events
from bench.peers import debezium, quix


def _event(key: str, change: str | None, name: str = "n") -> Event:
    body: dict[str, object] = {"planetUuid": key, "planetName": name}
    if change is not None:
        body["changeType"] = change
    return Event(key, json.dumps(body).encode())


def test_newest_state_keeps_each_keys_newest_event_and_drops_deletes() -> None:
    events = [
        _event("a", "CREATED", "a1"),
        _event("a", "DELETED"),
        _event("b", "DELETED"),
        _event("b", None, "b1"),
        _event("c", "UPDATED", "c1"),
        _event("c", "UPDATED", "c2"),
        Event("c", None),
    ]
    assert newest_state(events) == {"b": "b1"}


def test_debezium_encoding_types_every_field_and_turns_deletes_into_tombstones() -> None:
    events = make_events(500, 50, 1)
    encoded = debezium.encode(events)
    assert [e.key for e in encoded] == [e.key for e in events]
    typed = {f["field"] for f in debezium.VALUE_SCHEMA["fields"]}
    for before, after in zip(events, encoded, strict=True):
        assert before.value is not None
        body = json.loads(before.value)
        if body.get("changeType") == "DELETED":
            assert after.value is None
        else:
            assert after.value is not None
            envelope = json.loads(after.value)
            assert envelope["payload"] == body
            assert set(body) <= typed


def test_quix_rows_always_carry_every_column() -> None:
    rows = [quix.to_row(json.loads(e.value or b"")) for e in make_events(500, 50, 1)]
    assert {tuple(sorted(r)) for r in rows} == {("deleted", "name", "uuid")}
    assert all(r["name"] == "" for r in rows if r["deleted"])


def _properties(text: str) -> dict[str, str]:
    lines = (line for line in text.splitlines() if line and not line.startswith("#"))
    return dict(line.split("=", 1) for line in lines)


def test_debeziums_connect_worker_has_the_shared_settings_and_its_own(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    text = debezium.worker_config(
        "127.0.0.1:9092", plugin_path=plugins, workdir=tmp_path, batch=7, name="n"
    )
    port = debezium.REST_PORT
    assert _properties(text) == {
        "bootstrap.servers": "127.0.0.1:9092",
        "listeners": f"http://127.0.0.1:{port}",
        "rest.advertised.host.name": "127.0.0.1",
        "rest.advertised.port": str(port),
        "plugin.path": str(plugins),
        "plugin.discovery": "service_load",
        "offset.storage.file.filename": str(tmp_path / "connect-n.offsets"),
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "true",
        "offset.flush.interval.ms": "200",
        "consumer.max.poll.records": "7",
    }
