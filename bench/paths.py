"""The measured paths, each told how to start on a topic and where its rows land.

A path is the worker (cached, as shipped; with its cache off; two processes in one group) or
a peer (``bench/peers/``), writing to PostgreSQL or, as ``<name>_mariadb``
(:func:`on_database`), to MariaDB. Paths reading the worker's JSON share one topic per
workload; a peer that needs its records encoded otherwise (Debezium's schema envelope) reads
a topic of its own holding the same events, whatever database it writes to.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shutil
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Protocol

from aiokafka.admin import AIOKafkaAdminClient

from bench import debezium_input
from bench.launch import Launch, Process
from bench.measure import Event
from bench.peers import debezium as peer_debezium
from bench.peers import debezium_native as peer_debezium_native
from bench.peers import quix as peer_quix
from bench.servers import DEFAULT, SERVERS
from models.planet import Planet
from models.registry import EntitySpec, build_spec, default_registry
from models.store import SqlStore

ROOT = Path(__file__).resolve().parents[1]
#: The worker's topic, after its TOPIC_PREFIX.
WORKER_TOPIC = "planet-changed"
#: ``bench/uncached_planet.py``'s table. Not imported: it declares the planet's topic too,
#: and one process may declare a topic once (the worker that runs it imports it).
UNCACHED_TABLE = "bench_uncached_planet"
PLANET = build_spec(Planet)
#: The inputs ``--inputs`` chooses from: the worker's changeType JSON, or the same events as
#: Debezium change events (``bench/debezium_input.py``).
INPUTS = ("changetype", "debezium")


class BenchPath(Protocol):
    """What the bench needs of a path."""

    @property
    def name(self) -> str:
        """Key in BENCH_JSON and in the report's columns."""

    @property
    def label(self) -> str:
        """What the report calls it."""

    @property
    def table(self) -> str:
        """The table its rows land in (polled by ``uuid`` for the freshness markers)."""

    @property
    def live_rows_sql(self) -> str:
        """Reads the table's live rows (``uuid``, ``name``) for the check."""

    @property
    def encoding(self) -> str:
        """``json`` for the worker's records as they are; else the peer's own topic is used."""

    @property
    def database(self) -> str:
        """The server it writes to (``bench.servers.SERVERS``' key)."""

    def available(self) -> None:
        """Raise ``PeerSkipped`` saying why the path cannot run here."""

    def encode(self, event: Event) -> Sequence[Event]:
        """The records its topic holds for ``event``."""

    def launch(self, bootstrap: str, db_url: str, prefix: str, workdir: Path, batch: int) -> Launch:
        """Create its table in ``db_url`` and say how to start it on :func:`topic_of` ``prefix``."""


def topic_of(path: BenchPath, prefix: str) -> str:
    """The topic ``path`` reads among a workload's topics named ``prefix...``."""
    if path.encoding == "json":
        return f"{prefix}{WORKER_TOPIC}"
    return f"{prefix}{path.encoding}.{WORKER_TOPIC}"


@dataclass(frozen=True, slots=True)
class WorkerPath:
    """``faust -A streams.app worker`` processes in one group, as users run them."""

    name: str = "mirror"
    label: str = "this project's worker"
    cached: bool = True
    """False: ``bench/uncached_planet.py`` (``__cached__ = False``) instead of the planet."""
    processes: int = 1
    partitions: int = 4
    """Of the topics the worker makes (its cached table's changelog, its repartition topic)."""
    repartition: bool = False
    """Forward the topic through the worker's repartition topic first (``REPARTITION``)."""
    encoding: str = "json"
    """``debezium-events``: Debezium change events, read by ``bench/debezium_planet.py``."""
    checkout: Path | None = None
    """Run the worker of another checkout of this repository (``--against``): its code, this
    venv. None: this checkout."""
    database: str = DEFAULT
    """The server it writes to (``bench.servers.SERVERS``' key)."""

    @property
    def debezium_input(self) -> bool:
        return self.encoding == debezium_input.ENCODING

    @property
    def table(self) -> str:
        if self.debezium_input:
            return DEBEZIUM_TABLE
        return PLANET.table.name if self.cached else UNCACHED_TABLE

    @property
    def entity_module(self) -> str:
        if self.debezium_input:
            return "bench.debezium_planet"
        return "models.planet" if self.cached else "bench.uncached_planet"

    @property
    def spec(self) -> EntitySpec | None:
        """The entity whose table the bench creates (None: the worker creates it)."""
        if self.debezium_input:
            return _debezium_planet()
        return PLANET if self.cached else None

    @property
    def live_rows_sql(self) -> str:
        return f"SELECT uuid, name FROM {self.table}"

    def available(self) -> None:
        """The worker always runs."""

    def encode(self, event: Event) -> Sequence[Event]:
        if self.debezium_input:
            return debezium_input.encode_event(event)
        return (event,)

    def launch(self, bootstrap: str, db_url: str, prefix: str, workdir: Path, batch: int) -> Launch:
        app_id = f"{prefix}{self.name}"
        store = SqlStore.from_url(db_url)
        # The bookkeeping tables (stored offsets) at least: the progress is read from the start.
        store.create_tables([self.spec] if self.spec is not None else [])
        topic = topic_of(self, prefix)
        base: Mapping[str, str] = {
            **os.environ,
            "KAFKA_BROKER": f"kafka://{bootstrap}",
            "DATABASE_URL": db_url,
            "APP_ID": app_id,
            "TOPIC_PREFIX": prefix,
            "BATCH_SIZE": str(batch),
            "TOPIC_PARTITIONS": str(self.partitions),
            "ENTITY_MODULES": self.entity_module,
        }
        if self.checkout is not None:
            # ``python -m`` puts the working directory first on sys.path, before the venv's
            # editable install of this checkout; PYTHONPATH says it again for any child.
            base = {**base, "PYTHONPATH": str(self.checkout)}
        if self.repartition:
            # Each record is forwarded once (nothing crashes here): caught up once the offsets
            # stored for the repartition topic add up to every event.
            base = {**base, "REPARTITION": "planet"}
            topic = f"{app_id}-{topic}-repartition"
        data_dirs = [workdir / f"{app_id}-{i}" for i in range(self.processes)]
        ports = [free_port() for _ in data_dirs]
        processes = [
            Process(
                [sys.executable, "-m", "faust", "-A", "streams.app", "worker", "-l", "info"],
                workdir / f"{app_id}-{i}.log",
                {**base, "WEB_PORT": str(port), "DATA_DIR": str(data_dir)},
            )
            for i, (data_dir, port) in enumerate(zip(data_dirs, ports, strict=True))
        ]

        async def assigned() -> bool:
            for port in ports:
                if await asyncio.to_thread(_holds_partitions, port, topic):
                    return True
            return False

        async def stored_offsets(admin: AIOKafkaAdminClient) -> Mapping[int, int]:
            # Stored in the transaction that wrote the rows: the worker's applied offsets.
            return {p: o for (t, p), o in store.stored_offsets(app_id).items() if t == topic}

        def clean_up() -> None:
            store.dispose()
            for data_dir in data_dirs:  # the cached table's files; the logs stay
                shutil.rmtree(data_dir, ignore_errors=True)

        cwd = ROOT if self.checkout is None else self.checkout
        return Launch(
            processes, cwd, app_id, stored_offsets, assigned=assigned, cleanup=(clean_up,)
        )


@dataclass(frozen=True, slots=True)
class PeerPath:
    """A peer, driven through the names every module of ``bench/peers/`` has."""

    name: str
    peer: ModuleType
    database: str = DEFAULT
    """The server it writes to (``bench.servers.SERVERS``' key)."""

    @property
    def label(self) -> str:
        where = "" if self.database == DEFAULT else f" on {SERVERS[self.database].label}"
        return f"{self.peer.LABEL}{where}"

    @property
    def table(self) -> str:
        return str(self.peer.TABLE)

    @property
    def live_rows_sql(self) -> str:
        return str(self.peer.LIVE_ROWS_SQL)

    @property
    def encoding(self) -> str:
        return str(self.peer.ENCODING)

    def available(self) -> None:
        self.peer.available()

    def encode(self, event: Event) -> Sequence[Event]:
        encoded: Event | Sequence[Event] = self.peer.encode_event(event)
        return (encoded,) if isinstance(encoded, Event) else encoded

    def launch(self, bootstrap: str, db_url: str, prefix: str, workdir: Path, batch: int) -> Launch:
        topic = topic_of(self, prefix)
        name = f"{prefix}{self.name}"
        launch: Launch = self.peer.launch(bootstrap, db_url, topic, workdir, batch, name)
        return launch


MIRROR = WorkerPath()
UNCACHED = WorkerPath(name="mirror_uncached", label="the worker, cache off", cached=False)
SCALED = WorkerPath(name="mirror_x2", label="two workers, one group", processes=2)
PEERS: tuple[PeerPath, ...] = (PeerPath("quix", peer_quix), PeerPath("debezium", peer_debezium))
#: On Debezium input (``--inputs debezium``): the worker reading the change events as an entity
#: declared ``__input_format__ = "debezium"``, and Debezium's JDBC sink reading them natively.
MIRROR_DBZ = WorkerPath(
    name="mirror_dbz", label="the worker, Debezium input", encoding=debezium_input.ENCODING
)
DEBEZIUM_DBZ = PeerPath("debezium_dbz", peer_debezium_native)
#: The Debezium-input path of each path (``--paths`` names), by its name.
ON_DEBEZIUM_INPUT: Mapping[str, WorkerPath | PeerPath] = {
    "mirror": MIRROR_DBZ,
    "debezium": DEBEZIUM_DBZ,
}
#: The paths that also run on another database (``--databases``): the worker and Debezium's
#: JDBC sink, whose dialects cover MySQL and MariaDB (Quix's sink is PostgreSQL's only).
ON_EVERY_DATABASE = ("mirror", "debezium", "mirror_dbz", "debezium_dbz")
#: ``bench/debezium_planet.py``'s table (the module is imported by the worker that reads it).
DEBEZIUM_TABLE = "bench_debezium_planet"


@functools.cache
def _debezium_planet() -> EntitySpec:
    """The spec of ``bench/debezium_planet.py``'s model, built once; out of the default registry,
    which this process's planet alone is in (the worker that reads it imports the module)."""
    from bench.debezium_planet import DebeziumPlanet

    spec = build_spec(DebeziumPlanet)
    default_registry.unregister(DebeziumPlanet)
    return spec


def on_database(path: WorkerPath | PeerPath, database: str) -> WorkerPath | PeerPath:
    """``path`` writing to ``database`` instead: named ``<name>_<database>``, labelled so."""
    name = f"{path.name}_{database}"
    if isinstance(path, PeerPath):
        return replace(path, name=name, database=database)
    return replace(
        path, name=name, label=f"{path.label} on {SERVERS[database].label}", database=database
    )


def _holds_partitions(port: int, topic: str) -> bool:
    """Whether the worker on ``port`` says it holds a partition of ``topic`` (``/partitions``)."""
    try:
        url = f"http://127.0.0.1:{port}/partitions"
        with urllib.request.urlopen(url, timeout=0.5) as response:
            body = json.load(response)
    except (OSError, ValueError):  # not serving yet
        return False
    return any(str(p).startswith(f"{topic}[") for p in body.get("assigned", ()))


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
