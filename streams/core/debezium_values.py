"""Debezium's JSON encodings of column values, turned into what the mirrored columns take (pure).

Debezium writes many column types not as the column takes them: a ``date`` as days since the
epoch, a ``timestamp`` as milli-, micro- or nanoseconds, a ``numeric`` as the base64 of its
unscaled value, ``bytea`` as base64, ``json`` as a JSON string. With Kafka Connect's schemas on,
each field's schema names its logical type and the value is converted by it
(:func:`schema_converters`); without schemas only the target column says what a value is, and it
is converted where that is unambiguous (:func:`schemaless_converters`): an integer in a
``timestamp`` or ``time`` column may be ms, us or ns, so it is refused with what to configure.

Converters are built once per distinct schema (or per entity, without schemas) and applied per
record by :func:`convert_row`, which touches only the fields that need it.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any


class Target(StrEnum):
    """What a mirrored column takes, as far as decoding Debezium's values needs to know."""

    TEXT = "text"
    INTEGER = "integer"
    FLOAT = "float"
    DECIMAL = "decimal"
    BOOLEAN = "boolean"
    DATE = "date"
    DATETIME = "datetime"
    TIME = "time"
    INTERVAL = "interval"
    BINARY = "binary"
    JSON = "json"
    OTHER = "other"


Convert = Callable[[Any], Any]
"""Turns one non-null value into what its column takes; raises ValueError saying why not."""
Converters = tuple[tuple[str, Convert], ...]
"""The fields of a row that need converting, each with its converter."""

_EPOCH_DATE = date(1970, 1, 1)
_EPOCH = datetime(1970, 1, 1)
_MIDNIGHT = datetime(1970, 1, 1)

SCHEMALESS_HELP = (
    "without schemas it may be ms, us or ns: set the connector's time.precision.mode=isostring, "
    "or turn the JsonConverter's schemas on"
)


def _integer(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {value!r:.40}")
    return value


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {value!r:.40}")
    return value


def epoch_days(value: Any) -> date:
    """``io.debezium.time.Date``, Connect's ``Date``: days since 1970-01-01."""
    return _EPOCH_DATE + timedelta(days=_integer(value, "a date (days since the epoch)"))


def epoch_millis(value: Any) -> datetime:
    """``io.debezium.time.Timestamp``, Connect's ``Timestamp``: ms since the epoch, no zone."""
    return _EPOCH + timedelta(milliseconds=_integer(value, "a timestamp (ms)"))


def epoch_micros(value: Any) -> datetime:
    """``io.debezium.time.MicroTimestamp``: us since the epoch, no zone."""
    return _EPOCH + timedelta(microseconds=_integer(value, "a timestamp (us)"))


def epoch_nanos(value: Any) -> datetime:
    """``io.debezium.time.NanoTimestamp``: ns since the epoch (kept to the us)."""
    return _EPOCH + timedelta(microseconds=_integer(value, "a timestamp (ns)") // 1000)


def _time_of(delta: timedelta) -> time:
    if not timedelta(0) <= delta <= timedelta(days=1):
        raise ValueError(f"a time of day must be within a day, got {delta}")
    return (_MIDNIGHT + delta).time()  # PostgreSQL's 24:00:00 becomes 00:00:00


def day_millis(value: Any) -> time:
    """``io.debezium.time.Time``, Connect's ``Time``: ms past midnight."""
    return _time_of(timedelta(milliseconds=_integer(value, "a time (ms)")))


def day_micros(value: Any) -> time:
    """``io.debezium.time.MicroTime``: us past midnight."""
    return _time_of(timedelta(microseconds=_integer(value, "a time (us)")))


def day_nanos(value: Any) -> time:
    """``io.debezium.time.NanoTime``: ns past midnight (kept to the us)."""
    return _time_of(timedelta(microseconds=_integer(value, "a time (ns)") // 1000))


def iso_datetime(value: Any) -> datetime:
    """``ZonedTimestamp`` (``2024-05-01T10:15:30.123456Z``), ``IsoTimestamp``: ISO 8601 text."""
    return datetime.fromisoformat(_text(value, "a timestamp"))


def iso_date(value: Any) -> date:
    """``io.debezium.time.IsoDate`` (``2024-05-01Z``): an ISO date, its zone dropped."""
    text = _text(value, "a date")
    return date.fromisoformat(text[:10] if len(text) > 10 and text[4] == "-" else text)


def iso_time(value: Any) -> time:
    """``ZonedTime``, ``IsoTime`` (``10:15:30.123456Z``): an ISO time, its zone kept."""
    return time.fromisoformat(_text(value, "a time"))


def base64_bytes(value: Any) -> bytes:
    """Connect's ``bytes`` as the JsonConverter writes them: base64 text."""
    return base64.b64decode(_text(value, "bytes (base64)"), validate=True)


#: The most significant digits a decimal written as a JSON number keeps through a binary float
#: (IEEE 754 double: any 15 come back; 16 or 17 may not be the ones written).
FLOAT_DIGITS = 15


def _unscaled(raw: Any, scale: int) -> Decimal:
    """A Connect ``Decimal``: the big-endian two's complement of the unscaled value, in base64
    (``decimal.format=BASE64``, the JsonConverter's default) or a JSON number (``NUMERIC``,
    which the JSON parser has read as a binary float: refused when it may have lost digits)."""
    if isinstance(raw, str):
        unscaled = int.from_bytes(base64_bytes(raw), "big", signed=True)
        # Built from its digits and exponent, which is exact: arithmetic such as
        # Decimal(unscaled).scaleb(-scale) rounds to the context's 28 digits, and a numeric(38, 10)
        # would lose its last ones without a word.
        digits = tuple(int(d) for d in str(abs(unscaled)))
        return Decimal((1 if unscaled < 0 else 0, digits, -scale))
    if isinstance(raw, int) and not isinstance(raw, bool):
        return Decimal(raw)
    if isinstance(raw, float):
        value = Decimal(repr(raw))
        if len(value.normalize().as_tuple().digits) > FLOAT_DIGITS:  # 1.50 has 2 digits
            raise ValueError(
                f"{raw!r} came as a JSON number, read as a binary float, which keeps "
                f"{FLOAT_DIGITS} significant digits for certain: keep the JsonConverter's "
                "decimal.format=BASE64 (its default), which the mirror reads exactly"
            )
        return value
    raise ValueError(f"a decimal must be base64 text or a number, got {raw!r:.40}")


def connect_decimal(scale: int) -> Convert:
    """Return the converter of ``org.apache.kafka.connect.data.Decimal`` with ``scale``."""

    def convert(value: Any) -> Decimal:
        return _unscaled(value, scale)

    return convert


def variable_scale_decimal(value: Any) -> Decimal:
    """``io.debezium.data.VariableScaleDecimal``: ``{"scale": n, "value": base64}``."""
    if not isinstance(value, dict):
        raise ValueError(f"a variable-scale decimal must be an object, got {value!r:.40}")
    return _unscaled(value.get("value"), _integer(value.get("scale"), "its scale"))


def micro_duration(value: Any) -> timedelta:
    """``io.debezium.time.MicroDuration`` (``interval.handling.mode=numeric``, the default):
    microseconds, a month counted as Debezium counts it (365.25 / 12 days)."""
    return timedelta(microseconds=_integer(value, "an interval (us)"))


_ISO_DURATION = re.compile(
    r"P(?:(?P<Y>-?\d+)Y)?(?:(?P<M>-?\d+)M)?(?:(?P<D>-?\d+)D)?"
    r"(?:T(?:(?P<h>-?\d+)H)?(?:(?P<m>-?\d+)M)?(?:(?P<s>-?\d+(?:\.\d+)?)S)?)?"
)


def iso_duration(value: Any) -> timedelta:
    """``io.debezium.time.Interval`` (``interval.handling.mode=string``): ISO 8601,
    ``P1Y2M3DT4H5M6.78S``. Years and months have no exact length: refused unless zero."""
    text = _text(value, "an interval")
    match = _ISO_DURATION.fullmatch(text)
    if match is None or text in ("P", "PT") or text.endswith("T"):
        raise ValueError(f"{text!r:.40} is not an ISO 8601 duration")
    parts = {name: part for name, part in match.groupdict().items() if part is not None}
    if int(parts.get("Y", 0)) or int(parts.get("M", 0)):
        raise ValueError(
            f"{text!r:.40} counts years or months, which have no exact length: set the "
            "connector's interval.handling.mode=numeric (a month as 365.25 / 12 days), or "
            "mirror it into a text column"
        )
    return timedelta(
        days=int(parts.get("D", 0)),
        hours=int(parts.get("h", 0)),
        minutes=int(parts.get("m", 0)),
        microseconds=int(Decimal(parts.get("s", "0")).scaleb(6)),  # Debezium writes whole us
    )


def json_text(value: Any) -> Any:
    """``io.debezium.data.Json``: the document as JSON text."""
    return json.loads(_text(value, "a JSON document"))


def decimal_text(value: Any) -> Decimal:
    """A decimal without a schema: text (``decimal.handling.mode=string``) or a number."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Decimal(str(value))
    text = _text(value, "a decimal")
    try:
        return Decimal(text)
    except InvalidOperation:
        raise ValueError(
            f"{text!r:.40} is not a decimal (decimal.handling.mode=precise without schemas "
            "writes base64 bytes with no scale: set decimal.handling.mode=string, or turn "
            "schemas on)"
        ) from None


def _ambiguous(kind: str) -> Convert:
    def refuse(value: Any) -> Any:
        if isinstance(value, str):
            return iso_time(value) if kind == "time" else iso_datetime(value)
        raise ValueError(f"an integer {kind} ({value!r:.40}) is ambiguous: {SCHEMALESS_HELP}")

    return refuse


#: Logical type name -> converter (parameters aside: ``Decimal`` needs its scale).
_LOGICAL: Mapping[str, Convert] = {
    "io.debezium.time.Date": epoch_days,
    "org.apache.kafka.connect.data.Date": epoch_days,
    "io.debezium.time.Timestamp": epoch_millis,
    "org.apache.kafka.connect.data.Timestamp": epoch_millis,
    "io.debezium.time.MicroTimestamp": epoch_micros,
    "io.debezium.time.NanoTimestamp": epoch_nanos,
    "io.debezium.time.ZonedTimestamp": iso_datetime,
    "io.debezium.time.IsoTimestamp": iso_datetime,
    "io.debezium.time.IsoDate": iso_date,
    "io.debezium.time.Time": day_millis,
    "org.apache.kafka.connect.data.Time": day_millis,
    "io.debezium.time.MicroTime": day_micros,
    "io.debezium.time.NanoTime": day_nanos,
    "io.debezium.time.ZonedTime": iso_time,
    "io.debezium.time.IsoTime": iso_time,
    "io.debezium.data.VariableScaleDecimal": variable_scale_decimal,
    "io.debezium.time.MicroDuration": micro_duration,
    "io.debezium.time.Interval": iso_duration,
}

#: Targets that take a value as Debezium wrote it (a ZonedTimestamp kept as text, a Date kept
#: as its day number): converting would lose what the column was declared to keep.
_AS_WRITTEN = frozenset({Target.TEXT, Target.INTEGER})


def _to_float(convert: Convert) -> Convert:
    def as_float(value: Any) -> float:
        return float(convert(value))

    return as_float


def field_converter(field_schema: Mapping[str, Any], target: Target) -> Convert | None:
    """Return the converter of one field, from its Connect schema and its column's target
    (None: the value is what the column takes)."""
    if target in _AS_WRITTEN:
        return None
    name = field_schema.get("name")
    convert: Convert | None
    if name == "org.apache.kafka.connect.data.Decimal":
        parameters = field_schema.get("parameters") or {}
        convert = connect_decimal(int(parameters.get("scale", 0)))
    elif name == "io.debezium.data.Json":
        convert = json_text if target is Target.JSON else None
    elif isinstance(name, str) and name in _LOGICAL:
        convert = _LOGICAL[name]
    elif field_schema.get("type") == "bytes" and name is None:
        convert = base64_bytes
    else:
        convert = None
    if convert is not None and target is Target.FLOAT:
        return _to_float(convert)
    return convert


def schema_converters(
    fields: object, targets: Mapping[str, Target] | None, skip: frozenset[str] = frozenset()
) -> Converters:
    """Return the converters of a row struct's ``fields`` (its Connect schema's field list),
    for the fields ``targets`` maps (every field when None)."""
    if not isinstance(fields, list):
        raise ValueError("the row's schema has no field list")
    out: list[tuple[str, Convert]] = []
    for field_schema in fields:
        if not isinstance(field_schema, dict):
            raise ValueError("a field of the row's schema is not an object")
        name = field_schema.get("field")
        if not isinstance(name, str) or name in skip:
            continue
        if targets is None:
            target = Target.OTHER
        elif name in targets:
            target = targets[name]
        else:
            continue
        convert = field_converter(field_schema, target)
        if convert is not None:
            out.append((name, convert))
    return tuple(out)


#: Without schemas: target -> converter, where the column's kind tells what the value is.
_SCHEMALESS: Mapping[Target, Convert] = {
    Target.DATE: lambda value: epoch_days(value) if isinstance(value, int) else iso_date(value),
    Target.DATETIME: _ambiguous("timestamp"),
    Target.TIME: _ambiguous("time"),
    Target.DECIMAL: decimal_text,
    Target.INTERVAL: lambda value: (
        micro_duration(value) if isinstance(value, int) else iso_duration(value)
    ),
    Target.BINARY: base64_bytes,
    Target.JSON: lambda value: json_text(value) if isinstance(value, str) else value,
}


def schemaless_converters(targets: Mapping[str, Target] | None) -> Converters:
    """Return the converters of rows without schemas, by their columns' targets."""
    if targets is None:
        return ()
    return tuple(
        (name, _SCHEMALESS[target]) for name, target in targets.items() if target in _SCHEMALESS
    )


def convert_row(converters: Converters, row: dict[str, Any]) -> str | None:
    """Convert ``row``'s values in place; return why one cannot be converted, or None."""
    for name, convert in converters:
        value = row.get(name)
        if value is not None:
            try:
                row[name] = convert(value)
            except (ValueError, TypeError, ArithmeticError) as exc:
                return f"field {name!r}: {exc}"
    return None
