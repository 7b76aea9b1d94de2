"""A real Kafka broker for tests and local runs, from Maven jars, without Docker.

The integration tests must never skip because Kafka is missing, so this module
starts one: it resolves the broker jars with Maven into a git-ignored cache, formats
KRaft storage once, launches each node detached (it outlives the test run, so the
next run starts in about a second), and waits until a metadata request answers.

Three layouts, which can run at the same time:

* single node (``nodes=1``): broker ``127.0.0.1:9092``, controller ``127.0.0.1:9093``,
  replication factor 1;
* three-node cluster (``nodes=3``): node *i* (1-based, also its ``node.id``) listens
  as broker on ``CLUSTER_BASE_PORT + 2*(i-1)`` and as controller on the next port, so
  brokers 19092/19094/19096 and controllers 19093/19095/19097; replication factor 3,
  ``min.insync.replicas=2``;
* the secure single node (``devservices/kafka_secure.py``): a ``SASL_SSL`` listener on
  ``127.0.0.1:29092`` (SCRAM-SHA-512, a test CA), controller ``127.0.0.1:29093``.

Cache layout (``<repo>/.cache/kafka``, or ``$MIRROR_CACHE_DIR/kafka``)::

    libs/                 jars of the pinned version, ``.resolved`` marker
    single/node1/         server.properties, data/, kafka.log, kafka.pid
    cluster3/node{1,2,3}/ the same per node, plus cluster3/cluster.id
    secure/node1/         the same, plus secure/tls/ (the test CA and the server's key)
    connect/              Kafka Connect, Debezium's JDBC sink (the benchmark's peer) and its
                          PostgreSQL connector (the tests'): ``connect_jars()``, from
                          connect-pom.xml: libs/, plugins/

Command line: ``python -m devservices.kafka start|stop|status|reset [--nodes 3|--secure|--all]``.
Only the standard library and aiokafka are imported (and trustme, for the secure layout).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import errno
import fcntl
import gc
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from devservices.processes import cmdline, is_alive

#: Kafka release the jars are resolved for. Newest one checked against aiokafka 0.14 and
#: faust-streaming 0.15.3 (admin, idempotent producer, groups, a Faust worker with a table).
KAFKA_VERSION = "4.4.0"
#: Broker port of the single node; its controller listens on the next port.
SINGLE_PORT = 9092
#: Broker port of cluster node 1; node i uses CLUSTER_BASE_PORT + 2*(i-1), controller +1.
CLUSTER_BASE_PORT = 19092

_LAYOUTS = (1, 3)
HOST = "127.0.0.1"
_PACKAGE_DIR = Path(__file__).resolve().parent
_POM = _PACKAGE_DIR / "pom.xml"
_CONNECT_POM = _PACKAGE_DIR / "connect-pom.xml"
_LOG_CONFIG = _PACKAGE_DIR / "log4j2.properties"
_RESOLVED_MARKER = ".resolved"
_STOP_GRACE = 30.0
_LOG_ROTATE_BYTES = 8 * 1024 * 1024
# Light enough for a 2-core box; C1 only (TieredStopAtLevel=1) starts the broker faster
# and the tests never run long enough for C2 to pay off. The heap may grow to 1 GiB: a broker
# kept through a day of suites and bench runs (13,000 partitions) ran out of 512 MiB and exited.
_JVM_OPTIONS = (
    "-Xms256m",
    "-Xmx1g",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

_log = logging.getLogger(__name__)


class KafkaDevError(RuntimeError):
    """An expected failure (Java or Maven missing, port busy, start timeout); one-line message."""


@dataclass(frozen=True, slots=True)
class Layout:
    """One way of running Kafka here: its folder, its nodes and ports, how clients connect.

    This one has a PLAINTEXT broker listener; ``kafka_secure.SecureLayout`` overrides the
    methods for a SASL_SSL one.
    """

    name: str
    """Folder of the layout in the cache."""
    nodes: int
    """Combined broker and controller processes; node.id 1..nodes."""
    base_port: int
    """Broker port of node 1; node i listens on base_port + 2*(i-1), its controller on +1."""

    def prepare(self, folder: Path) -> None:
        """Write what the nodes' configuration refers to (nothing for PLAINTEXT)."""

    def listener_properties(self, node: Node) -> list[str]:
        """Return the server.properties lines of a node's listeners."""
        return [
            f"listeners=PLAINTEXT://{HOST}:{node.broker_port},"
            f"CONTROLLER://{HOST}:{node.controller_port}",
            f"advertised.listeners=PLAINTEXT://{HOST}:{node.broker_port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        ]

    def format_arguments(self) -> list[str]:
        """Return extra ``kafka-storage format`` arguments (users made at format time)."""
        return []

    def client_options(self) -> dict[str, Any]:
        """Return the aiokafka keyword arguments a client of this layout needs."""
        return {}


SINGLE = Layout("single", 1, SINGLE_PORT)
CLUSTER3 = Layout("cluster3", 3, CLUSTER_BASE_PORT)


@dataclass(frozen=True, slots=True)
class Node:
    """One Kafka process of a layout."""

    layout: Layout
    index: int
    dir: Path
    broker_port: int
    controller_port: int

    @property
    def config(self) -> Path:
        return self.dir / "server.properties"

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def log(self) -> Path:
        return self.dir / "kafka.log"

    @property
    def pid_file(self) -> Path:
        return self.dir / "kafka.pid"


# --- paths and layout -------------------------------------------------------------------


def cache_dir() -> Path:
    """Return the Kafka cache folder (jars and broker data), honouring ``MIRROR_CACHE_DIR``."""
    override = os.environ.get("MIRROR_CACHE_DIR")
    base = Path(override).expanduser() if override else _PACKAGE_DIR.parent / ".cache"
    return base.resolve() / "kafka"


def _libs_dir() -> Path:
    return cache_dir() / "libs"


def layout_dir(layout: int | Layout) -> Path:
    """Return the folder of a layout (its nodes, and what ``Layout.prepare`` writes)."""
    return cache_dir() / _layout(layout).name


def _layout(layout: int | Layout) -> Layout:
    """Return the layout itself, or the PLAINTEXT one of that many nodes (1 or 3)."""
    if isinstance(layout, Layout):
        return layout
    if layout not in _LAYOUTS:
        raise ValueError(f"nodes must be one of {_LAYOUTS}, not {layout}")
    return SINGLE if layout == 1 else CLUSTER3


def _node(layout: int | Layout, index: int) -> Node:
    layout = _layout(layout)
    if not 1 <= index <= layout.nodes:
        raise ValueError(f"node index must be 1..{layout.nodes} (it is the node.id), not {index}")
    broker = layout.base_port + 2 * (index - 1)
    return Node(layout, index, layout_dir(layout) / f"node{index}", broker, broker + 1)


def _all_nodes(layout: int | Layout) -> list[Node]:
    layout = _layout(layout)
    return [_node(layout, i) for i in range(1, layout.nodes + 1)]


def bootstrap_servers(layout: int | Layout = 1) -> str:
    """Return the bootstrap address of a layout, whether or not it is running."""
    return ",".join(f"{HOST}:{n.broker_port}" for n in _all_nodes(layout))


def log_path(layout: int | Layout, index: int) -> Path:
    """Return the log file of one node (broker log and JVM output); index is 1-based."""
    return _node(layout, index).log


# --- public lifecycle -------------------------------------------------------------------


def start(layout: int | Layout = 1, *, timeout: float = 120.0) -> str:
    """Start the layout unless it is already up and healthy; return its bootstrap address."""
    layout = _layout(layout)
    bootstrap = bootstrap_servers(layout)
    with _locked(layout_dir(layout)):
        if is_running(layout) and _brokers_seen(layout, bootstrap, 5.0) >= layout.nodes:
            return bootstrap
        launched = _launch_missing(layout)
        try:
            _wait_ready(layout, time.monotonic() + timeout)
        except BaseException:
            for node in launched:
                _terminate(node)
            raise
    return bootstrap


def stop(layout: int | Layout = 1, *, wipe: bool = False) -> None:
    """Stop every node of the layout (SIGTERM, SIGKILL after 30 s); ``wipe`` deletes its data."""
    with _locked(layout_dir(layout)):
        _terminate(*_all_nodes(layout))
        if wipe:
            _wipe(layout)


def reset(layout: int | Layout = 1) -> None:
    """Stop the layout and delete its data, so the next start formats fresh storage."""
    stop(layout, wipe=True)


def stop_node(layout: int | Layout, index: int) -> None:
    """Stop one node (1-based index) for fault tests; the rest of the layout keeps running."""
    with _locked(layout_dir(layout)):
        _terminate(_node(layout, index))


def start_node(layout: int | Layout, index: int, *, timeout: float = 120.0) -> None:
    """Start one stopped node again and wait until the layout's metadata lists all brokers."""
    node = _node(layout, index)
    with _locked(layout_dir(layout)):
        launched = [] if _live_pid(node) else _launch_missing(node.layout, only=node)
        try:
            _wait_ready(node.layout, time.monotonic() + timeout)
        except BaseException:
            _terminate(*launched)
            raise


def is_running(layout: int | Layout = 1) -> bool:
    """Say whether every node process of the layout is alive (no protocol check)."""
    return all(_live_pid(n) for n in _all_nodes(layout))


# --- processes --------------------------------------------------------------------------


def _is_node_process(pid: int, node: Node) -> bool:
    args = cmdline(pid)
    return (
        bool(args)
        and Path(args[0]).name == "java"
        and "kafka.Kafka" in args
        and str(node.config) in args
        and is_alive(pid)
    )


def _live_pid(node: Node) -> int | None:
    """Return the node's broker pid, checked against /proc so a recycled pid never counts."""
    with contextlib.suppress(OSError, ValueError):
        pid = int(node.pid_file.read_text().split()[0])
        if _is_node_process(pid, node):
            return pid
    # The pid file is gone or stale; a broker of this node may still run (a crashed
    # start() or a deleted file): adopt it rather than fail on a busy port.
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _is_node_process(int(entry.name), node):
            node.pid_file.write_text(f"{entry.name}\n")
            return int(entry.name)
    node.pid_file.unlink(missing_ok=True)
    return None


def _terminate(*nodes: Node) -> None:
    """SIGTERM all at once (a cluster shuts down in parallel), SIGKILL stragglers."""
    pids = {n: pid for n in nodes if (pid := _live_pid(n))}
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE
    while any(is_alive(p) for p in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    for node, pid in pids.items():
        if is_alive(pid):
            _log.warning("Kafka node %s did not stop in %.0f s; killing it", node.dir, _STOP_GRACE)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            while is_alive(pid):
                time.sleep(0.05)
    for node in nodes:
        node.pid_file.unlink(missing_ok=True)


def _launch_missing(layout: Layout, *, only: Node | None = None) -> list[Node]:
    """Launch the nodes of the layout that are not running; return those launched."""
    todo = [n for n in _all_nodes(layout) if (only is None or n == only) and not _live_pid(n)]
    if not todo:
        return []
    for node in todo:
        _check_ports_free(node)
    java = _java()
    classpath = _ensure_libs()
    _ensure_formatted(layout, todo, java, classpath)
    for node in todo:
        _spawn(node, java, classpath)
    return todo


def _spawn(node: Node, java: str, classpath: str) -> None:
    """Start the broker detached: a throwaway shell backgrounds it, so it is nobody's child."""
    if node.log.exists() and node.log.stat().st_size > _LOG_ROTATE_BYTES:
        node.log.replace(node.log.with_suffix(".log.1"))
    with node.log.open("a") as log:
        log.write(f"=== devservices.kafka: starting node {node.index} at {time.ctime()} ===\n")
    command = [
        java,
        *_JVM_OPTIONS,
        f"-Dkafka.logs.dir={node.dir}",
        f"-Dlog4j2.configurationFile=file:{_LOG_CONFIG}",
        "-cp",
        classpath,
        "kafka.Kafka",
        str(node.config),
    ]
    # Backgrounded by sh and not by us, so no zombie is left in the caller and Python
    # never warns that a Popen object was collected while its child still runs.
    script = 'log=$1; shift; "$@" >>"$log" 2>&1 </dev/null & echo $!'
    out = subprocess.run(
        ["/bin/sh", "-c", script, "sh", str(node.log), *command],
        cwd=node.dir,
        check=True,
        capture_output=True,
        text=True,
        start_new_session=True,
    )
    pid = int(out.stdout.strip())
    # The backgrounded child is still a copy of sh until it execs java; wait for that so
    # the pid check (which wants java) does not mistake the gap for an early exit.
    deadline = time.monotonic() + 5.0
    while not _is_node_process(pid, node) and is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    node.pid_file.write_text(f"{pid}\n")


def _check_ports_free(node: Node) -> None:
    """Fail with one clear line when a port of a stopped node is held by another process."""
    for port in (node.broker_port, node.controller_port):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # Java binds with SO_REUSEADDR too, so TIME_WAIT leftovers do not count.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((HOST, port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
            else:
                continue
        if port == node.broker_port and _brokers_seen(node.layout, f"{HOST}:{port}", 3.0) > 0:
            what = "a Kafka broker that this cache did not start"
        else:
            what = "a process that is not this cache's Kafka"
        raise KafkaDevError(
            f"port {HOST}:{port} (Kafka node {node.index} of {node.layout.name}) is held by"
            f" {what}; stop it (e.g. `ss -ltnp 'sport = :{port}'` names it) and retry"
        )


def _java() -> str:
    """Find java 17+ (Kafka 4 brokers need it), preferring JAVA_HOME like Kafka's scripts."""
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if java_home and not Path(str(java)).exists():
        raise KafkaDevError(f"JAVA_HOME={java_home} has no bin/java: point it at a JDK 17+")
    if not java:
        raise KafkaDevError("java not found on PATH: install a JDK 17+ to run Kafka")
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    first = (out.stderr or out.stdout).splitlines()[:1]
    version = first[0].split('"')[1] if first and first[0].count('"') >= 2 else ""
    major = version.split(".")[1] if version.startswith("1.") else version.split(".")[0]
    if not major.isdigit() or int(major) < 17:
        raise KafkaDevError(f"{java} is Java {version or '?'}; Kafka {KAFKA_VERSION} needs 17+")
    return java


# --- jars -------------------------------------------------------------------------------


def _ensure_libs() -> str:
    """Resolve the jars once per pinned version and pom; return the class path."""
    libs = _libs_dir()
    resolve_jars(
        _POM,
        libs,
        stamp=_stamp("kafka", _POM),
        args=[
            f"-Dkafka.version={KAFKA_VERSION}",
            "dependency:copy-dependencies",
            "-DoutputDirectory={out}",
            "-DincludeScope=runtime",
        ],
        expect=[f"kafka_2.13-{KAFKA_VERSION}.jar"],
    )
    return str(libs / "*")


def _stamp(what: str, pom: Path) -> str:
    """What a resolved folder was resolved for: the pinned version and the pom's content."""
    return f"{what} {KAFKA_VERSION}\npom {hashlib.sha256(pom.read_bytes()).hexdigest()}\n"


def resolve_jars(
    pom: Path, folder: Path, *, stamp: str, args: Sequence[str], expect: Sequence[str]
) -> None:
    """Resolve ``pom`` with Maven into ``folder`` unless it holds ``stamp`` already.

    ``args`` are mvn's arguments, ``{out}`` standing for the folder being filled; every glob
    in ``expect`` must match in it. Filled beside ``folder`` and renamed, under a lock, so
    concurrent callers and an interrupted download never see half a folder.
    """
    marker = folder / _RESOLVED_MARKER
    if marker.exists() and marker.read_text() == stamp:
        return
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaDevError(f"mvn not found on PATH: install Maven 3.8+ to fetch {pom.name}'s jars")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.parent, name=f".{folder.name}.lock"):
        if marker.exists() and marker.read_text() == stamp:
            return
        staging = folder.with_name(f"{folder.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        mvn_log = folder.with_name(f"mvn-{folder.name}.log")
        command = [mvn, "-B", "-q", "-f", str(pom), *(a.format(out=staging) for a in args)]
        with mvn_log.open("w") as out:
            done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0 or not all(any(staging.glob(g)) for g in expect):
            shutil.rmtree(staging, ignore_errors=True)
            raise KafkaDevError(
                f"mvn could not resolve the jars of {pom.name} (exit {done.returncode});"
                f" see {mvn_log}"
            )
        (staging / _RESOLVED_MARKER).write_text(stamp)
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)


@dataclass(frozen=True, slots=True)
class ConnectJars:
    """A resolved Kafka Connect worker, for the benchmark's Debezium peer and the tests."""

    java: str
    """A Java 17+ executable."""
    classpath: str
    """The worker's class path (Connect runtime, JSON converter, transforms, logging)."""
    plugin_path: Path
    """Folder for Connect's ``plugin.path``: Debezium's JDBC sink and PostgreSQL connector
    plugin archives, unpacked."""


def connect_jars() -> ConnectJars:
    """Resolve Kafka Connect (the broker's version) and Debezium's plugins once; find java."""
    java = _java()
    folder = cache_dir() / "connect"
    resolve_jars(
        _CONNECT_POM,
        folder,
        stamp=_stamp("connect", _CONNECT_POM),
        args=[
            f"-Dkafka.version={KAFKA_VERSION}",
            "-Dconnect.out={out}",
            "dependency:copy-dependencies@libs",
            "dependency:unpack@plugin",
        ],
        expect=[
            f"libs/connect-runtime-{KAFKA_VERSION}.jar",
            "plugins/debezium-connector-jdbc/debezium-connector-jdbc-*.jar",
            "plugins/debezium-connector-postgres/debezium-connector-postgres-*.jar",
        ],
    )
    return ConnectJars(java, str(folder / "libs" / "*"), folder / "plugins")


# --- storage and configuration ----------------------------------------------------------


def _server_properties(node: Node) -> str:
    voters = ",".join(f"{n.index}@{HOST}:{n.controller_port}" for n in _all_nodes(node.layout))
    replicas = 1 if node.layout.nodes == 1 else 3
    min_isr = 1 if node.layout.nodes == 1 else 2
    lines = [
        "# Written by devservices/kafka.py on every start; edits are overwritten.",
        "process.roles=broker,controller",
        f"node.id={node.index}",
        f"controller.quorum.voters={voters}",
        *node.layout.listener_properties(node),
        f"log.dirs={node.data}",
        # Faust and the tests may produce to topics nobody created: keep Kafka's default.
        "auto.create.topics.enable=true",
        "num.partitions=1",
        f"default.replication.factor={replicas}",
        f"min.insync.replicas={min_isr}",
        f"offsets.topic.replication.factor={replicas}",
        # 50 partitions by default: creating them delays the first group join by seconds.
        "offsets.topic.num.partitions=10",
        f"transaction.state.log.replication.factor={replicas}",
        f"transaction.state.log.min.isr={min_isr}",
        "transaction.state.log.num.partitions=10",
        f"share.coordinator.state.topic.replication.factor={replicas}",
        f"share.coordinator.state.topic.min.isr={min_isr}",
        # Tests join groups with one member: do not wait 3 s for more to arrive.
        "group.initial.rebalance.delay.ms=0",
        # A killed broker keeps its registration until the session expires (9 s by
        # default), and its restart waits for that: fault tests restart faster.
        "broker.heartbeat.interval.ms=1000",
        "broker.session.timeout.ms=4000",
        "",
    ]
    return "\n".join(lines)


def _ensure_formatted(layout: Layout, todo: Sequence[Node], java: str, classpath: str) -> None:
    """Write each node's config and format storage that is not formatted yet (one cluster id)."""
    layout.prepare(layout_dir(layout))
    for node in todo:
        node.dir.mkdir(parents=True, exist_ok=True)
        node.config.write_text(_server_properties(node))
    fresh = [n for n in todo if not (n.data / "meta.properties").exists()]
    if not fresh:
        return
    id_file = layout_dir(layout) / "cluster.id"
    if not id_file.exists():
        # Formatted before but the id file was lost: reuse the id the other nodes hold.
        for node in _all_nodes(layout):
            with contextlib.suppress(OSError):
                for line in (node.data / "meta.properties").read_text().splitlines():
                    if line.startswith("cluster.id="):
                        id_file.write_text(line.removeprefix("cluster.id=") + "\n")
    if id_file.exists():
        cluster_id = id_file.read_text().strip()
    else:
        cluster_id = _run_tool(java, classpath, ["random-uuid"], layout_dir(layout)).strip()
        id_file.write_text(f"{cluster_id}\n")
    # One JVM per node, in parallel: each takes a second or two on its own.
    procs = [
        (
            n,
            subprocess.Popen(
                [
                    java,
                    "-Xmx256m",
                    "-XX:TieredStopAtLevel=1",
                    f"-Dlog4j2.configurationFile=file:{_LOG_CONFIG}",
                    "-cp",
                    classpath,
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(n.config),
                    *layout.format_arguments(),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            ),
        )
        for n in fresh
    ]
    for node, proc in procs:
        output, _ = proc.communicate()
        if proc.returncode != 0:
            last = output.strip().splitlines()[-1:] or ["no output"]
            raise KafkaDevError(f"formatting {node.data} failed: {last[0]}")


def _run_tool(java: str, classpath: str, args: list[str], cwd: Path) -> str:
    cwd.mkdir(parents=True, exist_ok=True)
    command = [
        java,
        "-Xmx256m",
        f"-Dlog4j2.configurationFile=file:{_LOG_CONFIG}",
        "-cp",
        classpath,
        "kafka.tools.StorageTool",
        *args,
    ]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise KafkaDevError(f"kafka StorageTool {args[0]} failed: {last[0]}")
    return done.stdout.strip().splitlines()[-1]


def _wipe(layout: int | Layout) -> None:
    shutil.rmtree(layout_dir(layout), ignore_errors=True)


# --- readiness --------------------------------------------------------------------------


def _brokers_seen(layout: Layout, bootstrap: str, timeout: float) -> int:
    """Return how many brokers a metadata request lists (0 when nothing answers)."""
    # Only addresses that accept a TCP connection, and a request timeout longer than our
    # own: aiokafka logs every refused or timed-out bootstrap at ERROR, which would
    # flood a caller's stderr while a broker boots.
    hosts = [h for h in bootstrap.split(",") if _accepts_connections(h)]
    if not hosts:
        return 0

    async def probe() -> int:
        client = AIOKafkaClient(
            bootstrap_servers=hosts,
            request_timeout_ms=int(timeout * 1000) + 5000,
            client_id="devservices-probe",
            **layout.client_options(),
        )
        try:
            await asyncio.wait_for(client.bootstrap(), timeout)
            return len(client.cluster.brokers())
        except (OSError, KafkaError):  # TimeoutError is an OSError
            return 0
        finally:
            await client.close()

    def run_probe() -> int:
        try:
            return asyncio.run(probe())
        finally:
            # A bootstrap cut short while the broker starts (its TLS handshake under way) can
            # leave a socket for the garbage collector; seen once against the SASL_SSL
            # listener, where the ResourceWarning then surfaced in the next test, made an error
            # by its warning filters. Collected here, where it is expected, with the warning
            # ignored (the caller waits on this thread meanwhile).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                gc.collect()

    # A thread of its own, so this works from inside a running event loop (async
    # fixtures) and never touches the caller's loop.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run_probe).result()


def _accepts_connections(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except OSError:
        return False


def _wait_ready(layout: Layout, deadline: float) -> None:
    """Poll until metadata lists every broker; fail early if a node process dies."""
    bootstrap = bootstrap_servers(layout)
    while True:
        for node in _all_nodes(layout):
            if not _live_pid(node):
                raise KafkaDevError(
                    f"Kafka node {node.index} of {layout.name} exited during start;"
                    f" last lines of {node.log}:\n{_tail(node.log)}"
                )
        remaining = deadline - time.monotonic()
        if _brokers_seen(layout, bootstrap, max(1.0, min(5.0, remaining))) >= layout.nodes:
            return
        if time.monotonic() >= deadline:
            tails = "\n".join(f"--- {n.log}:\n{_tail(n.log)}" for n in _all_nodes(layout))
            raise KafkaDevError(
                f"Kafka ({layout.name}, {bootstrap}) not ready before the timeout;"
                f" last log lines:\n{tails}"
            )
        time.sleep(0.25)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no log file)"
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def _locked(folder: Path, name: str = ".lock") -> Iterator[None]:
    """Serialise start/stop across processes (pytest workers, ./run) on one layout."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / name).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- command line -----------------------------------------------------------------------


def _status_line(layout: Layout) -> str:
    pids = [_live_pid(n) for n in _all_nodes(layout)]
    nodes, bootstrap = layout.nodes, bootstrap_servers(layout)
    if not any(pids):
        return f"{layout.name}: stopped"
    seen = _brokers_seen(layout, bootstrap, 3.0)
    state = "healthy" if all(pids) and seen >= nodes else f"degraded ({seen}/{nodes} brokers)"
    shown = ", ".join(str(p) if p else "down" for p in pids)
    return f"{layout.name}: {state} at {bootstrap} (pid {shown})"


def _all_layouts() -> list[Layout]:
    from devservices.kafka_secure import SECURE

    return [SINGLE, CLUSTER3, SECURE]


def _chosen(args: argparse.Namespace) -> Layout:
    """Return the layout named by ``--nodes`` or ``--secure``."""
    if args.secure:
        from devservices.kafka_secure import SECURE

        return SECURE
    return _layout(args.nodes)


def main(argv: list[str] | None = None) -> int:
    """Run the command line: start, stop, status or reset a development Kafka."""
    parser = argparse.ArgumentParser(
        prog="python -m devservices.kafka",
        description=f"Run a development Kafka {KAFKA_VERSION} from Maven jars (no Docker).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    secure_help = "the SASL_SSL single node (SCRAM-SHA-512, test CA) on 29092"
    p_start = sub.add_parser("start", help="start (or check) a layout; print its bootstrap")
    which = p_start.add_mutually_exclusive_group()
    which.add_argument("--nodes", type=int, choices=_LAYOUTS, default=1)
    which.add_argument(
        "--secure", action="store_true", help=f"{secure_help}; print its settings as exports"
    )
    p_start.add_argument("--timeout", type=float, default=120.0)
    for name, text in (("stop", "stop a layout, keep its data"), ("reset", "stop and wipe")):
        p = sub.add_parser(name, help=text)
        group = p.add_mutually_exclusive_group()
        group.add_argument("--nodes", type=int, choices=_LAYOUTS, default=1)
        group.add_argument("--secure", action="store_true", help=secure_help)
        group.add_argument("--all", action="store_true", help="every layout")
    sub.add_parser("status", help="show every layout")
    args = parser.parse_args(argv)
    # aiokafka logs every refused connection while the broker boots: not news here.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        if args.command == "start" and args.secure:
            from devservices import kafka_secure

            print(kafka_secure.exports(kafka_secure.start(timeout=args.timeout)))
        elif args.command == "start":
            print(start(args.nodes, timeout=args.timeout))
        elif args.command in ("stop", "reset"):
            for layout in _all_layouts() if args.all else [_chosen(args)]:
                stop(layout, wipe=args.command == "reset")
        else:
            for layout in _all_layouts():
                print(_status_line(layout))
    except KafkaDevError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
