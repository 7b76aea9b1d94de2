"""Debezium's encodings of column values (streams/core/debezium_values.py): each logical type, by
its Connect schema and, without one, by the target column."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime, time, timedelta
from decimal import Context, Decimal
from typing import Any

import pytest

from streams.core.debezium_values import (
    Target,
    convert_row,
    field_converter,
    schema_converters,
    schemaless_converters,
)


def unscaled(value: int) -> str:
    """Connect's Decimal bytes: the big-endian two's complement of the unscaled value."""
    size = max(1, (value.bit_length() + 8) // 8)
    return base64.b64encode(value.to_bytes(size, "big", signed=True)).decode()


def field(name: str | None, kind: str = "int64", **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": kind, "optional": True, "field": "v", **extra}
    if name is not None:
        schema["name"] = name
    return schema


def by_schema(schema: dict[str, Any], value: Any, target: Target = Target.OTHER) -> Any:
    convert = field_converter(schema, target)
    assert convert is not None, schema
    return convert(value)


DECIMAL = "org.apache.kafka.connect.data.Decimal"


@pytest.mark.parametrize(
    ("schema", "value", "expected"),
    [
        (field("io.debezium.time.Date", "int32"), 19000, date(2022, 1, 8)),
        (field("org.apache.kafka.connect.data.Date", "int32"), -1, date(1969, 12, 31)),
        (
            field("io.debezium.time.Timestamp"),
            1_700_000_000_123,
            datetime(2023, 11, 14, 22, 13, 20, 123000),
        ),
        (field("org.apache.kafka.connect.data.Timestamp"), 0, datetime(1970, 1, 1)),
        (
            field("io.debezium.time.MicroTimestamp"),
            1_700_000_000_123_456,
            datetime(2023, 11, 14, 22, 13, 20, 123456),
        ),
        (
            field("io.debezium.time.NanoTimestamp"),
            1_700_000_000_123_456_789,
            datetime(2023, 11, 14, 22, 13, 20, 123456),
        ),
        (
            field("io.debezium.time.ZonedTimestamp", "string"),
            "2024-05-01T10:15:30.123456Z",
            datetime(2024, 5, 1, 10, 15, 30, 123456, tzinfo=UTC),
        ),
        (
            field("io.debezium.time.IsoTimestamp", "string"),
            "2024-05-01T10:15:30Z",
            datetime(2024, 5, 1, 10, 15, 30, tzinfo=UTC),
        ),
        (field("io.debezium.time.IsoDate", "string"), "2024-05-01Z", date(2024, 5, 1)),
        (field("io.debezium.time.Time", "int32"), 34_200_000, time(9, 30)),
        (field("org.apache.kafka.connect.data.Time", "int32"), 1, time(0, 0, 0, 1000)),
        (field("io.debezium.time.MicroTime"), 34_200_000_001, time(9, 30, 0, 1)),
        (field("io.debezium.time.NanoTime"), 34_200_000_001_000, time(9, 30, 0, 1)),
        (field("io.debezium.time.MicroTime"), 86_400_000_000, time(0, 0)),  # PostgreSQL's 24:00
        (
            field("io.debezium.time.ZonedTime", "string"),
            "09:30:00Z",
            time(9, 30, tzinfo=UTC),
        ),
        (
            field("io.debezium.time.IsoTime", "string"),
            "09:30:00.5Z",
            time(9, 30, 0, 500000, tzinfo=UTC),
        ),
        (field(DECIMAL, "bytes", parameters={"scale": "2"}), "AeJA", Decimal("1234.56")),
        (field(DECIMAL, "bytes", parameters={"scale": "2"}), "/w==", Decimal("-0.01")),
        (
            field(DECIMAL, "bytes", parameters={"scale": "0"}),
            unscaled(-(10**30)),
            Decimal(-(10**30)),
        ),
        (
            field(DECIMAL, "bytes", parameters={"scale": "3"}),
            12.5,
            Decimal("12.5"),
        ),  # decimal.format=NUMERIC
        (
            field("io.debezium.data.VariableScaleDecimal", "struct"),
            {"scale": 4, "value": unscaled(123456789)},
            Decimal("12345.6789"),
        ),
        (field(None, "bytes"), "AQID", b"\x01\x02\x03"),
    ],
)
def test_each_logical_type_is_converted_by_its_schema(
    schema: dict[str, Any], value: Any, expected: Any
) -> None:
    assert by_schema(schema, value) == expected


@pytest.mark.parametrize(
    "text",
    [
        "12345678901234567890.0123456789",  # numeric(30, 10): 30 digits
        "-1234567890123456789012345678.9012345678",  # numeric(38, 10)
        "0.00000000000000000000000000000000000001",
        "98765432109876543210987654321098765432109876543210",  # unconstrained numeric
    ],
)
def test_decimals_keep_every_digit_beyond_the_default_contexts_28(text: str) -> None:
    # Decimal arithmetic rounds to 28 digits: a numeric(38, 10) read by scaling its unscaled
    # value lost its last digits without a word.
    exact = Decimal(text)
    exponent = exact.as_tuple().exponent
    assert isinstance(exponent, int)
    raw = unscaled(int(exact.scaleb(-exponent, Context(prec=100))))
    scale = -exponent
    converted = by_schema(field(DECIMAL, "bytes", parameters={"scale": str(scale)}), raw)
    assert str(converted) == str(exact)
    variable = field("io.debezium.data.VariableScaleDecimal", "struct")
    assert str(by_schema(variable, {"scale": scale, "value": raw})) == str(exact)


@pytest.mark.parametrize(
    ("schema", "value", "expected"),
    [
        (field("io.debezium.time.MicroDuration"), 2_592_000_000_000, timedelta(days=30)),
        (field("io.debezium.time.MicroDuration"), -1, timedelta(microseconds=-1)),
        (field("io.debezium.time.Interval", "string"), "P0Y0M3DT4H5M6.78S", timedelta(3, 14706.78)),
        (field("io.debezium.time.Interval", "string"), "P0Y0M-1DT-2H0M0S", -timedelta(hours=26)),
        (field("io.debezium.time.Interval", "string"), "PT0S", timedelta(0)),
    ],
)
def test_intervals_become_durations(schema: dict[str, Any], value: Any, expected: Any) -> None:
    assert by_schema(schema, value, Target.INTERVAL) == expected


def test_an_interval_of_months_has_no_exact_length_and_is_refused_saying_what_to_set() -> None:
    with pytest.raises(ValueError, match=r"interval\.handling\.mode=numeric"):
        by_schema(field("io.debezium.time.Interval", "string"), "P0Y1M0DT0H0M0S")


@pytest.mark.parametrize("number", [12.5, 1234567890123.45, 0.1, -7.0, 123456789012345.0])
def test_a_numeric_format_decimal_within_a_floats_15_digits_is_taken(number: float) -> None:
    schema = field(DECIMAL, "bytes", parameters={"scale": "2"})
    assert by_schema(schema, number) == Decimal(repr(number))


@pytest.mark.parametrize("number", [1234567890123456.7, 0.30000000000000004, 1e16 + 2.0])
def test_a_numeric_format_decimal_that_may_have_lost_digits_is_refused(number: float) -> None:
    # decimal.format=NUMERIC writes the exact digits; a JSON parser reads a binary float, which
    # keeps 15 for certain: 1234567890123456.7 comes back as 1234567890123456.8.
    schema = field(DECIMAL, "bytes", parameters={"scale": "2"})
    with pytest.raises(ValueError, match=r"decimal\.format=BASE64"):
        by_schema(schema, number)


def test_json_is_parsed_for_a_json_column_and_kept_as_text_for_a_text_column() -> None:
    schema = field("io.debezium.data.Json", "string")
    assert by_schema(schema, '{"a": [1]}', Target.JSON) == {"a": [1]}
    assert field_converter(schema, Target.TEXT) is None
    assert field_converter(schema, Target.OTHER) is None


def test_text_and_integer_columns_take_the_value_as_written() -> None:
    assert field_converter(field("io.debezium.time.ZonedTimestamp", "string"), Target.TEXT) is None
    assert field_converter(field("io.debezium.time.Date", "int32"), Target.INTEGER) is None


def test_a_decimal_for_a_float_column_becomes_a_float() -> None:
    assert (
        by_schema(field(DECIMAL, "bytes", parameters={"scale": "2"}), "AeJA", Target.FLOAT)
        == 1234.56
    )


def test_plain_fields_need_no_converter() -> None:
    assert field_converter(field(None, "string"), Target.OTHER) is None
    assert field_converter(field(None, "int64"), Target.DATETIME) is None


def test_schema_converters_cover_only_the_mapped_fields_unless_asked_for_all() -> None:
    fields = [
        {**field("io.debezium.time.Date", "int32"), "field": "born"},
        {**field("io.debezium.time.Date", "int32"), "field": "unmapped"},
        {"type": "string", "field": "name"},
    ]
    assert [
        n for n, _ in schema_converters(fields, {"born": Target.DATE, "name": Target.TEXT})
    ] == ["born"]
    assert [n for n, _ in schema_converters(fields, None)] == ["born", "unmapped"]
    with pytest.raises(ValueError, match="field list"):
        schema_converters("nope", None)


@pytest.mark.parametrize(
    ("target", "value", "expected"),
    [
        (Target.DATE, 19000, date(2022, 1, 8)),
        (Target.DATE, "2022-01-08Z", date(2022, 1, 8)),
        (Target.DATE, "2022-01-08", date(2022, 1, 8)),
        (
            Target.DATETIME,
            "2024-05-01T10:15:30.123456Z",
            datetime(2024, 5, 1, 10, 15, 30, 123456, tzinfo=UTC),
        ),
        (Target.TIME, "09:30:00Z", time(9, 30, tzinfo=UTC)),
        (Target.DECIMAL, "1234.56", Decimal("1234.56")),
        (Target.DECIMAL, 12.5, Decimal("12.5")),
        (Target.BINARY, "AQID", b"\x01\x02\x03"),
        (Target.JSON, '{"a": 1}', {"a": 1}),
        (Target.JSON, {"a": 1}, {"a": 1}),
        (Target.INTERVAL, 90_061_000_001, timedelta(days=1, seconds=3661, microseconds=1)),
        (Target.INTERVAL, "P0Y0M1DT1H1M1.000001S", timedelta(days=1, seconds=3661, microseconds=1)),
    ],
)
def test_without_a_schema_the_column_says_what_a_value_is(
    target: Target, value: Any, expected: Any
) -> None:
    row = {"v": value}
    assert convert_row(schemaless_converters({"v": target}), row) is None
    assert row["v"] == expected


@pytest.mark.parametrize(
    ("target", "value", "says"),
    [
        (Target.DATETIME, 1_700_000_000_000, "ms, us or ns"),
        (Target.TIME, 34_200_000, "ambiguous"),
        (Target.DECIMAL, "AeJA", "decimal.handling.mode=string"),
        (Target.DATE, "soon", "'v'"),
        (Target.BINARY, "***", "'v'"),
        (Target.INTERVAL, "P1Y", "interval.handling.mode=numeric"),
        (Target.INTERVAL, "1 day", "not an ISO 8601 duration"),
        (Target.INTERVAL, 1.5, "must be a string"),
    ],
)
def test_without_a_schema_what_cannot_be_told_is_refused_saying_why(
    target: Target, value: Any, says: str
) -> None:
    problem = convert_row(schemaless_converters({"v": target}), {"v": value})
    assert problem is not None and says in problem, problem


def test_text_integer_and_other_columns_need_no_converter_without_a_schema() -> None:
    assert schemaless_converters({"a": Target.TEXT, "b": Target.INTEGER, "c": Target.OTHER}) == ()
    assert schemaless_converters(None) == ()


def test_nulls_are_left_alone() -> None:
    row = {"v": None}
    assert convert_row(schemaless_converters({"v": Target.DATE}), row) is None and row == {
        "v": None
    }


@pytest.mark.parametrize(
    ("schema", "value"),
    [
        (field("io.debezium.time.Date", "int32"), "2024-01-01"),
        (field("io.debezium.time.MicroTime"), -1),
        (field("io.debezium.time.Date", "int32"), 10**12),
        (field(DECIMAL, "bytes", parameters={"scale": "2"}), True),
        (field("io.debezium.data.VariableScaleDecimal", "struct"), "AeJA"),
    ],
)
def test_a_value_its_type_cannot_read_is_a_reason_not_an_exception(
    schema: dict[str, Any], value: Any
) -> None:
    convert = field_converter(schema, Target.OTHER)
    assert convert is not None
    problem = convert_row((("v", convert),), {"v": value})
    assert problem is not None and problem.startswith("field 'v': ")
