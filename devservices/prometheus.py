"""A private Prometheus server (and ``promtool``) for the alert-rule tests, from Debian's package.

Debian's ``prometheus`` package (2.42 on bookworm) brings both binaries; it is installed when
missing the way the database servers are (``dbserver.apt_install``: the package's own service
is kept from starting, and its recommended node exporter is left out). The server we start is
ours alone: on 127.0.0.1 at a free port, with the configuration and rule files its caller
writes, and its data under ``.cache/prometheus/<port>`` (``MIRROR_CACHE_DIR`` moves it), removed
when it stops. Prometheus runs as whoever starts it, root too, so no system user is involved.

Command line: ``python -m devservices prometheus install`` (what the tests would install on
first use, done ahead) and ``python -m devservices prometheus version``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from devservices import dbserver, processes
from devservices.dbserver import CACHE_DIR_ENV, HOST, REPO_ROOT, DevServiceError

SERVICE = "prometheus"
PACKAGE = "prometheus"
_STOP_SECONDS = 30.0
_POLL_SECONDS = 0.2


class Binaries(NamedTuple):
    """Where the package's two programs are."""

    prometheus: Path
    """The server."""
    promtool: Path
    """Checks configurations and rules, and runs rule unit tests (``promtool test rules``)."""


@dataclass(frozen=True, slots=True)
class PrometheusServer:
    """One running server of ours; :func:`stop` ends it and removes its files."""

    port: int
    home: Path
    """Its folder: configuration, rule files, ``data/`` and ``server.log``."""
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """Its HTTP address (the web UI and ``/api/v1/...``)."""
        return f"http://{HOST}:{self.port}"

    @property
    def log(self) -> Path:
        """What the server printed; the first place to look when a test fails."""
        return self.home / "server.log"


# --- pure helpers (unit tested without a server) -------------------------------------------


def find_binaries(which: Callable[[str], str | None] = shutil.which) -> Binaries | None:
    """Return the two programs if both are on ``PATH``, else None."""
    server, tool = which("prometheus"), which("promtool")
    if server is None or tool is None:
        return None
    return Binaries(Path(server), Path(tool))


def runtime_root(cache_dir: str | None = None) -> Path:
    """Return the folder holding our servers: ``<MIRROR_CACHE_DIR or .cache>/prometheus``."""
    chosen = cache_dir if cache_dir is not None else os.environ.get(CACHE_DIR_ENV)
    # Prometheus runs as we do, so any folder we can write in is one it can reach.
    return dbserver.choose_runtime_root(
        REPO_ROOT,
        SERVICE,
        server_user="",
        cache_dir=chosen,
        as_root=False,
        reachable=lambda _path: True,
    )


def server_args(binaries: Binaries, home: Path, port: int) -> list[str]:
    """Return the server's command line: its files in ``home``, listening on ``port``."""
    return [
        str(binaries.prometheus),
        f"--config.file={home / 'prometheus.yml'}",
        f"--storage.tsdb.path={home / 'data'}",
        f"--web.listen-address={HOST}:{port}",
        # A test's server keeps nothing for long (its folder goes when it stops).
        "--storage.tsdb.retention.time=1h",
    ]


# --- install --------------------------------------------------------------------------------


def ensure_installed() -> Binaries:
    """Return the programs, installing Debian's ``prometheus`` package when they are missing."""
    found = find_binaries()
    if found is not None:
        return found
    dbserver.apt_install(
        [PACKAGE], missing="Prometheus is not installed (no prometheus and promtool on PATH)"
    )
    found = find_binaries()
    if found is None:
        raise DevServiceError("installed prometheus but found no prometheus and promtool on PATH")
    return found


def promtool(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``promtool`` with ``args`` (installing it when missing); the caller reads the result.

    Paths in ``args`` must be absolute (it runs in ``/``)."""
    tool = ensure_installed().promtool
    # As ourselves: promtool reads the caller's files, which its package's user may not reach.
    return dbserver.run_server_tool(
        None, [str(tool), *args], env=os.environ, timeout=timeout, check=False
    )


# --- server lifecycle -----------------------------------------------------------------------


def free_port() -> int:
    """Return a TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def start(
    config: str,
    *,
    files: Mapping[str, str] | None = None,
    port: int | None = None,
    timeout: float = 60.0,
) -> PrometheusServer:
    """Start a server with the YAML ``config`` and return it once it answers ``/-/ready``.

    ``files`` (name -> text: rule files, a token file) are written beside the configuration,
    which names them relative to itself. Its data starts empty; :func:`stop` removes it.
    """
    binaries = ensure_installed()
    port = dbserver.checked_port(port if port is not None else free_port())
    home = runtime_root() / str(port)
    shutil.rmtree(home, ignore_errors=True)
    dbserver.make_dir(home / "data", None)
    (home / "prometheus.yml").write_text(config)
    for name, text in (files or {}).items():
        (home / name).write_text(text)
    with (home / "server.log").open("wb") as log:
        process = subprocess.Popen(
            server_args(binaries, home, port),
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    processes.note_started(process.pid)
    server = PrometheusServer(port, home, process)
    try:
        _wait_ready(server, time.monotonic() + timeout)
    except BaseException:
        stop(server)
        raise
    return server


def _wait_ready(server: PrometheusServer, deadline: float) -> None:
    """Return once the server says it is ready; raise with its log's last line if it exits."""
    while True:
        if server.process.poll() is not None:
            raise DevServiceError(
                f"prometheus exited with status {server.process.returncode}: "
                f"{dbserver.last_line(server.log.read_text(errors='replace'))} (log: {server.log})"
            )
        try:
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise DevServiceError(
                f"prometheus on port {server.port} was not ready in time (log: {server.log})"
            )
        time.sleep(_POLL_SECONDS)


def stop(server: PrometheusServer) -> None:
    """Stop ``server`` (SIGTERM, then SIGKILL after 30 s) and remove its folder."""
    if server.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(_STOP_SECONDS)
    shutil.rmtree(server.home, ignore_errors=True)


@contextlib.contextmanager
def running(
    config: str, *, files: Mapping[str, str] | None = None, timeout: float = 60.0
) -> Iterator[PrometheusServer]:
    """Yield a started server; stop it and remove its files afterwards, whatever happened."""
    server = start(config, files=files, timeout=timeout)
    try:
        yield server
    finally:
        stop(server)


# --- command line ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``install``: install the package now; ``version``: print the installed server's."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args not in (["install"], ["version"]):
        print("usage: python -m devservices prometheus {install,version}", file=sys.stderr)
        return 2
    try:
        binaries = ensure_installed()
        if args == ["version"]:
            result = subprocess.run(
                [str(binaries.prometheus), "--version"],
                capture_output=True,
                text=True,
                check=False,
            )
            print((result.stdout or result.stderr).splitlines()[0])
    except (DevServiceError, OSError) as exc:
        print(f"devservices.prometheus: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
