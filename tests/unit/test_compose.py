"""docker-compose.yml parses, agrees with the settings and the pinned Kafka version, and keeps
its state: volumes for Kafka, PostgreSQL and each worker's DATA_DIR, a stop grace period longer
than SHUTDOWN_TIMEOUT, and a worker healthcheck that really asks GET /health.

No Docker engine runs here: the file is read as compose reads it (YAML merge keys, and
``${NAME:-default}`` taken at its default).
"""

from __future__ import annotations

import base64
import http.server
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devservices.kafka import KAFKA_VERSION
from streams.settings import ENVIRONMENT, Settings

ROOT = Path(__file__).resolve().parents[2]
WORKERS = ("worker-1", "worker-2")


def interpolated(value: Any) -> Any:
    """Return ``value`` with compose's ``${NAME:-default}`` replaced by the default."""
    if isinstance(value, dict):
        return {key: interpolated(item) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolated(item) for item in value]
    if isinstance(value, str):
        value = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)
        assert "$" not in value, f"only ${{NAME:-default}} is expected: {value!r}"
    return value


def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return interpolated(data)  # type: ignore[no-any-return]


def worker_settings(name: str, tmp_path: Path) -> Settings:
    env = {k: str(v) for k, v in compose()["services"][name]["environment"].items()}
    assert set(env) <= set(ENVIRONMENT), set(env) - set(ENVIRONMENT)
    return Settings.from_env(env, cwd=tmp_path)


def seconds(duration: str) -> float:
    """Return a compose duration (``45s``, ``1m30s``) in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    unit = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(number) * unit[name] for number, name in parts)


def named_volumes(service: dict[str, Any]) -> dict[str, str]:
    """Return the service's named volumes: container path -> volume."""
    mounts = {}
    for mount in service.get("volumes", []):
        source, target = str(mount).split(":")[:2]
        if not source.startswith((".", "/", "~")):
            mounts[target] = source
    return mounts


def test_services_are_kafka_postgres_and_two_workers() -> None:
    services = compose()["services"]
    assert set(services) == {"kafka", "postgres", *WORKERS}
    assert services["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["postgres"]["image"].startswith("postgres:")
    for name in WORKERS:
        worker = services[name]
        # Replicas of one service would share its named volumes, and so one DATA_DIR.
        assert worker.get("deploy", {}).get("replicas", 1) == 1
        # No -l: LOG_LEVEL sets the level.
        assert worker["command"] == ["faust", "-A", "streams.app", "worker"]
    assert (ROOT / "Dockerfile").is_file()


@pytest.mark.parametrize("name", WORKERS)
def test_worker_environment_is_what_the_settings_read(name: str, tmp_path: Path) -> None:
    services = compose()["services"]
    settings = worker_settings(name, tmp_path)
    assert settings.broker_hosts == ["kafka:9092"]
    assert settings.database_url.startswith("postgresql+psycopg2://mirror:mirror@postgres:5432/")
    pg = services["postgres"]["environment"]
    assert settings.database_url.endswith(f"/{pg['POSTGRES_DB']}")
    # The worker's web port is the container port the compose file publishes.
    assert any(str(p).endswith(f":{settings.web_port}") for p in services[name]["ports"])
    # The broker address the workers use is the one Kafka advertises.
    kafka_env = services["kafka"]["environment"]
    assert kafka_env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    # LOG_LEVEL and LOG_FORMAT are set (from the shell, with these defaults).
    assert (settings.log_level, settings.log_format) == ("info", "text")


def test_each_worker_advertises_a_url_the_other_reaches_and_its_own_host_port(
    tmp_path: Path,
) -> None:
    services = compose()["services"]
    urls, host_ports = set(), set()
    for name in WORKERS:
        settings = worker_settings(name, tmp_path)
        # A read by key forwarded to its owner goes to the owner's service name.
        assert settings.advertised_url == f"http://{name}:{settings.web_port}"
        assert settings.web_host == "0.0.0.0"
        urls.add(settings.advertised_url)
        host_ports.update(str(port).rsplit(":", 2)[-2] for port in services[name]["ports"])
    assert len(urls) == len(host_ports) == len(WORKERS)


def test_kafka_postgres_and_each_data_dir_are_on_named_volumes(tmp_path: Path) -> None:
    data = compose()
    services, declared = data["services"], set(data["volumes"])
    kafka_env = services["kafka"]["environment"]
    log_dirs = kafka_env["KAFKA_LOG_DIRS"].split(",")
    kafka_volumes = named_volumes(services["kafka"])
    assert all(path in kafka_volumes for path in log_dirs), (log_dirs, kafka_volumes)
    # A broker re-created on its volume must find the cluster it formatted there.
    assert len(base64.urlsafe_b64decode(kafka_env["CLUSTER_ID"] + "==")) == 16
    assert "/var/lib/postgresql/data" in named_volumes(services["postgres"])
    data_volumes = []
    for name in WORKERS:
        data_dir = worker_settings(name, tmp_path).data_dir
        mounts = named_volumes(services[name])
        assert data_dir in mounts, f"{name}'s DATA_DIR {data_dir!r} is on no volume"
        data_volumes.append(mounts[data_dir])
    assert len(set(data_volumes)) == len(WORKERS), "each worker needs a DATA_DIR of its own"
    used = {v for service in services.values() for v in named_volumes(service).values()}
    assert used <= declared, used - declared


@pytest.mark.parametrize("name", WORKERS)
def test_a_stopping_worker_gets_longer_than_shutdown_timeout(name: str, tmp_path: Path) -> None:
    environment = compose()["services"][name]["environment"]
    assert "SHUTDOWN_TIMEOUT" in environment  # explicit: the grace period is sized from it
    grace = seconds(compose()["services"][name]["stop_grace_period"])
    assert grace > worker_settings(name, tmp_path).shutdown_timeout


class Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(params=[200, 503])
def health_server(request: pytest.FixtureRequest) -> Iterator[tuple[int, int]]:
    """A local GET /health answering the parametrized status: (port, status)."""
    handler = type("Answer", (Health,), {"status": request.param})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], request.param
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("name", WORKERS)
def test_the_worker_healthcheck_asks_get_health(name: str, health_server: tuple[int, int]) -> None:
    port, status = health_server
    check = compose()["services"][name]["healthcheck"]
    command = check["test"]
    assert command[:2] == ["CMD", "python"], "the image has Python, no curl"
    environment = compose()["services"][name]["environment"]
    done = subprocess.run(
        [sys.executable, *command[2:]],
        env={**os.environ, **{k: str(v) for k, v in environment.items()}, "WEB_PORT": str(port)},
        capture_output=True,
        timeout=30,
    )
    assert (done.returncode == 0) == (status == 200), done.stderr
    # Compose gives the check longer than the check gives the worker's answer.
    asked = re.search(r"timeout=(\d+)", command[-1])
    assert asked and seconds(check["timeout"]) > float(asked[1])
