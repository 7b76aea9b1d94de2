"""What /proc says of a pid, and CI stops the processes its tests started, only those
(devservices/processes.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devservices.processes import (
    STARTED_PIDS_ENV,
    cmdline,
    is_alive,
    note_started,
    start_time,
    stop_started,
)
from tests.waiting import eventually


def test_noted_processes_are_stopped_and_others_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    noted = tmp_path / "pids"
    monkeypatch.setenv(STARTED_PIDS_ENV, str(noted))
    ours = subprocess.Popen(["sleep", "300"], start_new_session=True)
    theirs = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        note_started(ours.pid)
        # A noted PID whose process is another one now (another start time) is not touched.
        with noted.open("a") as out:
            out.write(f"{theirs.pid} 1\n")
        assert stop_started(noted) == 1
        assert ours.wait(timeout=30) == -9
        assert theirs.poll() is None and start_time(theirs.pid) is not None
        assert stop_started(noted) == 0  # ours is gone: nothing left to stop
    finally:
        for proc in (ours, theirs):
            proc.kill()
            proc.wait()


def test_nothing_is_noted_without_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(STARTED_PIDS_ENV, raising=False)
    note_started(1)
    assert stop_started(tmp_path / "absent") == 0


async def test_proc_says_what_a_pid_runs_and_a_zombie_is_dead() -> None:
    proc = subprocess.Popen(["sleep", "300"])
    try:
        # Until the child has exec'd, /proc shows the forked copy of us (or nothing).
        await eventually(
            lambda: cmdline(proc.pid),
            lambda args: args == ["sleep", "300"],
            what="sleep to be exec'd",
            every=0.01,
        )
        assert is_alive(proc.pid)
        proc.kill()
        # Killed but not reaped yet: a zombie, which a detached server's parent may leave.
        stat = Path(f"/proc/{proc.pid}/stat")
        await eventually(
            lambda: stat.read_text().rsplit(")", 1)[1].split()[0],
            lambda state: state == "Z",
            what="the killed process to be a zombie",
            every=0.01,
        )
        assert not is_alive(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert not is_alive(proc.pid)
    assert cmdline(proc.pid) == []
