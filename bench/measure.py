"""What every measured path is held to: one clock, one peak-RSS reading, one table check.

The clock (the same for the worker and the peers): it starts when the path's consumer
group is first seen ``Stable`` (partitions assigned; polled every 50 ms) and stops when
every partition's *applied* offset reaches the topic's end offset. Applied means durably
written by that path: the offset the worker stores in the same SQL transaction as the rows,
or the group offset a peer commits to Kafka only after its sink has written the rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import create_engine, text

from devservices.processes import note_started

POLL_SECONDS = 0.05
#: A path that applies nothing for this long has failed (a dead task, a stuck consumer).
STALL_SECONDS = 120.0

#: Reads a path's applied offsets: partition -> next offset to apply.
AppliedOffsets = Callable[[], Awaitable[Mapping[int, int]]]


@dataclass(frozen=True, slots=True)
class Event:
    """One record to produce."""

    key: str
    """Record key, the entity uuid."""
    value: bytes | None
    """Record value; None is a tombstone."""


@dataclass(frozen=True, slots=True)
class CatchUp:
    """How long a path took from assignment to caught up, and what it held in memory."""

    seconds: float
    """First ``Stable`` group state to every applied offset at the end offset."""
    startup_s: float
    """Process launch to first ``Stable`` group state."""
    peak_rss_mb: float
    """Peak resident set of the process tree (see :class:`TreeRss`)."""

    def figures(self, events: int) -> dict[str, float]:
        """Return the bench's per-path figures for ``events`` events."""
        return {
            "events_per_s": events / self.seconds,
            "seconds": self.seconds,
            "startup_s": self.startup_s,
            "peak_rss_mb": self.peak_rss_mb,
        }


class TreeRss:
    """Peak RSS of a process and its descendants: the sum of each one's own peak (VmHWM).

    Exact for a single process (the worker, Quix, the Connect JVM are each one); an upper
    bound when several processes peak at different moments.
    """

    def __init__(self, root: int) -> None:
        self._root = root
        self._peaks: dict[int, int] = {}

    def sample(self) -> None:
        """Read VmHWM of every live process in the tree now."""
        for pid in _tree(self._root):
            kib = _status_kib(pid, "VmHWM:")
            if kib is not None:
                self._peaks[pid] = max(self._peaks.get(pid, 0), kib)

    @property
    def peak_mb(self) -> float:
        return sum(self._peaks.values()) / 1024


def _tree(root: int) -> list[int]:
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return pids


def _status_kib(pid: int, field: str) -> int | None:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(field):
            return int(line.split()[1])
    return None


def group_offsets(admin: AIOKafkaAdminClient, group: str, topic: str) -> AppliedOffsets:
    """Applied offsets of a peer: the group's committed offsets on ``topic``."""

    async def read() -> Mapping[int, int]:
        committed = await admin.list_consumer_group_offsets(group)
        return {tp.partition: om.offset for tp, om in committed.items() if tp.topic == topic}

    return read


async def _group_state(admin: AIOKafkaAdminClient, group: str) -> str:
    """Return the group's state ("" while the broker cannot say yet)."""
    from aiokafka.errors import KafkaError

    try:
        (response,) = await admin.describe_consumer_groups([group])
    except KafkaError as exc:
        # A broker just started has no group coordinator for a moment
        # (GroupCoordinatorNotAvailableError): the group is not Stable yet.
        if not exc.retriable:
            raise
        return ""
    return str(response.to_object()["groups"][0]["state"])


def run_process(
    command: Sequence[str],
    *,
    cwd: Path,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    **watched: Any,
) -> CatchUp:
    """Launch ``command`` (output to ``log_path``), :func:`watch` it, then stop its group."""
    with log_path.open("wb") as log:
        launched_at = time.monotonic()
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=None if env is None else dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    note_started(proc.pid)
    try:
        return asyncio.run(watch(proc, launched_at=launched_at, log_path=log_path, **watched))
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group we started, SIGKILL it after 60 s."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def watch(
    proc: subprocess.Popen[bytes],
    *,
    launched_at: float,
    bootstrap: str,
    group: str,
    ends: Mapping[int, int],
    applied: AppliedOffsets | None = None,
    topic: str = "",
    health: Callable[[], str | None] | None = None,
    log_path: Path,
    stall: float = STALL_SECONDS,
) -> CatchUp:
    """Poll ``proc``'s group until it is caught up with ``ends``; raise if it dies or stalls.

    ``applied`` defaults to the group's committed offsets on ``topic``; ``health``, asked
    once a second, returns why the path has failed (a failed Connect task), or None.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    rss = TreeRss(proc.pid)
    try:
        read_applied = applied or group_offsets(admin, group, topic)
        stable_at: float | None = None
        progress, progress_at, asked_at = -1, launched_at, 0.0
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"exited with {proc.returncode}; see {log_path}")
            now = time.monotonic()
            rss.sample()
            if health is not None and now - asked_at >= 1.0:
                asked_at = now
                if (failure := health()) is not None:
                    raise RuntimeError(f"{failure}; see {log_path}")
            if stable_at is None and await _group_state(admin, group) == "Stable":
                stable_at = now
            if stable_at is not None:
                done = await read_applied()
                if all(done.get(p, 0) >= end for p, end in ends.items()):
                    finished = time.monotonic()
                    rss.sample()
                    return CatchUp(finished - stable_at, stable_at - launched_at, rss.peak_mb)
                if sum(done.values()) != progress:
                    progress, progress_at = sum(done.values()), now
            if now - progress_at > stall:
                what = "no partition assigned" if stable_at is None else "no offset applied"
                raise TimeoutError(f"{what} for {stall:.0f} s; see {log_path}")
            await asyncio.sleep(POLL_SECONDS)
    finally:
        await admin.close()


def newest_state(events: Iterable[Event]) -> dict[str, str]:
    """The rows a correct mirror ends with: each key's newest event, deletes removed."""
    rows: dict[str, str] = {}
    for event in events:
        body = orjson.loads(event.value) if event.value is not None else None
        if body is None or body.get("changeType") == "DELETED":
            rows.pop(event.key, None)
        else:
            rows[event.key] = body["planetName"]
    return rows


def table_errors(db_url: str, live_rows_sql: str, expected: Mapping[str, str]) -> int:
    """Count the keys whose row (``uuid``, ``name`` from ``live_rows_sql``) is not as expected."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            actual = {str(k): str(v) for k, v in conn.execute(text(live_rows_sql))}
    finally:
        engine.dispose()
    keys = expected.keys() | actual.keys()
    return sum(1 for k in keys if expected.get(k) != actual.get(k))
