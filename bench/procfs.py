"""Reads of Linux's /proc for the bench: process trees, their memory and their CPU time.

Only the standard library: the bench's processes are plain OS processes (the worker, the Quix
process, the Connect JVM, the broker's JVM, PostgreSQL's postmaster and its backends).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

#: Jiffies per second of /proc's CPU times.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_tree(root: int) -> list[int]:
    """Return ``root`` and its live descendants (children of every thread)."""
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    todo.extend(int(c) for c in (task / "children").read_text().split())
    return pids


def status_kib(pid: int, field: str) -> int | None:
    """Return a ``kB`` field of /proc/<pid>/status (``VmHWM:``), None once the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(field):
            return int(line.split()[1])
    return None


def process_cpu_seconds(pid: int) -> float:
    """Return utime + stime + cutime + cstime of ``pid`` in seconds (0 once it is gone).

    cutime and cstime hold the time of the children it has reaped: a PostgreSQL backend that
    exits still counts, in the postmaster's.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # Fields 14-17; the command name (field 2) may hold spaces, so split after it.
    utime, stime, cutime, cstime = (int(x) for x in stat.rsplit(")", 1)[1].split()[11:15])
    return (utime + stime + cutime + cstime) / CLOCK_TICKS


def own_cpu_seconds() -> float:
    """Return this process's own CPU time (every thread; not its reaped children's)."""
    times = os.times()
    return times.user + times.system


def tree_cpu_seconds(root: int) -> float:
    """Return the CPU time of ``root``'s tree: each live member's own and its reaped children's.

    A member that exits between two readings moves its time into its reaper's cutime, so the
    difference of two readings is the tree's CPU between them.
    """
    return sum(process_cpu_seconds(pid) for pid in process_tree(root))


def machine_busy_seconds() -> float:
    """Return the busy CPU time of every core since boot (/proc/stat, idle and iowait left out)."""
    with Path("/proc/stat").open() as stat:
        fields = [int(x) for x in stat.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def pid_from_file(path: Path, expect_in_cmdline: str) -> int | None:
    """Return the pid on the first line of ``path`` if that process runs ``expect_in_cmdline``."""
    try:
        pid = int(path.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError, IndexError):
        return None
    return pid if expect_in_cmdline in cmdline else None
