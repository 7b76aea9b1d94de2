"""Kafka Connect standalone, as the benchmark's Debezium peer and the Debezium tests run it.

One place says how a standalone Connect worker is started here: its jars
(``kafka.connect_jars()``: the Connect runtime of the broker's version on the class path,
Debezium's JDBC sink and PostgreSQL connector unpacked under ``plugin.path``), the worker
settings every run shares (``connect-standalone.properties`` beside this module: REST on
127.0.0.1 only, the plugin folder, an offsets file of the run's own), the log configuration
(``connect-log4j2.properties``) and the command line. The bench (``bench/peers/debezium.py``)
builds its peer's command from ``standalone_command``; the tests run a ``ConnectStandalone``:
a JVM on a free REST port, its output in a log file of the test's, noted like the workers
(``devservices.processes``) so that CI's clean-up stops it, connectors created and deleted
through the REST API, and one clear failure (with the log's tail) when Connect exits or a
connector or its task FAILS.

Only the standard library is imported.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from devservices.kafka import ConnectJars, connect_jars
from devservices.processes import note_started

HERE = Path(__file__).resolve().parent
#: The worker settings every run shares; the names in braces are filled in.
WORKER_TEMPLATE = HERE / "connect-standalone.properties"
#: INFO to stdout (the run's log file), config dumps cut to WARN.
LOG_CONFIG = HERE / "connect-log4j2.properties"
MAIN_CLASS = "org.apache.kafka.connect.cli.ConnectStandalone"
#: A JVM for tests: small, quick to start (C1 only, as the test broker's).
TEST_JVM_OPTIONS = (
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
_STOP_GRACE = 30.0


class ConnectError(RuntimeError):
    """Connect exited, did not answer, or a connector or task FAILED; the message says which,
    with the log's tail."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_free(port: int) -> None:
    """Raise ConnectError if something already listens on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", port)) == 0:
            raise ConnectError(f"127.0.0.1:{port}, Connect's REST port, is already in use")


def _setting(value: object) -> str:
    """A setting's value as Connect reads it (``true``, not Python's ``True``)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def properties_text(settings: Mapping[str, object]) -> str:
    """Return ``settings`` as a Java ``.properties`` file."""
    return "".join(f"{name}={_setting(value)}\n" for name, value in settings.items())


def worker_properties(
    *, bootstrap: str, rest_port: int, plugin_path: Path, offsets_file: Path, extra: str = ""
) -> str:
    """Return a standalone worker's settings: the shared ones (``WORKER_TEMPLATE``), filled
    in, then ``extra`` (the run's own lines: converters, flush interval, ...)."""
    shared = WORKER_TEMPLATE.read_text().format_map(
        {
            "bootstrap": bootstrap,
            "rest_port": rest_port,
            "plugin_path": plugin_path,
            "offsets_file": offsets_file,
        }
    )
    return shared + extra


def standalone_command(
    jars: ConnectJars, jvm_options: Sequence[str], configs: Sequence[Path | str]
) -> list[str]:
    """Return the command line of ``ConnectStandalone`` with worker config ``configs[0]`` and
    the connector configs after it."""
    return [
        jars.java,
        *jvm_options,
        f"-Dlog4j2.configurationFile=file:{LOG_CONFIG}",
        "-cp",
        jars.classpath,
        MAIN_CLASS,
        *(str(config) for config in configs),
    ]


def rest_get(rest_port: int, path: str, timeout: float = 5.0) -> Any:
    """GET ``path`` of the REST API on ``rest_port``; return the decoded JSON body."""
    with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}{path}", timeout=timeout) as resp:
        return json.load(resp)


def task_failure(rest_port: int, name: str) -> str | None:
    """Say why connector ``name`` or one of its tasks has FAILED (Connect keeps running), or
    None (also while the REST API or the connector is not up yet)."""
    try:
        status = rest_get(rest_port, f"/connectors/{name}/status", timeout=2)
    except (OSError, ValueError):  # REST not up yet, or the connector not created yet
        return None
    for part in (status.get("connector", {}), *status.get("tasks", [])):
        if part.get("state") == "FAILED":
            lines = str(part.get("trace", "")).strip().splitlines() or ["no trace"]
            causes = [line for line in lines if line.startswith("Caused by:")]
            return f"Connect task failed: {(causes or lines)[-1 if causes else 0]}"
    return None


class ConnectStandalone:
    """A Kafka Connect standalone worker started for tests, connectors added over REST.

    ``start`` runs the JVM in a session of its own (noted for CI's clean-up), its output in
    ``workdir/connect.log``; ``stop`` ends it (SIGTERM, SIGKILL after a grace period). It
    satisfies ``tests.waiting.Watched`` (``assert_alive``, ``tail``), so a wait fails at once
    when Connect exits.
    """

    def __init__(
        self,
        bootstrap: str,
        workdir: Path,
        *,
        extra_worker_settings: Mapping[str, object] | None = None,
        jvm_options: Sequence[str] = TEST_JVM_OPTIONS,
    ) -> None:
        self.bootstrap = bootstrap
        self.workdir = workdir
        self.rest_port = free_port()
        self.log_path = workdir / "connect.log"
        self._extra = dict(extra_worker_settings or {})
        self._jvm_options = tuple(jvm_options)
        self._proc: subprocess.Popen[bytes] | None = None

    # --- the process ---------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> None:
        """Start the JVM and wait until its REST API answers (raise ConnectError if not)."""
        jars = connect_jars()
        self.workdir.mkdir(parents=True, exist_ok=True)
        require_free(self.rest_port)
        config = self.workdir / "connect-standalone.properties"
        config.write_text(
            worker_properties(
                bootstrap=self.bootstrap,
                rest_port=self.rest_port,
                plugin_path=jars.plugin_path,
                offsets_file=self.workdir / "connect.offsets",
                extra=properties_text(
                    {
                        # Connect requires worker-wide converters; each connector names its own.
                        "key.converter": "org.apache.kafka.connect.json.JsonConverter",
                        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
                        # Source offsets flushed often, so a stopped connector resumes close.
                        "offset.flush.interval.ms": 1000,
                        **self._extra,
                    }
                ),
            )
        )
        command = standalone_command(jars, self._jvm_options, [config])
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                command,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        note_started(self._proc.pid)
        self._until(lambda: self._answers("/"), "its REST API to answer", timeout)

    def stop(self) -> None:
        """Stop the JVM (SIGTERM to its process group; SIGKILL after a grace period)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=_STOP_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def assert_alive(self) -> None:
        """Raise ConnectError, with the log's tail, if Connect has exited."""
        if self._proc is None:
            raise ConnectError("Kafka Connect was never started (or was stopped)")
        if self._proc.poll() is not None:
            raise ConnectError(
                f"Kafka Connect (pid {self._proc.pid}) exited with {self._proc.returncode}; "
                f"{self.log_path} ends:\n{self.tail()}"
            )

    def tail(self, lines: int = 40) -> str:
        """Return the last lines of Connect's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    # --- connectors ----------------------------------------------------------------------

    def create(self, name: str, config: Mapping[str, object], timeout: float = 120.0) -> None:
        """Create connector ``name`` and wait until it and its tasks are RUNNING."""
        body = {key: _setting(value) for key, value in config.items()}
        self._request("PUT", f"/connectors/{name}/config", body)
        self._until(lambda: self._running(name), f"connector {name} to run", timeout)

    def delete(self, name: str, timeout: float = 60.0) -> None:
        """Delete connector ``name`` (its task stopped: a source releases its slot) and wait
        until Connect no longer lists it."""
        self.assert_alive()
        with contextlib.suppress(urllib.error.HTTPError):  # 404: not there (any more)
            self._request("DELETE", f"/connectors/{name}")
        self._until(
            lambda: name not in rest_get(self.rest_port, "/connectors"),
            f"connector {name} to be deleted",
            timeout,
        )

    def check(self, names: Iterable[str]) -> None:
        """Raise ConnectError if Connect exited or one of connectors ``names`` FAILED."""
        self.assert_alive()
        for name in names:
            failure = task_failure(self.rest_port, name)
            if failure is not None:
                raise ConnectError(
                    f"connector {name}: {failure}; {self.log_path} ends:\n{self.tail()}"
                )

    def _running(self, name: str) -> bool:
        self.check([name])
        try:
            status = rest_get(self.rest_port, f"/connectors/{name}/status")
        except (OSError, ValueError):
            return False
        tasks = status.get("tasks", [])
        states = [status.get("connector", {}).get("state"), *(t.get("state") for t in tasks)]
        return bool(tasks) and all(state == "RUNNING" for state in states)

    def _answers(self, path: str) -> bool:
        self.assert_alive()
        try:
            rest_get(self.rest_port, path, timeout=2)
        except (OSError, ValueError):
            return False
        return True

    def _request(self, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.rest_port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            if error.code == 404:
                raise
            detail = error.read().decode(errors="replace")
            raise ConnectError(
                f"{method} {path} answered {error.code}: {detail}; "
                f"{self.log_path} ends:\n{self.tail()}"
            ) from None
        return json.loads(raw) if raw else None

    def _until(self, done: Callable[[], bool], what: str, timeout: float) -> None:
        """Poll ``done()`` every 0.2 s until true; raise ConnectError with the log's tail
        after ``timeout`` seconds (``done`` raises at once on a failure it sees)."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() >= deadline:
                raise ConnectError(
                    f"timed out after {timeout:.0f} s waiting for {what}; "
                    f"{self.log_path} ends:\n{self.tail()}"
                )
            time.sleep(0.2)
