"""The ``changeType`` JSON format of the Lambda pattern, every entity's format by default.

The value is a UTF-8 JSON object; its optional ``changeType`` is ``CREATED``, ``UPDATED`` or
``DELETED`` (missing means ``UPDATED``; anything else is rejected), and the whole object is what
the entity's mapping reads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from streams.core.decisions import ChangeType, Rejection, RejectReason
from streams.core.formats import Change
from streams.core.records import JsonLoads, Record

CHANGE_TYPE_FIELD = "changeType"


def decode_value(record: Record, loads: JsonLoads = json.loads) -> dict[str, Any] | Rejection:
    """Decode a record value into a JSON object, or say why it is not one."""
    raw = record.value
    if raw is None:
        return Rejection(RejectReason.NOT_AN_OBJECT, "value is null", record)
    try:
        event = loads(raw)  # the bytes as they are: orjson checks the UTF-8 as it parses
    except ValueError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            return Rejection(
                RejectReason.BAD_ENCODING, f"value is not UTF-8: {bad}", record, type(bad).__name__
            )
        return Rejection(
            RejectReason.BAD_JSON, f"value is not JSON: {exc}", record, type(exc).__name__
        )
    if not isinstance(event, dict):
        return Rejection(
            RejectReason.NOT_AN_OBJECT,
            f"value is a JSON {type(event).__name__}, not an object",
            record,
        )
    return event


_CHANGE_TYPES = {member.value: member for member in ChangeType}


def parse_change_type(event: Mapping[str, Any]) -> ChangeType | str:
    """Return the event's change type (missing means UPDATED), or the unknown raw value."""
    raw = event.get(CHANGE_TYPE_FIELD)
    if raw is None:
        return ChangeType.UPDATED
    if isinstance(raw, str):
        known = _CHANGE_TYPES.get(raw)
        if known is not None:
            return known
    return repr(raw)


class ChangeTypeJson:
    """The ``changeType`` JSON format (:mod:`streams.core.formats`'s interface)."""

    name = "changetype-json"

    def decode(self, record: Record, loads: JsonLoads = json.loads) -> Change | Rejection:
        """Return the change the record's JSON object says, or why it says none."""
        decoded = decode_value(record, loads)
        if isinstance(decoded, Rejection):
            return decoded
        change = parse_change_type(decoded)
        if not isinstance(change, ChangeType):
            return Rejection(
                RejectReason.UNKNOWN_CHANGE_TYPE,
                f"changeType {change} is not one of CREATED, UPDATED, DELETED",
                record,
            )
        return change, decoded


CHANGE_TYPE_JSON = ChangeTypeJson()
"""The format of every entity that declares none."""
