"""The read API: status codes, error bodies and pagination (SQLite store, no services)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import models.planet  # noqa: F401  (declares Planet in the default registry)
from models.registry import default_registry
from models.store import SqlStore
from streams.api import get_entity, list_entities
from streams.mirror import Mirror
from streams.routing import SourceRecord


@pytest.fixture
def store(tmp_path: Path) -> SqlStore:
    store = SqlStore.from_url(f"sqlite:///{tmp_path / 'api.sqlite3'}")
    store.create_tables(list(default_registry))
    spec = default_registry.by_kind("planet")
    assert spec is not None
    records = [
        SourceRecord(
            "planet-changed",
            0,
            i,
            1000 + i,
            None,
            json.dumps({"planetUuid": f"p{i:02d}", "planetName": f"n{i}"}).encode(),
        )
        for i in range(25)
    ]
    Mirror(default_registry, store, group="api").apply(spec, records)
    return store


def test_get_returns_the_row_without_bookkeeping(store: SqlStore) -> None:
    assert get_entity(default_registry, store, "planet", "p03") == (
        200,
        {"uuid": "p03", "name": "n3"},
    )


@pytest.mark.parametrize(
    ("kind", "key", "status", "error"),
    [
        ("planet", "nope", 404, "no planet 'nope'"),
        ("moon", "p01", 404, "unknown kind 'moon'"),
        ("planet", "x" * 65, 400, "malformed planet key"),
    ],
)
def test_get_errors(store: SqlStore, kind: str, key: str, status: int, error: str) -> None:
    code, body = get_entity(default_registry, store, kind, key)
    assert code == status and error in body["error"]


def test_pages_walk_every_row_once_in_key_order(store: SqlStore) -> None:
    seen: list[str] = []
    query: dict[str, str] = {"limit": "10"}
    while True:
        code, body = list_entities(default_registry, store, "planet", query)
        assert code == 200 and body["total"] == 25 and body["limit"] == 10
        seen += [item["uuid"] for item in body["items"]]
        if "next_after" not in body:
            break
        query = {"limit": "10", "after": body["next_after"]}
    assert seen == [f"p{i:02d}" for i in range(25)]


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"limit": "ten"}, "limit must be an integer"),
        ({"limit": "0"}, "limit must be between 1 and 1000"),
        ({"limit": "5000"}, "limit must be between 1 and 1000"),
        ({"after": "y" * 65}, "malformed after"),
        ({"offset": "3"}, "unknown parameters ['offset']"),
    ],
)
def test_list_errors_are_400_with_a_json_error(
    store: SqlStore, query: dict[str, str], error: str
) -> None:
    code, body = list_entities(default_registry, store, "planet", query)
    assert code == 400 and error in body["error"]


def test_list_of_an_unknown_kind_is_404(store: SqlStore) -> None:
    assert list_entities(default_registry, store, "moon", {})[0] == 404
