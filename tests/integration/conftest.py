"""Every test under tests/integration talks to the real services: mark it so. The Kafka
Connect worker of the Debezium tests, one per test module (its JVM start is their bulk). An
applier of one model on the test's fresh database, for the tests of how values are stored."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devservices.connect import ConnectStandalone
from models.registry import EntitySpec, Registry
from models.store import SqlStore
from streams.apply.sql_applier import SqlApplier


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


@pytest.fixture
def applier_of(db_url: str) -> Iterator[Callable[[type[Any]], tuple[SqlApplier, EntitySpec]]]:
    """Return a function giving an applier of one model (a registry of its own, its tables
    created) on the test's fresh database, and the model's spec; the stores close after."""
    stores: list[SqlStore] = []

    def make(model: type[Any]) -> tuple[SqlApplier, EntitySpec]:
        registry = Registry()
        spec = registry.register(model)
        store = SqlStore.from_url(db_url)
        stores.append(store)
        store.create_tables([spec])
        return SqlApplier(registry, store, group="test"), spec

    yield make
    for store in stores:
        store.dispose()
