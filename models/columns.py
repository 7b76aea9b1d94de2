"""What a table's columns take (pure): every value is checked, and made exact, before any SQL.

A value the database would refuse (a NUL character in text, a number out of an integer
column's range, a date that is not one, a string too long) is found here, for every event, the
same way on PostgreSQL and SQLite: the event is rejected with a reason naming the column and
dead-lettered, instead of failing its batch in the database (where it is only seen for the write
its batch keeps per key, and costs a rollback). The database's own check stays as the backstop.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID


class ColumnKind(StrEnum):
    """The kinds of column the mirror checks values for."""

    TEXT = "text"
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    DATETIME = "datetime"
    DATE = "date"
    JSON = "json"
    INTERVAL = "interval"
    """SQLAlchemy's ``Interval``: left to the database like OTHER, but MySQL and MariaDB keep it
    as a DATETIME past the epoch (SQLAlchemy's emulation), which their literals must write."""
    UUID = "uuid"
    """SQLAlchemy's ``Uuid``: text in any form ``uuid.UUID`` reads, or a ``uuid.UUID``."""
    OTHER = "other"
    """Anything else (numeric, binary, enums): left to the database."""


@dataclass(frozen=True, slots=True)
class ColumnRule:
    """What one column takes."""

    name: str
    kind: ColumnKind
    required: bool = False
    """NOT NULL without a default: a row that names the column must give it a value."""
    max_length: int | None = None
    """Most characters a text column takes."""
    int_range: tuple[int, int] | None = None
    """Smallest and largest value an integer column takes."""
    as_uuid: bool = False
    """A UUID column taking ``uuid.UUID`` objects (``Uuid()``, the type ``Mapped[uuid.UUID]``
    gets); otherwise it takes the canonical text (``Uuid(as_uuid=False)``)."""


class Invalid(ValueError):
    """A value a column cannot take; the message says why."""


def check_value(rule: ColumnRule, value: Any) -> Any:
    """Return ``value`` as the column takes it, or raise :class:`Invalid` saying why not."""
    if value is None:
        if rule.required:
            raise Invalid(f"column {rule.name!r} is NOT NULL but the event gives no value")
        return None
    kind = rule.kind
    if kind is ColumnKind.TEXT:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise Invalid(f"column {rule.name!r} takes text, got {_kind_of(value)}")
        text = value if isinstance(value, str) else str(value)
        check_text(rule.name, text)
        if rule.max_length is not None and len(text) > rule.max_length:
            raise Invalid(
                f"column {rule.name!r} takes at most {rule.max_length} characters, got {len(text)}"
            )
        return text
    if kind is ColumnKind.INTEGER:
        number = _integer(rule.name, value)
        if rule.int_range is not None and not rule.int_range[0] <= number <= rule.int_range[1]:
            raise Invalid(f"column {rule.name!r} takes integers in {rule.int_range}, got {number}")
        return number
    if kind is ColumnKind.FLOAT:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid(f"column {rule.name!r} takes a number, got {_kind_of(value)}")
        return value
    if kind is ColumnKind.BOOLEAN:
        if not isinstance(value, bool):
            raise Invalid(f"column {rule.name!r} takes true or false, got {_kind_of(value)}")
        return value
    if kind is ColumnKind.DATETIME:
        return _datetime(rule.name, value)
    if kind is ColumnKind.DATE:
        return _date(rule.name, value)
    if kind is ColumnKind.JSON:
        _check_json_text(rule.name, value)
        return value
    if kind is ColumnKind.UUID:
        return _uuid(rule, value)
    return value


def check_text(column: str, text: str) -> None:
    """Raise :class:`Invalid` for text no database column can hold (NUL, lone surrogates)."""
    if "\x00" in text:
        raise Invalid(f"column {column!r} cannot hold a NUL character (0x00)")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise Invalid(f"column {column!r} cannot hold a lone surrogate") from None


def check_row(rules: Iterable[ColumnRule], row: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``row`` with every value as its column takes it, or raise :class:`Invalid`.

    Columns the row does not name are left out (the database default on create, unchanged on
    update); a required column is checked whether named or not.
    """
    out = dict(row)
    for rule in rules:
        if rule.name in out:
            out[rule.name] = check_value(rule, out[rule.name])
        elif rule.required:
            raise Invalid(f"column {rule.name!r} is NOT NULL but the event gives no value")
    return out


def _kind_of(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    return type(value).__name__


def _integer(column: str, value: Any) -> int:
    if isinstance(value, bool):
        raise Invalid(f"column {column!r} takes an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise Invalid(f"column {column!r} takes an integer, got {_kind_of(value)} {value!r:.40}")


def _datetime(column: str, value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise Invalid(f"column {column!r} takes an ISO 8601 date and time, got {value!r:.40}")


def _date(column: str, value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise Invalid(f"column {column!r} takes an ISO 8601 date, got {value!r:.40}")


def _uuid(rule: ColumnRule, value: Any) -> UUID | str:
    """A UUID as its column takes it: a ``uuid.UUID``, or the canonical lower-case text, so
    that one entity has one key whatever form a producer wrote (``{...}``, capitals, no dashes).
    SQLAlchemy's ``Uuid()`` binds only ``uuid.UUID`` objects on SQLite and MariaDB."""
    if isinstance(value, UUID):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = UUID(value)
        except ValueError:
            raise Invalid(f"column {rule.name!r} takes a UUID, got {value!r:.40}") from None
    else:
        raise Invalid(f"column {rule.name!r} takes a UUID, got {_kind_of(value)}")
    return parsed if rule.as_uuid else str(parsed)


def _check_json_text(column: str, value: Any) -> None:
    """PostgreSQL's jsonb refuses NUL characters anywhere in a document."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            check_text(column, item)
        elif isinstance(item, dict):
            for k, v in item.items():
                if isinstance(k, str):
                    check_text(column, k)
                stack.append(v)
        elif isinstance(item, list):
            stack.extend(item)


RowCheck = Callable[[Mapping[str, Any]], Mapping[str, Any]]


def compile_row_check(rules: Iterable[ColumnRule]) -> RowCheck:
    """Return :func:`check_row` for ``rules`` made fast for the common case (see
    :func:`compile_patch_check`)."""
    patch = compile_patch_check(rules)

    def check(row: Mapping[str, Any]) -> Mapping[str, Any]:
        checked, missing = patch(row)
        if missing:
            raise Invalid(f"column {missing[0]!r} is NOT NULL but the event gives no value")
        return checked

    return check


#: Checks the columns a row names; returns the row and the required columns it does not name.
PatchCheck = Callable[[Mapping[str, Any]], tuple[Mapping[str, Any], tuple[str, ...]]]


def compile_patch_check(rules: Iterable[ColumnRule]) -> PatchCheck:
    """Return a check of the columns a row names, and the required ones it leaves out.

    Per record this runs for every column, so a value that already is what its column takes
    (text of the right length without NUL, an integer in range) is passed on after a type
    test; anything else goes through :func:`check_value`, which converts it or says why not.
    The row is copied only when a value changes. A partial update may leave required columns
    out (the row it patches has them); a create may not (:func:`compile_row_check`).
    """
    checks = [(rule.name, _fast(rule), rule) for rule in rules]

    def check(row: Mapping[str, Any]) -> tuple[Mapping[str, Any], tuple[str, ...]]:
        out: dict[str, Any] | None = None
        missing: tuple[str, ...] = ()
        for name, fast, rule in checks:
            if name in row:
                value = row[name]
                if fast(value):
                    continue
                checked = check_value(rule, value)
                if checked is not value:
                    if out is None:
                        out = dict(row)
                    out[name] = checked
            elif rule.required:
                missing += (name,)
        return (row if out is None else out), missing

    return check


def compile_key_check(rule: ColumnRule) -> Callable[[Any], str | None]:
    """Return a function saying why the key column cannot hold a key (None: it can)."""
    fast = _fast(rule)

    def check(key: Any) -> str | None:
        if fast(key):
            return None
        try:
            check_value(rule, key)
        except Invalid as exc:
            return str(exc)
        return None

    return check


def _fast(rule: ColumnRule) -> Callable[[Any], bool]:
    """Return a test passing values the column takes exactly as they are (False: check fully)."""
    if rule.kind is ColumnKind.TEXT:
        limit = rule.max_length if rule.max_length is not None else 1 << 62

        def text(value: Any) -> bool:
            return (
                type(value) is str
                and len(value) <= limit
                and "\x00" not in value
                and value.isascii()
            )

        return text
    if rule.kind is ColumnKind.INTEGER and rule.int_range is not None:
        low, high = rule.int_range

        def integer(value: Any) -> bool:
            return type(value) is int and low <= value <= high

        return integer
    if rule.kind is ColumnKind.FLOAT:
        return lambda value: type(value) is float or type(value) is int
    if rule.kind is ColumnKind.BOOLEAN:
        return lambda value: type(value) is bool
    if rule.kind is ColumnKind.UUID:
        if rule.as_uuid:
            return lambda value: type(value) is UUID
        canonical = _CANONICAL_UUID.fullmatch
        return lambda value: type(value) is str and canonical(value) is not None
    if rule.kind in (ColumnKind.OTHER, ColumnKind.INTERVAL):
        return lambda value: value is not None or not rule.required
    return lambda value: value is None and not rule.required


#: The text ``str(uuid.UUID(...))`` gives.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
