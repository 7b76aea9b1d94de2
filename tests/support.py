"""Helpers for tests: topics, producing, worker processes, catching up (integration), and a
store of mirrored planets (unit).

Every wait here goes through ``tests.waiting.eventually``; none sleeps a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from devservices.processes import note_started
from streams.settings import Settings
from tests.waiting import DEADLINE, eventually

if TYPE_CHECKING:
    from models.store import SqlStore

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Broker:
    """A broker that wants more than a bootstrap address: the helpers here take one wherever
    they take a bootstrap string, and give its security settings to clients and workers."""

    bootstrap: str
    """``host:port[,host:port]``."""
    security: Mapping[str, str] = field(default_factory=dict)
    """KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_*: as a worker is given them."""


def client_args(bootstrap: str | Broker) -> dict[str, Any]:
    """Return an aiokafka client's address and security arguments, from the settings' one
    translation of the KAFKA_* variables (``Settings.kafka_client_options``)."""
    if isinstance(bootstrap, str):
        return {"bootstrap_servers": bootstrap}
    options = Settings.from_env(bootstrap.security).kafka_client_options()
    return {"bootstrap_servers": bootstrap.bootstrap, **options}


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def started_consumer(bootstrap: str | Broker) -> AIOKafkaConsumer:
    """Start a group-less consumer for metadata and offset queries.

    The yield after start lets aiokafka's NoGroupCoordinator task begin; stopping the
    consumer before that task ever ran raises CancelledError out of ``stop()``.
    """
    consumer = AIOKafkaConsumer(**client_args(bootstrap))
    await consumer.start()
    await asyncio.sleep(0)
    return consumer


async def create_topic(
    bootstrap: str | Broker,
    topic: str,
    partitions: int,
    replicas: int = 1,
    configs: dict[str, str] | None = None,
) -> None:
    """Create ``topic`` and wait until its metadata shows every partition (CreateTopics
    returns once the controller has the topic, a moment before the broker answering metadata
    requests does)."""
    admin = AIOKafkaAdminClient(**client_args(bootstrap))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, replicas, topic_configs=configs)])
    finally:
        await admin.close()
    await eventually(
        lambda: partitions_of(bootstrap, topic),
        lambda found: len(found) >= partitions,
        what=f"metadata of {topic}'s {partitions} partitions",
        every=0.1,
    )


async def recreate_topic(
    bootstrap: str | Broker, topic: str, partitions: int, configs: dict[str, str] | None = None
) -> None:
    """Delete ``topic`` and create it again, empty (:func:`create_topic` once the broker has
    finished deleting it, which it does in the background)."""
    admin = AIOKafkaAdminClient(**client_args(bootstrap))
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()
    await eventually(
        lambda: create_topic(bootstrap, topic, partitions, configs=configs),
        lambda _: True,
        what=f"{topic} deleted and created again",
        ignoring=(TopicAlreadyExistsError,),  # the deletion is still under way
    )
    assert await end_offsets(bootstrap, topic) == dict.fromkeys(range(partitions), 0)


async def partitions_of(bootstrap: str | Broker, topic: str) -> list[int]:
    """Return the partition ids of ``topic`` (empty when it does not exist)."""
    admin = AIOKafkaAdminClient(**client_args(bootstrap))
    await admin.start()
    try:
        # Describing a missing topic would auto-create it (metadata requests may create
        # topics on brokers that allow it), so look it up in the full list first.
        if topic not in await admin.list_topics():
            return []
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    for item in described:
        if item.get("topic") == topic and not item.get("error_code"):
            return sorted(int(p["partition"]) for p in item.get("partitions", []))
    return []


async def produce(
    bootstrap: str | Broker, topic: str, items: Iterable[tuple[bytes | None, bytes | None]]
) -> int:
    """Send ``(key, value)`` pairs in order (acks=all, idempotent); return how many."""
    sent = await produce_timed(bootstrap, topic, ((k, v, None) for k, v in items))
    return len(sent)


async def produce_timed(
    bootstrap: str | Broker,
    topic: str,
    items: Iterable[tuple[bytes | None, bytes | None, int | None]],
    *,
    chunk: int = 0,
    pause: float = 0.0,
    hold: asyncio.Event | None = None,
) -> list[tuple[int, int, int]]:
    """Send ``(key, value, timestamp_ms)`` in order; return each record's (ts, partition, offset).

    With ``chunk``, pause ``pause`` seconds after every ``chunk`` records, to spread the
    stream over time (so a test can crash a worker while it flows); with ``hold`` too, wait
    after the first chunk until it is set (the worker applied something: the stream then
    flows for as long after that, however slowly the worker started).
    """
    producer = AIOKafkaProducer(
        **client_args(bootstrap), acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        futures = []
        stamps = []
        for index, (key, value, ts) in enumerate(items):
            stamp = ts if ts is not None else int(time.time() * 1000)
            stamps.append(stamp)
            futures.append(await producer.send(topic, value, key=key, timestamp_ms=stamp))
            if chunk and index % chunk == chunk - 1:
                if hold is not None and index == chunk - 1:
                    await producer.flush()
                    await hold.wait()
                await asyncio.sleep(pause)
        await producer.flush()
        metas = [await future for future in futures]
    finally:
        await producer.stop()
    # RecordMetadata.timestamp is -1 for CreateTime topics: the record keeps the one we sent.
    return [(stamp, m.partition, m.offset) for stamp, m in zip(stamps, metas, strict=True)]


async def end_offsets(bootstrap: str | Broker, topic: str) -> dict[int, int]:
    """Return the end offset of every partition of ``topic``."""
    parts = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
    if not parts:
        raise AssertionError(f"topic {topic} does not exist")
    consumer = await started_consumer(bootstrap)
    try:
        ends = await consumer.end_offsets(parts)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def read_records(
    bootstrap: str | Broker, topic: str
) -> AsyncIterator[tuple[int, bytes | None, bytes | None]]:
    """Yield (partition, key, value) of every record in ``topic``, from the beginning."""
    ends = await end_offsets(bootstrap, topic)
    consumer = AIOKafkaConsumer(**client_args(bootstrap), auto_offset_reset="earliest")
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in ends]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        remaining = {p: end for p, end in ends.items() if end > 0}
        while remaining:
            batch = await consumer.getmany(timeout_ms=1000)
            for tp, messages in batch.items():
                for message in messages:
                    yield tp.partition, message.key, message.value
                    if message.offset + 1 >= remaining.get(tp.partition, 0):
                        remaining.pop(tp.partition, None)
    finally:
        await consumer.stop()


async def read_keys(bootstrap: str | Broker, topic: str) -> AsyncIterator[tuple[int, bytes]]:
    """Yield (partition, key) of every keyed record in ``topic``, from the beginning."""
    async for partition, key, _ in read_records(bootstrap, topic):
        if key is not None:
            yield partition, key


async def read_latest(bootstrap: str | Broker, topic: str) -> dict[bytes, bytes | None]:
    """Return the last value of every key in ``topic`` (None: a tombstone), as compaction would."""
    latest: dict[bytes, bytes | None] = {}
    async for _, key, value in read_records(bootstrap, topic):
        if key is not None:
            latest[key] = value
    return latest


async def committed_offsets(bootstrap: str | Broker, group: str, topic: str) -> dict[int, int]:
    """Return the consumer group's committed offset per partition of ``topic``."""
    admin = AIOKafkaAdminClient(**client_args(bootstrap))
    await admin.start()
    deadline = time.monotonic() + DEADLINE
    try:
        while True:
            try:
                offsets = await admin.list_consumer_group_offsets(group)
                break
            except KafkaError as exc:
                # A broker just started is still creating __consumer_offsets: no group
                # coordinator yet (error 15, retriable). Wait for it, as a client would.
                if not exc.retriable or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


async def wait_stored(
    store: Any, group: str, at_least: int, *workers: WorkerProcess, timeout: float = DEADLINE
) -> None:
    """Wait until ``group``'s offsets stored with the data add up to ``at_least`` (records
    applied), failing at once if one of ``workers`` exits."""
    await eventually(
        lambda: asyncio.to_thread(store.stored_offsets, group),
        lambda stored: sum(stored.values()) >= at_least,
        what=f"offsets of {group} stored with the data adding up to {at_least}",
        timeout=timeout,
        every=0.05,
        alive=workers,
    )


async def wait_applied(
    store: Any,
    group: str,
    topic: str,
    ends: Mapping[int, int],
    *workers: WorkerProcess,
    timeout: float = 240.0,
) -> None:
    """Wait until ``group``'s offsets stored with the data reach ``ends`` on every partition
    of ``topic``, failing at once if one of ``workers`` exits."""
    await eventually(
        lambda: asyncio.to_thread(store.stored_offsets, group),
        lambda stored: all(stored.get((topic, p), 0) >= end for p, end in ends.items()),
        what=f"offsets of {group} stored with the data reaching {topic}'s ends {dict(ends)}",
        timeout=timeout,
        every=0.25,
        alive=workers,
    )


async def wait_caught_up(
    bootstrap: str | Broker,
    group: str,
    topic: str,
    *,
    timeout: float = DEADLINE,
    alive: Callable[[], None] | None = None,
) -> None:
    """Wait until ``group`` has committed the end offset of every partition of ``topic``;
    ``alive`` is called on each poll (a worker's ``assert_alive``)."""
    ends = await end_offsets(bootstrap, topic)

    async def committed() -> dict[int, int]:
        if alive is not None:
            alive()
        return await committed_offsets(bootstrap, group, topic)

    await eventually(
        committed,
        lambda at: all(at.get(p, -1) >= end for p, end in ends.items()),
        what=f"group {group} committing the ends of {topic} {ends}",
        timeout=timeout,
        every=0.25,
    )


@dataclass
class WorkerProcess:
    """A real ``faust -A streams.app worker`` process with its own environment and log.

    Whether it runs is asked of the process itself (``assert_alive``, ``assert_exited``):
    a worker that exits on its own fails the test with its exit status and its log's tail.
    """

    env: Mapping[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    options: tuple[str, ...] = ("-l", "info")
    """Options of ``faust ... worker`` (LOG_LEVEL decides the level whatever ``-l`` says)."""
    stdout_path: Path | None = None
    """Where the worker's stdout (Faust's banner) goes; None: into the log, with stderr."""
    _launches: int = field(default=0, init=False, repr=False)
    """Numbers the start banners in the log, nothing else."""

    def start(self) -> None:
        """Start the worker (the log file is appended to across restarts)."""
        env = {**os.environ, **self.env}
        env.setdefault("PYTHONUNBUFFERED", "1")
        self._launches += 1
        with contextlib.ExitStack() as files:
            log = files.enter_context(self.log_path.open("ab"))
            log.write(f"\n===== start #{self._launches} =====\n".encode())
            log.flush()
            stdout = (
                log
                if self.stdout_path is None
                else files.enter_context(self.stdout_path.open("ab"))
            )
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "faust", "-A", "streams.app", "worker", *self.options],
                cwd=ROOT,
                env=env,
                stdout=stdout,
                stderr=log,
                start_new_session=True,
            )
        note_started(self.proc.pid)

    @property
    def exit_status(self) -> int | None:
        """Return the process's exit status (-N: ended by signal N); None while it runs."""
        return None if self.proc is None else self.proc.poll()

    def assert_alive(self) -> None:
        """Fail with the exit status and the log's tail if the worker has exited on its own.

        Status 3 is the recovery watchdog's last resort (streams/ops/faust_recovery.py): a
        failure too.
        """
        if self.proc is None:
            raise AssertionError("worker was never started")
        if self.proc.poll() is not None:
            raise AssertionError(
                f"worker (pid {self.proc.pid}) exited on its own with {self._status()}; "
                f"log tail:\n{self.tail()}"
            )

    def assert_exited(self, status: int, timeout: float = 60.0) -> None:
        """Wait up to ``timeout`` for the worker to exit and fail unless it exited with
        ``status`` (-N: ended by signal N)."""
        if self.proc is None:
            raise AssertionError("worker was never started")
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker (pid {self.proc.pid}) still runs after {timeout:.0f} s, expected to "
                f"exit with {status}; log tail:\n{self.tail()}"
            ) from None
        if self.proc.returncode != status:
            raise AssertionError(
                f"worker (pid {self.proc.pid}) exited with {self._status()}, expected {status}; "
                f"log tail:\n{self.tail()}"
            )

    def _status(self) -> str:
        """Describe how the exited worker ended: its status, and what that status means."""
        assert self.proc is not None
        code = self.proc.returncode
        if code is not None and code < 0:
            return f"status {code} ({signal.Signals(-code).name})"
        why = " (its table recovery stalled: streams/ops/faust_recovery.py)" if code == 3 else ""
        return f"status {code}{why}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> str:
        """Stop the worker with ``sig``; SIGKILL if it outlives ``timeout``.

        Return the name of the signal that ended it ("SIGKILL" when ``sig`` was not enough),
        or "exited" when it had exited already.
        """
        if self.proc is None or self.proc.poll() is not None:
            return "exited"
        stalls = self.recovery_stalls()
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
            return "SIGKILL"
        finally:
            # The recovery watchdog is a last resort: a test in which it stepped in fails.
            if stalls:
                raise AssertionError(
                    f"table recovery stalled {stalls:.0f} times (streams/ops/faust_recovery.py); "
                    f"log tail:\n{self.tail()}"
                )
        return signal.Signals(sig).name

    def recovery_stalls(self) -> float | None:
        """Return ``mirror_recovery_stalls_total`` of the running worker (None: no answer)."""
        headers = {}
        if self.env.get("API_TOKEN"):
            headers["Authorization"] = f"Bearer {self.env['API_TOKEN']}"
        url = f"http://127.0.0.1:{self.env.get('WEB_PORT', 6066)}/metrics"
        try:
            request = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(request, timeout=5) as response:
                text = response.read().decode()
        except (urllib.error.URLError, OSError):
            return None
        return metric_value(text, "mirror_recovery_stalls_total")

    def kill(self) -> None:
        """SIGKILL the running worker, as a crash would; fail if it had exited on its own."""
        self.assert_alive()
        self.stop(signal.SIGKILL)
        # Had it exited on its own between the check and the signal, its status says so.
        self.assert_exited(-signal.SIGKILL)

    def tail(self, lines: int = 40) -> str:
        """Return the last lines of the worker log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def metric_value(text: str, sample: str) -> float | None:
    """Return the value of one sample line (name and labels as printed) of Prometheus text."""
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def _auth(worker: WorkerProcess) -> dict[str, str]:
    token = worker.env.get("API_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


async def read_metrics(worker: WorkerProcess) -> str:
    """Return the worker's ``/metrics`` text (aiohttp.ClientError while it does not listen)."""
    url = f"http://127.0.0.1:{worker.env['WEB_PORT']}/metrics"
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.get(url, headers=_auth(worker)) as response,
    ):
        return await response.text()


async def wait_metrics(
    worker: WorkerProcess, what: str, ok: Callable[[str], bool], timeout: float = DEADLINE
) -> str:
    """Wait until the worker's ``/metrics`` text satisfies ``ok``; return that text."""
    return await eventually(
        lambda: read_metrics(worker),
        ok,
        what=what,
        timeout=timeout,
        alive=[worker],
        ignoring=(aiohttp.ClientError, TimeoutError),
    )


async def wait_for_metric(
    worker: WorkerProcess, sample: str, at_least: float, timeout: float = DEADLINE
) -> float:
    """Wait until the worker's ``/metrics`` shows ``sample`` at ``at_least`` or more."""

    async def value() -> float | None:
        return metric_value(await read_metrics(worker), sample)

    found = await eventually(
        value,
        lambda v: v is not None and v >= at_least,
        what=f"{sample} at {at_least} or more",
        timeout=timeout,
        alive=[worker],
        ignoring=(aiohttp.ClientError, TimeoutError),
    )
    assert found is not None
    return found


async def wait_ready(
    worker: WorkerProcess,
    token: str = "",
    timeout: float = DEADLINE,
    *,
    alive: Iterable[WorkerProcess] = (),
) -> None:
    """Wait until the worker is settled, as ``/partitions`` says (partitions assigned, no
    rebalance, tables recovered: what the old ``/ready`` meant), failing at once if it or
    one of ``alive`` exits. The new ``/ready`` (serving HTTP) comes earlier."""
    url = f"http://127.0.0.1:{worker.env['WEB_PORT']}/partitions"
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def settled() -> bool:
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(url, headers=headers) as response,
        ):
            if response.status != 200:
                return False
            return bool((await response.json()).get("settled"))

    await eventually(
        settled,
        what=f"{url} saying settled",
        timeout=timeout,
        every=0.25,
        alive=[worker, *alive],
        ignoring=(aiohttp.ClientError, TimeoutError),  # not listening yet
    )


async def get_settled(
    http: aiohttp.ClientSession,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    alive: Iterable[WorkerProcess] = (),
) -> tuple[int, Any]:
    """GET ``url``'s JSON, asked again while it answers 503 (a rebalance or a recovery under
    way); return the first other status and its body."""

    async def answer() -> tuple[int, Any]:
        async with http.get(url, headers=dict(headers or {})) as response:
            return response.status, await response.json()

    return await eventually(
        answer,
        lambda got: got[0] != 503,
        what=f"{url} answering other than 503",
        timeout=timeout,
        alive=alive,
    )


async def read_planet(port: str, key: str) -> tuple[int, dict[str, Any]]:
    """Return the status and JSON body of ``GET /entities/planet/{key}`` on a worker."""
    url = f"http://127.0.0.1:{port}/entities/planet/{key}"
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url) as response:
        return response.status, await response.json()


async def assert_planet_reads(port: str, expected: Mapping[str, str], keys: Iterable[str]) -> None:
    """Assert that every read by key answers what ``expected`` (uuid -> name) says: the name,
    or a 404 for a key it lacks; never a 404 for an entity it has."""
    for key in keys:
        status, body = await read_planet(port, key)
        if key in expected:
            assert (status, body.get("name")) == (200, expected[key]), (key, status, body)
        else:
            assert status == 404, (key, body)


def make_worker(
    bootstrap: str | Broker,
    database_url: str,
    topic_prefix: str,
    tmp_path: Path,
    name: str = "test",
    **extra: str,
) -> tuple[WorkerProcess, str]:
    """Return a (not yet started) worker with its own consumer group, and that group's id."""
    app_id = f"{name}-{uuid.uuid4().hex[:8]}"
    env = worker_env(
        bootstrap=bootstrap,
        database_url=database_url,
        app_id=app_id,
        topic_prefix=topic_prefix,
        data_dir=tmp_path / "data",
        **extra,
    )
    return WorkerProcess(env, tmp_path / "worker.log"), app_id


def run_worker_to_exit(
    env: Mapping[str, str], cwd: Path, *options: str, launcher: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run a worker that is expected to stop by itself (a start-up check failing), with
    ``options`` after ``worker`` and ``launcher`` before the interpreter (``setpriv ...``)."""
    return subprocess.run(
        [*launcher, sys.executable, "-m", "faust", "-A", "streams.app", "worker", *options],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def error_lines(output: str) -> list[str]:
    """Return the ``error: ...`` lines of a worker's output (Faust's log prefix cut off)."""
    return [
        line[line.index("error: ") :].strip() for line in output.splitlines() if "error: " in line
    ]


def run_cli(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m streams ARGS`` with ``env`` added to this environment."""
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


def assert_status_and_verify(env: Mapping[str, str], topic: str, app_id: str, rows: int) -> None:
    """Check that ``status`` shows ``topic``'s 4 partitions caught up and the table's ``rows``,
    and that ``verify planet`` finds the table and the cache matching the topic."""
    status = run_cli(env, "status")
    assert status.returncode == 0, status.stderr
    assert f"{topic} (group {app_id}):" in status.stdout
    assert f"table servicea_planet: {rows} rows" in status.stdout
    lag_and_staleness = [
        line.split()[-2:] for line in status.stdout.splitlines() if line.strip()[:1].isdigit()
    ]
    assert lag_and_staleness == [["0", "0"]] * 4  # lag and staleness: caught up
    verify = run_cli(env, "verify", "planet")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"servicea_planet matches {topic}: {rows} rows" in verify.stdout
    cache = f"the cache ({app_id}-planet-changelog) matches servicea_planet"
    assert f"{cache}: {rows} entries" in verify.stdout


def worker_env(
    *,
    bootstrap: str | Broker,
    database_url: str,
    app_id: str,
    topic_prefix: str,
    data_dir: Path,
    **extra: str,
) -> dict[str, str]:
    """Return the environment of a test worker."""
    broker = bootstrap if isinstance(bootstrap, Broker) else Broker(bootstrap)
    return {
        **broker.security,
        "DATA_DIR": str(data_dir),
        "KAFKA_BROKER": ";".join(f"kafka://{host}" for host in broker.bootstrap.split(",")),
        "DATABASE_URL": database_url,
        "APP_ID": app_id,
        "WEB_PORT": str(free_port()),
        "TOPIC_PREFIX": topic_prefix,
        "TOPIC_PARTITIONS": "4",
        **extra,
    }


class TcpProxy:
    """Forward a local port to ``host:port``; ``close`` is an outage of what is behind it.

    Lets a test take "the database" away from one worker without stopping the shared server.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> TcpProxy:
        """Listen on 127.0.0.1: on a free port first (``self.port``), on the same one again."""
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def close(self) -> None:
        """Stop listening (new connections are refused) and cut every open connection."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
        )

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            self._writers.discard(writer)
            writer.transport.abort()


@dataclass(frozen=True)
class PlanetEvent:
    """One generated Planet event and how the mirror must treat it."""

    key: str
    value: bytes
    change: str | None
    name: str | None
    poison: bool = False


def planet_stream(
    count: int, entities: int, *, seed: int = 7, poison_every: int = 0
) -> list[PlanetEvent]:
    """Generate a mixed stream of Planet events (about 20/60/10/10 % C/U/none/D)."""
    rng = random.Random(seed)
    keys = [f"00000000-0000-4000-8000-{i:012d}" for i in range(entities)]
    events: list[PlanetEvent] = []
    for i in range(count):
        key = rng.choice(keys)
        if poison_every and i % poison_every == poison_every - 1:
            bad = rng.choice(
                [
                    b"{not json",
                    b"[1,2,3]",
                    json.dumps(
                        {"planetUuid": key, "planetName": "x", "changeType": "ARCHIVED"}
                    ).encode(),
                ]
            )
            events.append(PlanetEvent(key, bad, None, None, poison=True))
            continue
        roll = rng.random()
        change = (
            "CREATED"
            if roll < 0.2
            else "UPDATED"
            if roll < 0.8
            else None
            if roll < 0.9
            else "DELETED"
        )
        name = f"planet-{i}"
        body: dict[str, Any] = {"planetUuid": key, "mass": rng.random(), "moons": i % 5}
        if change is not None:
            body["changeType"] = change
        if change != "DELETED":
            body["planetName"] = name
        events.append(PlanetEvent(key, json.dumps(body).encode(), change, name))
    return events


def expected_planets(events: Sequence[PlanetEvent]) -> dict[str, str]:
    """Apply the changeType rules one event at a time, in order: the final uuid -> name."""
    state: dict[str, str] = {}
    for event in events:
        if event.poison:
            continue
        if event.change == "DELETED":
            state.pop(event.key, None)
        else:
            assert event.name is not None
            state[event.key] = event.name
    return state


@dataclass(frozen=True)
class Sent:
    """One produced record and what it means for its entity."""

    entity: str
    name: str | None  # None: this record deletes the entity (DELETED or Kafka tombstone)
    key: bytes | None
    value: bytes | None
    timestamp: int


def chaotic_stream(
    count: int, entities: int, seed: int, *, foreign_keys: bool = False, keyed: bool = False
) -> list[Sent]:
    """Creates, updates, deletes, duplicates, late (older) events, tombstones, un-keyed.

    With ``foreign_keys`` the record key is never the entity key (a tenant id, or none),
    except on Kafka tombstones, which need it. With ``keyed`` every record is keyed by its
    entity (no un-keyed records), as the contract's producers do.
    """
    rng = random.Random(seed)
    keys = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(entities)]
    base = int(time.time() * 1000) - 3_600_000
    clock = 0
    out: list[Sent] = []
    while len(out) < count:
        clock += rng.randint(1, 3)
        entity = rng.choice(keys)
        roll = rng.random()
        ts = base + clock
        if roll < 0.05 and out:  # a duplicate of an earlier record, sent again
            out.append(rng.choice(out))
            continue
        if roll < 0.12:  # a late event: its timestamp is older than what came before
            ts = base + max(0, clock - rng.randint(5, 400))
        kind = rng.random()
        if kind < 0.04:
            out.append(Sent(entity, None, entity.encode(), None, ts))  # Kafka tombstone
            continue
        key: bytes | None = entity.encode()
        if rng.random() < 0.1 and not keyed:
            key = None  # un-keyed: lands on any partition
        elif foreign_keys:
            key = f"tenant-{rng.randint(0, 5)}".encode()
        if kind < 0.15:
            body: dict[str, Any] = {"planetUuid": entity, "changeType": "DELETED"}
            name = None
        else:
            name = f"n{len(out)}"
            change = rng.choice(["CREATED", "UPDATED", "UPDATED", "UPDATED", None])
            body = {"planetUuid": entity, "planetName": name, "population": rng.random()}
            if change:
                body["changeType"] = change
        out.append(Sent(entity, name, key, json.dumps(body).encode(), ts))
    return out


def expected_state(sent: list[Sent], positions: list[tuple[int, int, int]]) -> dict[str, str]:
    """The newest record per entity decides its state (docs/guarantees.md's ordering, computed here
    without the worker's code): within one partition the later record, whatever the clocks
    say (its timestamp counts as the largest of its entity's in the partition up to it);
    between partitions the greater (timestamp, partition, offset)."""
    order = sorted(range(len(sent)), key=lambda i: (positions[i][1], positions[i][2]))
    lifted: dict[tuple[str, int], int] = {}
    newest: dict[str, tuple[tuple[int, int, int], str | None]] = {}
    for i in order:
        record, (timestamp, partition, offset) = sent[i], positions[i]
        stamp = max(timestamp, lifted.get((record.entity, partition), timestamp))
        lifted[(record.entity, partition)] = stamp
        version = (stamp, partition, offset)
        if record.entity not in newest or version > newest[record.entity][0]:
            newest[record.entity] = (version, record.name)
    return {k: name for k, (_, name) in newest.items() if name is not None}


def mirrored_planets(url: str, count: int, group: str = "api") -> SqlStore:
    """Return a store at ``url`` holding planets ``p00``.. named ``n0``.., mirrored by
    ``group`` (planet-changed, partition 0, offsets 0..)."""
    import models.planet  # noqa: F401  (declares Planet in the default registry)
    from models.registry import default_registry
    from models.store import SqlStore
    from streams.apply.sql_applier import SqlApplier
    from streams.core.records import SourceRecord

    store = SqlStore.from_url(url)
    store.create_tables(list(default_registry))
    spec = default_registry.by_kind("planet")
    assert spec is not None
    records = [
        SourceRecord(
            "planet-changed",
            0,
            i,
            1000 + i,
            None,
            json.dumps({"planetUuid": f"p{i:02d}", "planetName": f"n{i}"}).encode(),
        )
        for i in range(count)
    ]
    if records:
        SqlApplier(default_registry, store, group=group).apply(spec, records)
    return store
