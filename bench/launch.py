"""Starting a path's processes, reading its progress while it runs, and stopping it.

A path is one or more OS processes in one consumer group (the worker, two workers, the Quix
process, the Connect JVM), each in a session of its own so that stopping it stops all it
started, and noted for CI's clean-up (``devservices.processes``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Protocol

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from bench.cpu import CpuMeter
from bench.measure import TreeRss
from devservices.processes import note_started


class Progress(Protocol):
    """Reads a path's applied offsets: partition -> next offset to apply."""

    async def __call__(self, admin: AIOKafkaAdminClient) -> Mapping[int, int]: ...


@dataclass(frozen=True, slots=True)
class Process:
    """One process of a path."""

    command: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    """The whole environment; None inherits the bench's."""


@dataclass(frozen=True, slots=True)
class Launch:
    """How to start a path and follow it."""

    processes: Sequence[Process]
    cwd: Path
    group: str
    """Consumer group of the path: its ``Stable`` state starts the clock."""
    progress: Progress
    health: Callable[[], str | None] | None = None
    """Says why the path has failed although its process runs (a FAILED Connect task)."""
    assigned: Callable[[], Awaitable[bool]] | None = None
    """The path's own word that one of its processes holds partitions (a worker's
    ``/partitions``): with two processes the group may be ``Stable`` too briefly for a poll to see
    before the second joins, while the first already works."""
    cleanup: Sequence[Callable[[], None]] = field(default_factory=tuple)
    """Run once the path has stopped (e.g. dispose of an engine the progress reader used)."""


def group_offsets(group: str, topic: str) -> Progress:
    """Applied offsets of a peer: the group's committed offsets on ``topic``."""

    async def read(admin: AIOKafkaAdminClient) -> Mapping[int, int]:
        committed = await admin.list_consumer_group_offsets(group)
        return {tp.partition: om.offset for tp, om in committed.items() if tp.topic == topic}

    return read


class RunningPath:
    """A started path (``async with``): its progress, its health, its CPU and memory.

    ``database_pid`` finds the server the path writes to, for the CPU's ``database`` part.
    """

    def __init__(
        self, launch: Launch, bootstrap: str, database_pid: Callable[[], int | None]
    ) -> None:
        self._launch = launch
        self._bootstrap = bootstrap
        self._procs: list[subprocess.Popen[bytes]] = []
        self._rss: list[TreeRss] = []
        self._admin: AIOKafkaAdminClient | None = None
        self._health_asked = 0.0
        self.launched_at = 0.0
        self.cpu = CpuMeter(lambda: [p.pid for p in self._procs], database_pid)

    @property
    def logs(self) -> str:
        return ", ".join(str(p.log_path) for p in self._launch.processes)

    async def __aenter__(self) -> RunningPath:
        self._admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap)
        await self._admin.start()
        self.launched_at = time.monotonic()
        try:
            for process in self._launch.processes:
                self._procs.append(_spawn(process, self._launch.cwd))
                self._rss.append(TreeRss(self._procs[-1].pid))
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _stop(self._procs)
        for cleanup in self._launch.cleanup:
            cleanup()
        if self._admin is not None:
            await self._admin.close()

    def check(self) -> None:
        """Raise if a process of the path exited, or (once a second) its health says failed."""
        self.sample_rss()
        for proc, process in zip(self._procs, self._launch.processes, strict=True):
            if proc.poll() is not None:
                raise RuntimeError(f"exited with {proc.returncode}; see {process.log_path}")
        health = self._launch.health
        if health is not None and time.monotonic() - self._health_asked >= 1.0:
            self._health_asked = time.monotonic()
            if (failure := health()) is not None:
                raise RuntimeError(f"{failure}; see {self.logs}")

    def sample_rss(self) -> None:
        for rss in self._rss:
            rss.sample()

    @property
    def peak_rss_mb(self) -> float:
        return max((rss.peak_mb for rss in self._rss), default=0.0)

    async def stable(self) -> bool:
        """Return whether the path's group is ``Stable`` (or the path says it holds partitions)."""
        assert self._admin is not None
        if self._launch.assigned is not None and await self._launch.assigned():
            return True
        try:
            (response,) = await self._admin.describe_consumer_groups([self._launch.group])
        except KafkaError as exc:
            # A broker just started has no group coordinator for a moment
            # (GroupCoordinatorNotAvailableError): the group is not Stable yet.
            if not exc.retriable:
                raise
            return False
        return str(response.to_object()["groups"][0]["state"]) == "Stable"

    def applied(self) -> Awaitable[Mapping[int, int]]:
        """Return the path's applied offsets (its durable progress)."""
        assert self._admin is not None
        return self._launch.progress(self._admin)


def _spawn(process: Process, cwd: Path) -> subprocess.Popen[bytes]:
    """Start ``process`` in a session of its own, output to its log."""
    with process.log_path.open("wb") as log:
        proc = subprocess.Popen(
            list(process.command),
            cwd=cwd,
            env=None if process.env is None else dict(process.env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    note_started(proc.pid)
    return proc


def _stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM the process groups we started (all at once), SIGKILL each after 60 s."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
