"""Processes as /proc shows them, and those a test run starts, noted so that CI stops them.

The local servers are detached from whoever started them, so their tools find them again
through /proc: ``cmdline`` says which server a pid runs, ``is_alive`` whether it still does.

With ``MIRROR_STARTED_PIDS`` naming a file, every worker the tests or the bench start (each in
a session of its own) is noted there with its start time; ``python -m devservices
stop-started FILE`` then kills each one's process group if that process is still the one
noted (a PID the kernel gave to another process since is left alone). A user's own workers on
the machine are never touched, unlike ``pkill -f "streams.app worker"``.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

STARTED_PIDS_ENV = "MIRROR_STARTED_PIDS"


def cmdline(pid: int) -> list[str]:
    """Return the arguments ``pid`` was started with, empty when it is gone or unreadable."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_alive(pid: int) -> bool:
    """Return whether ``pid`` runs; a zombie counts as dead (a detached server's parent may
    never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def start_time(pid: int) -> str | None:
    """Return the process's start time (clock ticks since boot, /proc), None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime); the command name (field 2) may hold spaces, so split after it.
    return stat.rsplit(")", 1)[1].split()[19]


def note_started(pid: int) -> None:
    """Note ``pid`` (the leader of a new session) in ``$MIRROR_STARTED_PIDS``, if set."""
    path = os.environ.get(STARTED_PIDS_ENV)
    started = start_time(pid)
    if not path or started is None:
        return
    with Path(path).open("a") as out:
        out.write(f"{pid} {started}\n")


def stop_started(path: Path) -> int:
    """SIGKILL the process group of each noted process still running; return how many."""
    if not path.exists():
        return 0
    stopped = 0
    for line in path.read_text().splitlines():
        pid_text, _, started = line.partition(" ")
        pid = int(pid_text)
        if start_time(pid) != started:
            continue  # exited (maybe reaped), or the PID is another process's now
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
            stopped += 1
    return stopped
