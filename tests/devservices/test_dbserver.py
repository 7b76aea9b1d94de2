"""Installing a database server's package never starts the machine's own service."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from devservices import dbserver
from devservices.dbserver import DevServiceError

# dbserver.subprocess is the subprocess module: patching its run patches everyone's.
_run = subprocess.run


class FakeAptGet:
    """Stands in for subprocess.run: records each apt-get step and the policy it ran under."""

    def __init__(self, policy: Path, fail: str | None = None) -> None:
        self.policy = policy
        self.fail = fail
        self.steps: list[tuple[str, int | None]] = []

    def __call__(self, argv: Sequence[str], **_: Any) -> subprocess.CompletedProcess[str]:
        step = "update" if "update" in argv else "install"
        denies = None
        if self.policy.exists():
            assert os.access(self.policy, os.X_OK)
            denies = _run([str(self.policy), "mariadb", "start"], check=False).returncode
        self.steps.append((step, denies))
        failed = step == self.fail
        return subprocess.CompletedProcess(
            list(argv), 100 if failed else 0, "", "E: Unable to locate package\n" if failed else ""
        )


@pytest.fixture
def policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where policy-rc.d is, moved into tmp_path; we pretend to be root with apt-get."""
    path = tmp_path / "policy-rc.d"
    monkeypatch.setattr(dbserver, "_POLICY_RC_D", path)
    monkeypatch.setattr(dbserver, "_INSTALL_LOCK", tmp_path / "apt.lock")
    monkeypatch.setattr(dbserver, "as_root", lambda: True)
    monkeypatch.setattr(dbserver.shutil, "which", lambda _: "/usr/bin/apt-get")
    return path


def test_without_a_policy_every_start_is_denied_while_apt_get_runs(
    policy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apt_get = FakeAptGet(policy)
    monkeypatch.setattr(dbserver.subprocess, "run", apt_get)
    dbserver.apt_install(["mariadb-server"], missing="MariaDB server not installed")
    # 101: "action forbidden by policy", which invoke-rc.d takes as "do not start".
    assert apt_get.steps == [("update", 101), ("install", 101)]
    assert not policy.exists()


def test_the_machines_own_policy_is_left_alone(
    policy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy.write_text("#!/bin/sh\nexit 0\n")
    policy.chmod(0o755)
    apt_get = FakeAptGet(policy)
    monkeypatch.setattr(dbserver.subprocess, "run", apt_get)
    dbserver.apt_install(["mariadb-server"], missing="MariaDB server not installed")
    assert apt_get.steps == [("update", 0), ("install", 0)]
    assert policy.read_text() == "#!/bin/sh\nexit 0\n"


def test_a_failed_install_is_one_line_and_removes_our_policy(
    policy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dbserver.subprocess, "run", FakeAptGet(policy, fail="install"))
    with pytest.raises(DevServiceError) as raised:
        dbserver.apt_install(["mariadb-server"], missing="MariaDB server not installed")
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("`apt-get -o DPkg::Lock::Timeout=600 install -y -q")
    assert message.endswith("failed (exit 100): E: Unable to locate package")
    assert not policy.exists()
