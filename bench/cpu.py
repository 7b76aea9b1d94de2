"""What a timed window cost in CPU: the machine's, the path's, PostgreSQL's and the broker's.

On this 2-core machine the broker, PostgreSQL and the measured path share the cores, so the
pipeline's CPU per event sets the rate: a path that is fast by making PostgreSQL work harder
per row shows up here, not in events/s alone. Each reading is /proc (``bench/procfs.py``):

* ``machine``: busy jiffies of every core (/proc/stat), whatever ran;
* ``path``: the process trees of the path (the worker or workers, the Quix process, the
  Connect JVM);
* ``postgres``: the postmaster's tree (live backends, plus the postmaster's reaped children);
* ``broker``: the Kafka broker's JVM.

The bench's own reads (the progress and marker polls) count in ``machine`` and ``postgres``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench import procfs
from devservices import kafka as dev_kafka
from devservices import postgres as dev_postgres

PARTS = ("machine", "path", "postgres", "broker")


@dataclass(frozen=True, slots=True)
class CpuReading:
    """CPU seconds used so far by each part, at one instant."""

    machine: float
    path: float
    postgres: float
    broker: float

    def __sub__(self, earlier: CpuReading) -> CpuCost:
        return CpuCost(
            machine=self.machine - earlier.machine,
            path=self.path - earlier.path,
            postgres=self.postgres - earlier.postgres,
            broker=self.broker - earlier.broker,
        )


@dataclass(frozen=True, slots=True)
class CpuCost:
    """CPU seconds each part used over a window."""

    machine: float
    path: float
    postgres: float
    broker: float

    def us_per_event(self, events: int) -> dict[str, float]:
        """Return microseconds of CPU per event for each part, by name."""
        return {part: round(getattr(self, part) / max(events, 1) * 1e6, 1) for part in PARTS}


def broker_pid() -> int | None:
    """Return the pid of the single-node broker devservices runs (None if it is not ours)."""
    return procfs.pid_from_file(dev_kafka.layout_dir(1) / "node1" / "kafka.pid", "kafka.Kafka")


def postmaster_pid() -> int | None:
    """Return the pid of the PostgreSQL server devservices runs (None if it is not ours)."""
    return procfs.pid_from_file(dev_postgres.layout().data / "postmaster.pid", "postgres")


class CpuMeter:
    """Reads the four parts' CPU time; the path's pids may change (a second worker)."""

    def __init__(self, path_pids: Callable[[], Sequence[int]]) -> None:
        self._path_pids = path_pids
        self._postgres = postmaster_pid()
        self._broker = broker_pid()

    def read(self) -> CpuReading:
        """Return the CPU seconds each part has used so far."""
        return CpuReading(
            machine=procfs.machine_busy_seconds(),
            path=sum(procfs.tree_cpu_seconds(pid) for pid in self._path_pids()),
            postgres=self._tree(self._postgres),
            broker=self._tree(self._broker),
        )

    @staticmethod
    def _tree(root: int | None) -> float:
        return 0.0 if root is None else procfs.tree_cpu_seconds(root)
