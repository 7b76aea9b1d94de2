"""Entity keys of one or several columns, and their forms outside the core (pure).

A single-column key is the scalar it always was (``str`` or ``int``). A composite key (a
table with several primary-key columns) is a ``tuple`` of its column values in the table's
primary-key order. Its forms, the same everywhere:

- **record key** (tombstones, the repartition topic): a UTF-8 JSON object of key column name
  to value, ``{"order_id": "o-7", "line_no": 2}``, as Debezium and Kafka Connect write it; Kafka
  Connect's JsonConverter envelope ``{"schema": {...}, "payload": {...}}`` is read too
  (:func:`decode_record_key`, :func:`record_key_bytes`). An entity whose input format says
  ``json_record_keys`` reads single-column keys that way as well (``{"id": 5}``).
- **text** (cache and changelog keys, dead letters, the command line): the compact JSON array
  of the parts, ``["o-7",2]`` (:func:`key_text`, :func:`parse_key_text`); a single key's text
  is the key itself, as before.
- **URL** (``GET /entities/{kind}/...``): one percent-encoded path segment per column, in key
  order (:func:`key_path`, :func:`path_segments`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from streams.core.decisions import RejectReason
from streams.core.records import EntityKey, JsonLoads

#: Longest text a key part may be (as the single key always was).
MAX_TEXT_PART = 1024


def valid_part(value: Any) -> bool:
    """Tell whether ``value`` can be (a part of) an entity key: a non-empty text of at most
    :data:`MAX_TEXT_PART` characters, or an integer (not a bool)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        return 0 < len(value) <= MAX_TEXT_PART
    return isinstance(value, int)


@dataclass(frozen=True, slots=True)
class BadKey:
    """Why a record key names no entity key: the reason to reject with, and the detail."""

    reason: RejectReason
    detail: str


def decode_record_key(
    raw: bytes, columns: Sequence[str], loads: JsonLoads = json.loads
) -> tuple[str | int, ...] | BadKey:
    """Read a JSON object record key into the key's parts, in ``columns`` order.

    Accepts the plain object and Kafka Connect JsonConverter's ``{"schema", "payload"}``
    envelope; fields other than the key columns are ignored. Anything else (not UTF-8, not
    JSON, not an object, a column missing or of a type no key takes) is a :class:`BadKey`.
    """
    try:
        decoded = loads(raw)  # the bytes as they are: orjson checks the UTF-8 as it parses
    except ValueError:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return BadKey(RejectReason.BAD_ENCODING, f"record key is not UTF-8: {exc}")
        return BadKey(RejectReason.BAD_KEY, f"record key is not a JSON object: {_clip(raw)}")
    if (
        isinstance(decoded, dict)
        and "payload" in decoded
        and "schema" in decoded
        and isinstance(decoded["payload"], dict)
    ):
        decoded = decoded["payload"]
    if not isinstance(decoded, dict):
        return BadKey(RejectReason.BAD_KEY, f"record key is not a JSON object: {_clip(raw)}")
    parts: list[str | int] = []
    for column in columns:
        if column not in decoded:
            return BadKey(RejectReason.MISSING_KEY, f"record key has no {column!r}")
        value = decoded[column]
        if not valid_part(value):
            return BadKey(
                RejectReason.BAD_KEY, f"record key's {column!r} is not a string or integer"
            )
        parts.append(value)
    return tuple(parts)


def record_key_bytes(key: EntityKey, columns: Sequence[str]) -> bytes:
    """Return the JSON object record key of ``key`` (its parts named by ``columns``)."""
    parts = key if isinstance(key, tuple) else (key,)
    return json.dumps(
        dict(zip(columns, parts, strict=True)), separators=(",", ":"), ensure_ascii=False
    ).encode()


def key_text(key: EntityKey) -> str:
    """Return the text form of ``key``: a single key as it is, a composite one as the compact
    JSON array of its parts (unambiguous and stable: ``["o-7",2]``)."""
    if isinstance(key, tuple):
        return json.dumps(list(key), separators=(",", ":"), ensure_ascii=False)
    return str(key)


def parse_key_text(text: str, width: int) -> EntityKey:
    """Read :func:`key_text` back for a key of ``width`` columns (1: the text itself); raise
    ``ValueError`` saying why it is not one."""
    if width == 1:
        return text
    try:
        parts = json.loads(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a JSON array of {width} key parts") from None
    if not isinstance(parts, list) or len(parts) != width or not all(map(valid_part, parts)):
        raise ValueError(f"{text!r} is not a JSON array of {width} key parts")
    return tuple(parts)


def key_path(key: EntityKey) -> str:
    """Return ``key`` as URL path segments: each part percent-encoded, ``/`` between."""
    parts = key if isinstance(key, tuple) else (key,)
    return "/".join(quote(str(part), safe="") for part in parts)


def path_segments(raw_path: str) -> list[str]:
    """Split a still percent-encoded path (what follows ``/entities/{kind}/``) into its
    decoded segments (``%2F`` inside a segment stays part of it)."""
    return [unquote(segment, errors="strict") for segment in raw_path.split("/")]


def key_parts_of(row: Mapping[str, Any], columns: Sequence[str]) -> EntityKey:
    """Return the key of ``row``: the one column's value, or the tuple of all of them."""
    if len(columns) == 1:
        return row[columns[0]]  # type: ignore[no-any-return]
    return tuple(row[c] for c in columns)


def _clip(raw: bytes, limit: int = 80) -> str:
    text = raw[:limit].decode("utf-8", "replace")
    return repr(text + ("..." if len(raw) > limit else ""))
