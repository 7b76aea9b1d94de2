"""CI stops the processes its tests started, and only those (devservices/processes.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devservices.processes import STARTED_PIDS_ENV, note_started, start_time, stop_started


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
