"""Every test under tests/integration talks to the real services: mark it so. The Kafka
Connect worker of the Debezium tests, one per test module (its JVM start is their bulk)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devservices.connect import ConnectStandalone


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="module")
def connect_standalone(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConnectStandalone]:
    """A Kafka Connect standalone worker (devservices/connect.py) for this module's tests,
    its log under the module's tmp folder; each test creates and deletes its connectors."""
    connect = ConnectStandalone(kafka_bootstrap, tmp_path_factory.mktemp("connect"))
    try:
        connect.start()
        yield connect
    finally:
        connect.stop()
