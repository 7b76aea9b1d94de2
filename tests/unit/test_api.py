"""The read API: status codes, error bodies and pagination (SQLite store, no services)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from sqlalchemy import BigInteger, Column, Integer, MetaData, SmallInteger, Table

import models.planet  # noqa: F401  (declares Planet in the default registry)
from models.registry import EntitySpec, default_registry
from models.store import SqlStore
from tables.api import get_entity, list_entities, parse_key
from tests.support import mirrored_planets


@pytest.fixture
def store(tmp_path: Path) -> SqlStore:
    return mirrored_planets(f"sqlite:///{tmp_path / 'api.sqlite3'}", 25)


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
        ("planet", "a\x00b", 400, "contains a NUL character"),
        ("planet", "\ud800", 400, "not valid Unicode text"),
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
        ({"after": "\x00"}, "contains a NUL character"),
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


@pytest.mark.parametrize(
    ("column", "raw", "error"),
    [
        (SmallInteger(), "40000", "range -32768..32767"),
        (Integer(), str(2**31), "range -2147483648..2147483647"),
        (BigInteger(), str(2**63), "range"),
        (Integer(), "12x", "invalid literal"),
    ],
)
def test_an_integer_key_the_column_cannot_hold_is_malformed(
    column: Integer, raw: str, error: str
) -> None:
    # parse_key reads only the table and the key column of a spec.
    table = Table("t", MetaData(), Column("k", column, primary_key=True))
    spec = cast(EntitySpec, SimpleNamespace(table=table, key_column="k", composite=False))
    with pytest.raises(ValueError, match=error):
        parse_key(spec, raw)
    assert parse_key(spec, "-7") == -7
