"""What a timed window cost in CPU: the machine's, the path's, the database's and the broker's.

On this 2-core machine the broker, the database server and the measured path share the
cores, so the pipeline's CPU per event sets the rate: a path that is fast by making the
database work harder per row shows up here, not in events/s alone. Each reading is /proc
(``bench/procfs.py``):

* ``machine``: busy jiffies of every core (/proc/stat), whatever ran;
* ``path``: the process trees of the path (the worker or workers, the Quix process, the
  Connect JVM);
* ``database``: the tree of the server the path writes to (``bench/servers.py``), found by
  the port it listens on: PostgreSQL's postmaster (live backends, plus its reaped
  children), or MariaDB's one ``mariadbd`` process (a thread per connection);
* ``broker``: the Kafka broker's JVM;
* ``bench``: this process (its progress and marker polls, the paced producer), so that what
  ``machine`` holds besides the pipeline can be told apart (the queries it sends count in
  ``database`` too).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from bench import procfs
from devservices import kafka as dev_kafka

PARTS = ("machine", "path", "database", "broker", "bench")
#: How the report heads the parts, in order.
PARTS_LABEL = "machine / path / database / broker / bench"


@dataclass(frozen=True, slots=True)
class CpuReading:
    """CPU seconds used so far by each part, at one instant, and whose they were."""

    seconds: Mapping[str, float | None]
    """Part -> CPU seconds; None when the part's process is not found (not ours)."""
    roots: Mapping[str, int | None]
    """Part -> the pid read for it (a restarted database server is another pid)."""

    def __sub__(self, earlier: CpuReading) -> CpuCost:
        used: dict[str, float | None] = {}
        for part in PARTS:
            now, then = self.seconds[part], earlier.seconds[part]
            same = self.roots.get(part) == earlier.roots.get(part)
            # A server restarted within the window has no meaningful difference: unknown.
            used[part] = now - then if now is not None and then is not None and same else None
        return CpuCost(used)


@dataclass(frozen=True, slots=True)
class CpuCost:
    """CPU seconds each part used over a window (None: not known, see CpuReading)."""

    seconds: Mapping[str, float | None]

    def us_per_event(self, events: int) -> dict[str, float | None]:
        """Return microseconds of CPU per event for each part, by name."""
        return {
            part: None if used is None else round(used / max(events, 1) * 1e6, 1)
            for part, used in self.seconds.items()
        }


def broker_pid() -> int | None:
    """Return the pid of the single-node broker devservices runs (None if it is not ours)."""
    return procfs.pid_from_file(dev_kafka.layout_dir(1) / "node1" / "kafka.pid", "kafka.Kafka")


class CpuMeter:
    """Reads each part's CPU time; the path's pids are asked each time (a second worker)."""

    def __init__(
        self, path_pids: Callable[[], Sequence[int]], database_pid: Callable[[], int | None]
    ) -> None:
        self._path_pids = path_pids
        self._database_pid = database_pid

    def read(self) -> CpuReading:
        """Return the CPU seconds each part has used so far."""
        database, broker = self._database_pid(), broker_pid()
        return CpuReading(
            seconds={
                "machine": procfs.machine_busy_seconds(),
                "path": sum(procfs.tree_cpu_seconds(pid) for pid in self._path_pids()),
                "database": None if database is None else procfs.tree_cpu_seconds(database),
                "broker": None if broker is None else procfs.tree_cpu_seconds(broker),
                "bench": procfs.own_cpu_seconds(),
            },
            roots={"database": database, "broker": broker},
        )
