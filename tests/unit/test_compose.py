"""docker-compose.yml parses and agrees with the settings and the pinned Kafka version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from devservices.kafka import KAFKA_VERSION
from streams.settings import ENVIRONMENT, Settings

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_services_are_kafka_postgres_and_two_workers() -> None:
    services = compose()["services"]
    assert set(services) == {"kafka", "postgres", "worker"}
    assert services["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["postgres"]["image"].startswith("postgres:")
    worker = services["worker"]
    assert worker["deploy"]["replicas"] == 2
    assert worker["command"] == ["faust", "-A", "streams.app", "worker", "-l", "info"]
    assert (ROOT / "Dockerfile").is_file()


def test_worker_environment_is_what_the_settings_read(tmp_path: Path) -> None:
    services = compose()["services"]
    env = {k: str(v) for k, v in services["worker"]["environment"].items()}
    assert set(env) <= set(ENVIRONMENT), set(env) - set(ENVIRONMENT)
    settings = Settings.from_env(env, cwd=tmp_path)
    assert settings.broker_hosts == ["kafka:9092"]
    assert settings.database_url.startswith("postgresql+psycopg2://mirror:mirror@postgres:5432/")
    pg = services["postgres"]["environment"]
    assert settings.database_url.endswith(f"/{pg['POSTGRES_DB']}")
    # The worker's web port is the container port the compose file publishes.
    assert any(str(p).endswith(f":{settings.web_port}") for p in services["worker"]["ports"])
    # The broker address the workers use is the one Kafka advertises.
    kafka_env = services["kafka"]["environment"]
    assert kafka_env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
