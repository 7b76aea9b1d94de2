"""The SQL of a batch that every database takes alike: the version-guarded UPDATEs of partial
updates and soft deletes (built once per table and column set), and their parameters."""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Table,
    bindparam,
    tuple_,
    update,
)

from models.registry import VERSION_COLUMNS, EntitySpec
from streams.core.decisions import Delete
from streams.core.records import EntityKey, Version


def _guarded_update(
    table: Table, key_columns: tuple[str, ...], *, same_version: bool = False
) -> Any:
    """Return an UPDATE of the row ``mirror_key`` (a composite key's parts: ``mirror_key_0``,
    ...; :func:`key_params`) setting the version ``mirror_new_*``, only where the row's
    version is older (the guard is checked again in the database), or as old with
    ``same_version`` (a Kafka tombstone without a version deletes at the row's own)."""
    new: tuple[Any, ...] = tuple(bindparam(f"mirror_new_{c}") for c in VERSION_COLUMNS)
    stored = tuple_(*(table.c[c] for c in VERSION_COLUMNS))
    older = stored <= tuple_(*new) if same_version else stored < tuple_(*new)
    return (
        update(table)
        .where(*_key_match(table, key_columns), older)
        .values(dict(zip(VERSION_COLUMNS, new, strict=True)))
    )


def _key_match(table: Table, key_columns: tuple[str, ...]) -> list[Any]:
    """Return the clauses matching the key bound as :func:`key_params` binds it."""
    if len(key_columns) == 1:
        return [table.c[key_columns[0]] == bindparam("mirror_key")]
    return [table.c[c] == bindparam(f"mirror_key_{i}") for i, c in enumerate(key_columns)]


def key_params(spec: EntitySpec, key: EntityKey) -> dict[str, Any]:
    """Return the parameters naming ``key`` in a guarded UPDATE (``mirror_key``, or one per
    part of a composite key)."""
    if not spec.composite:
        return {"mirror_key": key}
    assert isinstance(key, tuple)
    return {f"mirror_key_{i}": part for i, part in enumerate(key)}


def key_columns_of(spec: EntitySpec, key: EntityKey) -> dict[str, Any]:
    """Return ``key`` by its column names."""
    if not spec.composite:
        return {spec.key_column: key}
    assert isinstance(key, tuple)
    return dict(zip(spec.key_columns, key, strict=True))


def new_version_params(version: Version) -> dict[str, int]:
    """Return the parameters of a guarded UPDATE's new version (``mirror_new_*``)."""
    return {f"mirror_new_{c}": v for c, v in zip(VERSION_COLUMNS, version, strict=True)}


@functools.lru_cache(maxsize=256)
def patch_statement(table: Table, key_columns: tuple[str, ...], columns: tuple[str, ...]) -> Any:
    """Build (once per table and column set) the version-guarded UPDATE of a partial update."""
    stmt = _guarded_update(table, key_columns)
    return stmt.values({c: bindparam(f"mirror_set_{c}") for c in columns if c not in key_columns})


@functools.lru_cache(maxsize=64)
def soft_delete_statement(table: Table, key_columns: tuple[str, ...], column: str) -> Any:
    """Build (once per table) the version-guarded UPDATE marking a row deleted."""
    stmt = _guarded_update(table, key_columns, same_version=True)
    return stmt.values({column: bindparam("mirror_deleted_at")})


def tombstone_rows(spec: EntitySpec, writes: Sequence[Delete]) -> list[dict[str, Any]]:
    """Return the tombstone rows of ``writes``, deleted now."""
    now = int(time.time() * 1000)
    rows = []
    for w in writes:
        assert w.version is not None  # resolve() gives every delete a version
        rows.append(
            {**key_columns_of(spec, w.key), **_version_values(w.version), "deleted_at": now}
        )
    return rows


def _version_values(version: Version) -> dict[str, int]:
    """Return ``version`` by its column name."""
    return dict(zip(VERSION_COLUMNS, version, strict=True))
