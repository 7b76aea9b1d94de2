"""The read API over mirrored entities, independent of the web framework.

``GET /entities/{kind}`` lists rows from the SQL store, by key, paginated with ``limit`` and
``after`` (the last key of the previous page), with the total count; ``GET
/entities/{kind}/{key}`` returns one row or 404. A composite key is one path segment per key
column, in key order, each percent-encoded (``/entities/order_line/o-7/2``); its ``after`` and
``next_after`` are the JSON array of its parts (``["o-7",2]``). A key of the wrong number of
segments is a 404 (no such page) naming the form; malformed parameters and keys (an integer
column's segment that is not an integer, say) get 400 with a JSON error; unknown kinds 404.
Bookkeeping columns (``mirror_*``) are left out of the bodies.
Entities soft-deleted (a model with ``__soft_delete__``) answer 404 and are left out of lists,
unless the query says ``include_deleted=true``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import BigInteger, Integer, SmallInteger, String, Uuid

from models.registry import EntitySpec, Registry
from models.store import SqlStore
from streams.core.keys import parse_key_text

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

Reply = tuple[int, dict[str, Any]]


def _error(status: int, message: str) -> Reply:
    return status, {"error": message}


def _integer_bounds(column_type: Integer) -> tuple[int, int]:
    """Return the range of an integer key column, in SQL's sizes (SMALLINT, INTEGER, BIGINT)."""
    bits = 32
    if isinstance(column_type, BigInteger):
        bits = 64
    elif isinstance(column_type, SmallInteger):
        bits = 16
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def parse_key(spec: EntitySpec, raw: str) -> Any:
    """Convert a key from a URL to the key column's type; ValueError when malformed or when
    the column could not hold it (the database would refuse it: a 400, not a 500)."""
    if spec.composite:
        try:
            parts = parse_key_text(raw, len(spec.key_columns))
        except ValueError:
            raise ValueError(
                f"a {spec.kind} key is the JSON array of its {len(spec.key_columns)} parts"
            ) from None
        return parse_segments(spec, [str(part) for part in parts])  # type: ignore[union-attr]
    return _parse_part(spec.table.c[spec.key_column], raw)


def parse_segments(spec: EntitySpec, segments: Sequence[str]) -> Any:
    """Convert the decoded path segments of a key (one per key column) to the entity key;
    ValueError as :func:`parse_key` says."""
    if not spec.composite:
        return _parse_part(spec.table.c[spec.key_column], segments[0])
    parts = []
    for name, raw in zip(spec.key_columns, segments, strict=True):
        try:
            parts.append(_parse_part(spec.table.c[name], raw))
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return tuple(parts)


def key_form(spec: EntitySpec) -> str:
    """Return the URL form of ``spec``'s keys (``/entities/order_line/{order_id}/{line_no}``)."""
    return f"/entities/{spec.kind}/" + "/".join(f"{{{c}}}" for c in spec.key_columns)


def _parse_part(column: Any, raw: str) -> Any:
    """Convert one key column's text from a URL to the column's type."""
    if isinstance(column.type, Uuid):
        try:
            return str(UUID(raw))  # the one text form routing keys a UUID by
        except ValueError:
            raise ValueError("not a UUID") from None
    if isinstance(column.type, Integer):
        value = int(raw)
        low, high = _integer_bounds(column.type)
        if not low <= value <= high:
            raise ValueError(f"out of the key column's range {low}..{high}")
        return value
    if not raw:
        raise ValueError("empty key")
    if "\x00" in raw:
        raise ValueError("contains a NUL character, which no text column holds")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid Unicode text (a lone surrogate)") from None
    if isinstance(column.type, String) and column.type.length and len(raw) > column.type.length:
        raise ValueError(f"longer than {column.type.length} characters")
    return raw


def public(row: Mapping[str, Any]) -> dict[str, Any]:
    """Return a row without bookkeeping columns, JSON-ready."""
    return {k: v for k, v in row.items() if not k.startswith("mirror_")}


@dataclass(frozen=True, slots=True)
class Target:
    """The entity a ``/entities/{kind}/{key}`` URL names."""

    spec: EntitySpec
    key: Any
    """The key converted to the key column's type."""
    raw_key: str
    """The key as the URL gave it (decoded segments joined by ``/``), for messages."""


def entity_target(registry: Registry, kind: str, raw_key: str | Sequence[str]) -> Target | Reply:
    """Return what ``/entities/{kind}/{key}`` names (``raw_key``: the key's decoded path
    segment, or segments for a composite key), or the 404/400 reply when it is wrong."""
    spec = registry.by_kind(kind)
    if spec is None:
        return _error(404, f"unknown kind {kind!r}")
    segments = [raw_key] if isinstance(raw_key, str) else list(raw_key)
    shown = "/".join(segments)
    if len(segments) != len(spec.key_columns):
        return _error(
            404,
            f"a {kind} key is {len(spec.key_columns)} path segment(s), got {len(segments)}: "
            f"{key_form(spec)}",
        )
    try:
        key = parse_segments(spec, segments)
    except ValueError as exc:
        return _error(400, f"malformed {kind} key {shown!r}: {exc}")
    return Target(spec, key, shown)


INCLUDE_DELETED = "include_deleted"


def include_deleted(query: Mapping[str, str]) -> bool | Reply:
    """Read ``include_deleted`` (``true`` or ``false``, default false), or the 400 reply."""
    raw = query.get(INCLUDE_DELETED, "false")
    if raw not in ("true", "false"):
        return _error(400, f"{INCLUDE_DELETED} must be true or false, got {raw!r}")
    return raw == "true"


def entity_reply(
    target: Target, row: Mapping[str, Any] | None, *, with_deleted: bool = False
) -> Reply:
    """Answer for ``target`` given its state (a row, a cached value, or None)."""
    if row is None:
        return _error(404, f"no {target.spec.kind} {target.raw_key!r}")
    soft = target.spec.soft_delete
    if soft is not None and row.get(soft) is not None and not with_deleted:
        return _error(
            404,
            f"{target.spec.kind} {target.raw_key!r} is deleted ({soft} {row[soft]}); "
            f"add ?{INCLUDE_DELETED}=true to read it",
        )
    return 200, public(row)


def get_entity(
    registry: Registry,
    store: SqlStore,
    kind: str,
    raw_key: str | Sequence[str],
    query: Mapping[str, str] | None = None,
) -> Reply:
    """Answer ``GET /entities/{kind}/{key}[?include_deleted=]`` from the SQL store."""
    target = entity_target(registry, kind, raw_key)
    if not isinstance(target, Target):
        return target
    with_deleted = include_deleted(query or {})
    if not isinstance(with_deleted, bool):
        return with_deleted
    row = store.get(target.spec, target.key)
    return entity_reply(target, row, with_deleted=with_deleted)


def list_entities(
    registry: Registry, store: SqlStore, kind: str, query: Mapping[str, str]
) -> Reply:
    """Answer ``GET /entities/{kind}?limit=&after=&include_deleted=`` from the SQL store."""
    spec = registry.by_kind(kind)
    if spec is None:
        return _error(404, f"unknown kind {kind!r}")
    unknown = sorted(set(query) - {"limit", "after", INCLUDE_DELETED})
    if unknown:
        return _error(400, f"unknown parameters {unknown}; use limit, after, {INCLUDE_DELETED}")
    with_deleted = include_deleted(query)
    if not isinstance(with_deleted, bool):
        return with_deleted
    try:
        limit = int(query.get("limit", DEFAULT_LIMIT))
    except ValueError:
        return _error(400, f"limit must be an integer, got {query.get('limit')!r}")
    if not 1 <= limit <= MAX_LIMIT:
        return _error(400, f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    after = None
    if "after" in query:
        try:
            after = parse_key(spec, query["after"])
        except ValueError as exc:
            return _error(400, f"malformed after {query['after']!r}: {exc}")
    rows, total = store.page(spec, limit=limit, after=after, with_deleted=with_deleted)
    items = [public(row) for row in rows]
    body: dict[str, Any] = {"items": items, "total": total, "limit": limit}
    if len(items) == limit:
        last = spec.key_of(rows[-1])
        body["next_after"] = list(last) if spec.composite else last
    return 200, body
