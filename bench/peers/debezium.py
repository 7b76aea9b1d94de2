"""Peer: Debezium's JDBC sink connector 3.6.0.Final in Kafka Connect standalone 4.4.

The jars come from Maven Central through devservices/connect-pom.xml (``connect_jars()``,
cached beside the broker's), and Connect is started as ``devservices/connect.py`` says (the
shared worker settings, the log configuration, the command line). The peer's own worker and
connector settings are the two ``.properties`` files beside this module; the REST port is
18083 on 127.0.0.1 only.

It writes to PostgreSQL or to MariaDB with the same settings but the JDBC URL
(``JDBC_URLS``): the connector picks its dialect from the database it connects to
(``MariaDbDatabaseDialect``: upserts as ``INSERT ... ON DUPLICATE KEY UPDATE``), and its
plugin archive bundles the drivers of both (``postgresql-42.7.11.jar``,
``mariadb-java-client-3.5.3.jar``), loaded by the plugin's own class loader, so Connect's
class path (connect-pom.xml) needs neither.

The connector needs what the worker does not: values in JsonConverter's schema envelope
(``{"schema": ..., "payload": ...}``), and deletes as tombstones. So its topic gets the
bench's events re-encoded: each non-delete value wrapped whole in the envelope (its
twelve fields typed), each DELETED event replaced by a tombstone with the same key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.launch import Launch, Process, group_offsets
from bench.measure import Event
from bench.peers import PeerSkipped
from devservices import connect
from devservices import kafka as dev_kafka

LABEL = "Debezium JDBC sink 3.6.0.Final"
#: Its own topic: values in JsonConverter's schema envelope, deletes as tombstones.
ENCODING = "debezium"
TABLE = "debezium_planet"
LIVE_ROWS_SQL = f"SELECT uuid, name FROM {TABLE}"
REST_PORT = 18083
#: The JDBC URL of a database, by the SQLAlchemy backend of the bench's URL for it.
JDBC_URLS = {
    # reWriteBatchedInserts: pgJDBC sends a batch as multi-row INSERTs, not one per row.
    "postgresql": "jdbc:postgresql://{host}:{port}/{database}?reWriteBatchedInserts=true",
    # MariaDB Connector/J 3.5 has no rewrite into multi-row INSERTs (rewriteBatchedStatements
    # went in 3.0): it pipelines a batch, one statement a row. useServerPrepStmts: each row
    # goes as a binary execute of one statement prepared once, not a text query the server
    # parses again: 11,378 and 12,289 events/s against 7,250 and 8,773 without (200,000
    # events, alternating), the server's CPU 37 against 60 to 68 us/event. Its bulk protocol
    # takes an INSERT ... ON DUPLICATE KEY UPDATE only from a server that returns per-row
    # bulk results (MariaDB 11.5; ClientPreparedStatement.executeInternalPreparedBatch): on
    # 10.11 useBulkStmts=true changed nothing.
    "mysql": "jdbc:mariadb://{host}:{port}/{database}?useServerPrepStmts=true",
}
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


def jdbc_url(db_url: str) -> str:
    """Return the JDBC URL of the database of SQLAlchemy URL ``db_url`` (``JDBC_URLS``)."""
    url = make_url(db_url)
    template = JDBC_URLS.get(url.get_backend_name())
    if template is None:
        raise ValueError(f"no JDBC URL for {url.get_backend_name()} databases (JDBC_URLS)")
    return template.format(host=url.host, port=url.port, database=url.database)


def sink_config(
    db_url: str,
    *,
    name: str,
    topic: str,
    batch: int,
    template: str = "debezium-jdbc-sink.properties",
) -> str:
    """Return the connector's settings (``template`` beside this module, filled in)."""
    url = make_url(db_url)
    values = {
        "name": name,
        "topic": topic,
        "jdbc_url": jdbc_url(db_url),
        "user": url.username,
        "password": url.password,
        "batch": batch,
        "table": TABLE,
    }
    return _filled(template, values)


def _filled(template: str, values: Mapping[str, object]) -> str:
    """The ``.properties`` file ``template`` beside this module, its names in braces filled."""
    return (HERE / template).read_text().format_map(values)


def worker_config(
    bootstrap: str,
    *,
    plugin_path: Path,
    workdir: Path,
    batch: int,
    name: str,
    template: str = "connect-standalone.properties",
) -> str:
    """Return the Connect worker's settings: the shared ones (devservices/connect.py), then
    the peer's own (``template`` beside this module)."""
    return connect.worker_properties(
        bootstrap=bootstrap,
        rest_port=REST_PORT,
        plugin_path=plugin_path,
        offsets_file=workdir / f"connect-{name}.offsets",
        extra=_filled(template, {"rest_port": REST_PORT, "batch": batch}),
    )


def launch(
    bootstrap: str,
    db_url: str,
    topic: str,
    workdir: Path,
    batch: int,
    name: str,
    *,
    templates: tuple[str, str] = ("connect-standalone.properties", "debezium-jdbc-sink.properties"),
) -> Launch:
    """Create the empty table and say how to run Connect with connector ``name`` on ``topic``
    (``templates``: the worker's and the connector's settings beside this module)."""
    jars = dev_kafka.connect_jars()
    connect.require_free(REST_PORT)
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(
            text(f"CREATE TABLE {TABLE} (uuid varchar(64) PRIMARY KEY, name varchar(255) NOT NULL)")
        )
    engine.dispose()
    worker, sink = templates
    settings = {
        worker: worker_config(
            bootstrap,
            plugin_path=jars.plugin_path,
            workdir=workdir,
            batch=batch,
            name=name,
            template=worker,
        ),
        sink: sink_config(db_url, name=name, topic=topic, batch=batch, template=sink),
    }
    configs = []
    for file_name, content in settings.items():
        path = workdir / f"{name}-{file_name}"
        path.write_text(content)
        configs.append(path)
    command = connect.standalone_command(jars, JVM_OPTIONS, configs)
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
    return connect.task_failure(REST_PORT, name)
