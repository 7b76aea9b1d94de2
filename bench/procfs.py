"""Reads of Linux's /proc for the bench: process trees, their memory and their CPU time.

Only the standard library: the bench's processes are plain OS processes (the worker, the Quix
process, the Connect JVM, the broker's JVM, PostgreSQL's postmaster and its backends, MariaDB's
server), a database server found by the port it listens on.
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


def listening_inodes(table: str, port: int) -> set[int]:
    """Return the inodes of the sockets listening on ``port`` in a /proc/net/tcp(6) table."""
    inodes = set()
    for line in table.splitlines()[1:]:
        fields = line.split()
        # local_address is HEXIP:HEXPORT; state 0A is LISTEN; field 10 is the inode.
        if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
            inodes.add(int(fields[9]))
    return inodes


def listener_pid(port: int, program: str) -> int | None:
    """Return the pid of the ``program`` process (/proc/<pid>/comm) listening on TCP ``port``.

    Only the fds of processes named ``program`` are read: a broker holds thousands. Costs about
    15 ms here (the kernel writes /proc/net/tcp out for each read): callers keep the pid.
    """
    inodes: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            inodes |= listening_inodes(Path(table).read_text(), port)
    sockets = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and comm(int(proc.name)) == program and _holds_any(proc, sockets):
            return int(proc.name)
    return None


def comm(pid: int) -> str | None:
    """Return the program name of ``pid`` (/proc/<pid>/comm), None once it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def _holds_any(proc: Path, links: set[str]) -> bool:
    """Whether one of ``proc``'s fds links to one of ``links`` (``socket:[inode]``)."""
    try:
        fds = list((proc / "fd").iterdir())
    except OSError:  # gone, or not ours to read
        return False
    for fd in fds:
        with contextlib.suppress(OSError):  # closed since listed
            if os.readlink(fd) in links:
                return True
    return False
