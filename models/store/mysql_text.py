"""Rows as MySQL/MariaDB SQL literals (pure): the text of a multi-row ``VALUES`` list.

A batch's upsert is one ``INSERT ... VALUES (...), (...) ... ON DUPLICATE KEY UPDATE``
whose values are written here column by column, instead of by PyMySQL, which escapes each
parameter through a Python call of its own (see models/store/mysql.py for the measure).
The escaping is PyMySQL's own (``escape_string``, ``escape_item``); it is right for the
connections models/store/mysql.py opens: utf8mb4, and an SQL mode without
``NO_BACKSLASH_ESCAPES``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from pymysql.converters import escape_item, escape_string
from sqlalchemy import Interval

from models.columns import ColumnKind

NULL = "NULL"
#: Characters PyMySQL's escape_string changes; text without any is quoted as it is.
_ESCAPED = ("\\", "'", '"', "\n", "\r", "\x00", "\x1a")


def quoted(text: str) -> str:
    """Return ``text`` as a string literal."""
    return "'" + str(escape_string(text)) + "'"


def _text(value: Any) -> str:
    return NULL if value is None else quoted(value if type(value) is str else str(value))


def _number(value: Any) -> str:
    if value is None:
        return NULL
    if type(value) is float:
        # MySQL has no NaN or infinity: sent as text, the database refuses the row (strict mode).
        return repr(value) if math.isfinite(value) else quoted(repr(value))
    return str(int(value))


def _boolean(value: Any) -> str:
    return NULL if value is None else ("1" if value else "0")


def naive_utc(value: datetime) -> datetime:
    """Return ``value`` in UTC without an offset: DATETIME holds none (MariaDB refuses one),
    so a moment is kept in UTC."""
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def _moment(value: Any) -> str:
    if value is None:
        return NULL
    if isinstance(value, datetime):
        return "'" + naive_utc(value).isoformat(sep=" ") + "'"
    if isinstance(value, date):
        return "'" + value.isoformat() + "'"
    return quoted(str(value))


def _interval(value: Any) -> str:
    # SQLAlchemy's Interval on MySQL and MariaDB: a DATETIME this far past its epoch.
    if isinstance(value, timedelta):
        return _moment(Interval.epoch + value)
    return _other(value)


def _json(value: Any) -> str:
    return NULL if value is None else quoted(orjson.dumps(value).decode())


def _other(value: Any) -> str:
    return str(escape_item(value, "utf8mb4"))  # bytes as _binary'...', Decimal, UUID as text


ENCODERS: dict[ColumnKind, Callable[[Any], str]] = {
    ColumnKind.TEXT: _text,
    ColumnKind.INTEGER: _number,
    ColumnKind.FLOAT: _number,
    ColumnKind.BOOLEAN: _boolean,
    ColumnKind.DATETIME: _moment,
    ColumnKind.DATE: _moment,
    ColumnKind.JSON: _json,
    ColumnKind.INTERVAL: _interval,
}


def literals(kind: ColumnKind | None, values: Sequence[Any]) -> str:
    """Return ``values`` of a column of ``kind`` as a list of SQL literals, ``a,b,...``."""
    return ",".join(_column_text(kind, values))


def values_text(rows: Sequence[Sequence[Any]], kinds: Sequence[ColumnKind | None]) -> str:
    """Return ``rows`` (value tuples in column order) as ``(...),(...)``.

    Column by column, as ``postgres_copy.copy_text`` does: a column of plain text without
    anything to escape, or of integers, is written by C loops (``str.join``, ``map``).
    """
    if not rows:
        raise ValueError("no rows to write")
    columns = [
        _column_text(kind, values)
        for kind, values in zip(kinds, zip(*rows, strict=True), strict=True)
    ]
    return "(" + "),(".join(map(",".join, zip(*columns, strict=True))) + ")"


def _column_text(kind: ColumnKind | None, values: Sequence[Any]) -> Sequence[str]:
    types = set(map(type, values))
    if types == {str}:
        joined = "".join(values)
        if not any(c in joined for c in _ESCAPED):
            return ["'" + v + "'" for v in values]
        return list(map(quoted, values))
    if types == {int} and kind in (None, ColumnKind.INTEGER, ColumnKind.FLOAT, ColumnKind.OTHER):
        return list(map(str, values))
    encode = ENCODERS.get(kind, _other) if kind is not None else _number
    return list(map(encode, values))
