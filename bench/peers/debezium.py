"""Peer: Debezium's JDBC sink connector 3.6.0.Final in Kafka Connect standalone 4.4.

The jars come from Maven Central through devservices/connect-pom.xml (``connect_jars()``,
cached beside the broker's). The worker and connector settings are the two
``.properties`` files beside this module; the REST port is 18083 on 127.0.0.1 only.

The connector needs what the worker does not: values in JsonConverter's schema envelope
(``{"schema": ..., "payload": ...}``), and deletes as tombstones. So its topic gets the
bench's events re-encoded: each non-delete value wrapped whole in the envelope (its
twelve fields typed), each DELETED event replaced by a tombstone with the same key.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.launch import Launch, Process, group_offsets
from bench.measure import Event
from bench.peers import PeerSkipped
from devservices import kafka as dev_kafka

LABEL = "Debezium JDBC sink 3.6.0.Final"
#: Its own topic: values in JsonConverter's schema envelope, deletes as tombstones.
ENCODING = "debezium"
TABLE = "debezium_planet"
LIVE_ROWS_SQL = f"SELECT uuid, name FROM {TABLE}"
REST_PORT = 18083
HERE = Path(__file__).resolve().parent
#: The stock defaults of Kafka's connect-standalone.sh (KAFKA_HEAP_OPTS and
#: KAFKA_JVM_PERFORMANCE_OPTS), so the JVM is sized and tuned as users run it.
JVM_OPTIONS = (
    "-Xms256M",
    "-Xmx2G",
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
    "-Djava.awt.headless=true",
)


def _field(name: str, kind: str, **more: Any) -> dict[str, Any]:
    return {"field": name, "type": kind, "optional": name != "planetUuid", **more}


#: JsonConverter's schema of the bench's event value (bench/mirror_bench.py make_events).
VALUE_SCHEMA: dict[str, Any] = {
    "type": "struct",
    "name": "planet",
    "optional": False,
    "fields": [
        _field("planetUuid", "string"),
        _field("planetName", "string"),
        _field("massKg", "double"),
        _field("radiusKm", "double"),
        _field("orbitalPeriodDays", "double"),
        _field("discoveredBy", "string"),
        _field("discoveredAt", "string"),
        _field("habitable", "boolean"),
        _field("moons", "int32"),
        _field(
            "atmosphere",
            "struct",
            fields=[_field(gas, "double") for gas in ("n2", "o2", "ar")],
        ),
        _field("tags", "array", items={"type": "string", "optional": False}),
        _field("updatedBy", "string"),
        _field("changeType", "string"),
    ],
}


def available() -> None:
    """Raise PeerSkipped unless java and the Connect and Debezium jars are at hand."""
    try:
        dev_kafka.connect_jars()
    except dev_kafka.KafkaDevError as exc:
        raise PeerSkipped(str(exc)) from exc


#: The envelope around a value, joined as bytes: a million events are encoded per workload.
_ENVELOPE_HEAD = b'{"schema": ' + json.dumps(VALUE_SCHEMA).encode() + b', "payload": '


def encode_event(event: Event) -> Event:
    """The event as the connector needs it: a schema envelope, or a tombstone for DELETED."""
    assert event.value is not None
    if orjson.loads(event.value).get("changeType") == "DELETED":
        return Event(event.key, None)
    return Event(event.key, _ENVELOPE_HEAD + event.value + b"}")


def encode(events: Sequence[Event]) -> list[Event]:
    """The same events as the connector needs them (tests/unit/test_bench_peers.py)."""
    return [encode_event(event) for event in events]


def launch(bootstrap: str, db_url: str, topic: str, workdir: Path, batch: int) -> Launch:
    """Create the empty table and say how to run Connect with the connector on ``topic``."""
    jars = dev_kafka.connect_jars()
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", REST_PORT)) == 0:
            raise RuntimeError(f"127.0.0.1:{REST_PORT}, Connect's REST port, is already in use")
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(
            text(f"CREATE TABLE {TABLE} (uuid varchar(64) PRIMARY KEY, name varchar(255) NOT NULL)")
        )
    engine.dispose()
    url = make_url(db_url)
    name = f"{topic}-debezium"
    values = {
        "bootstrap": bootstrap,
        "rest_port": REST_PORT,
        "plugin_path": jars.plugin_path,
        "workdir": workdir,
        "name": name,
        "batch": batch,
        "topic": topic,
        "host": url.host,
        "port": url.port or 5432,
        "database": url.database,
        "user": url.username,
        "password": url.password,
        "table": TABLE,
    }
    configs = []
    for template in ("connect-standalone.properties", "debezium-jdbc-sink.properties"):
        path = workdir / f"{name}-{template}"
        path.write_text((HERE / template).read_text().format_map(values))
        configs.append(str(path))
    command = [
        jars.java,
        *JVM_OPTIONS,
        f"-Dlog4j2.configurationFile=file:{HERE / 'connect-log4j2.properties'}",
        "-cp",
        jars.classpath,
        "org.apache.kafka.connect.cli.ConnectStandalone",
        *configs,
    ]
    # Connect names a sink connector's consumer group connect-<connector name>.
    group = f"connect-{name}"
    return Launch(
        [Process(command, workdir / f"{name}.log")],
        workdir,
        group,
        group_offsets(group, topic),
        health=lambda: task_failure(name),
    )


def task_failure(name: str) -> str | None:
    """Say why the connector or its task has FAILED (Connect keeps running), or None."""
    url = f"http://127.0.0.1:{REST_PORT}/connectors/{name}/status"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            status = json.load(response)
    except (OSError, ValueError):  # REST not up yet, or the connector not created yet
        return None
    for part in (status.get("connector", {}), *status.get("tasks", [])):
        if part.get("state") == "FAILED":
            lines = str(part.get("trace", "")).strip().splitlines() or ["no trace"]
            causes = [line for line in lines if line.startswith("Caused by:")]
            return f"Connect task failed: {(causes or lines)[-1 if causes else 0]}"
    return None
