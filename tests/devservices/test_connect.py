"""Kafka Connect standalone as devservices/connect.py runs it: the command, the worker
settings, and how a FAILED connector's status is read (no JVM: a stand-in REST server)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from devservices import connect
from devservices.kafka import ConnectJars

TRACE = (
    "org.apache.kafka.connect.errors.ConnectException: An exception occurred\n"
    "\tat io.debezium.Some.where(Some.java:1)\n"
    "Caused by: org.postgresql.util.PSQLException: FATAL: no such slot\n"
)


def test_the_command_runs_connect_standalone_with_the_shared_log_settings() -> None:
    jars = ConnectJars("/jdk/bin/java", "/libs/*", Path("/plugins"))
    command = connect.standalone_command(jars, ["-Xmx1g"], [Path("/w/worker.properties"), "c"])
    assert command == [
        "/jdk/bin/java",
        "-Xmx1g",
        f"-Dlog4j2.configurationFile=file:{connect.LOG_CONFIG}",
        "-cp",
        "/libs/*",
        "org.apache.kafka.connect.cli.ConnectStandalone",
        "/w/worker.properties",
        "c",
    ]
    assert connect.LOG_CONFIG.exists()


def test_worker_settings_listen_on_loopback_only_and_end_with_the_runs_own(tmp_path: Path) -> None:
    text = connect.worker_properties(
        bootstrap="127.0.0.1:9092",
        rest_port=4242,
        plugin_path=tmp_path,
        offsets_file=tmp_path / "o",
        extra=connect.properties_text({"key.converter": "K", "schemas.enable": False}),
    )
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert "listeners=http://127.0.0.1:4242" in lines
    assert f"plugin.path={tmp_path}" in lines
    assert f"offset.storage.file.filename={tmp_path / 'o'}" in lines
    assert lines[-2:] == ["key.converter=K", "schemas.enable=false"]


@pytest.fixture
def rest() -> Iterator[tuple[int, dict[str, object]]]:
    """A stand-in for Connect's REST API: GET /connectors/x/status answers ``answers["x"]``."""
    answers: dict[str, object] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.path.split("/")[2]
            if name not in answers:
                self.send_response(404)
                self.end_headers()
                return
            body = json.dumps(answers[name]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], answers
    finally:
        server.shutdown()
        server.server_close()


def test_a_failed_task_is_told_by_its_last_cause(rest: tuple[int, dict[str, object]]) -> None:
    port, answers = rest
    answers["ok"] = {"connector": {"state": "RUNNING"}, "tasks": [{"state": "RUNNING"}]}
    answers["bad"] = {
        "connector": {"state": "RUNNING"},
        "tasks": [{"state": "FAILED", "trace": TRACE}],
    }
    assert connect.task_failure(port, "ok") is None
    assert connect.task_failure(port, "absent") is None  # not created yet: not a failure
    assert connect.task_failure(port, "bad") == (
        "Connect task failed: Caused by: org.postgresql.util.PSQLException: FATAL: no such slot"
    )


def test_a_busy_rest_port_is_refused(rest: tuple[int, dict[str, object]]) -> None:
    port, _ = rest
    with pytest.raises(connect.ConnectError, match=f"127.0.0.1:{port}, Connect's REST port"):
        connect.require_free(port)
    connect.require_free(connect.free_port())
