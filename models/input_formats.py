"""A model's input format, from its declaration (``__input_format__``, ``__version_from__``).

The registry asks here which format object decodes an entity's records, the field map a
Debezium-fed model gets when it declares none (every column from the same-named field: Debezium
writes column names), and the version field a declared source position becomes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Integer,
    Interval,
    LargeBinary,
    Numeric,
    String,
    Table,
    Time,
)

from streams.core.changetype_json import CHANGE_TYPE_JSON
from streams.core.debezium import FORMATS, LSN_FIELD
from streams.core.debezium_values import Target
from streams.core.errors import RegistryError
from streams.core.formats import InputFormat

#: Format names a model may declare.
FORMAT_NAMES = (CHANGE_TYPE_JSON.name, *FORMATS)
#: Source positions ``__version_from__`` may name, and the event field each becomes.
VERSION_SOURCES = {"source.lsn": LSN_FIELD}


@dataclass(frozen=True, slots=True)
class DeclaredFormat:
    """What a model's format declaration amounts to."""

    input_format: InputFormat | None
    """The format object (None: the default, changeType JSON)."""
    fields: Mapping[str, str]
    """The field map to use: the model's own, or every column by its name (Debezium)."""
    version_field: str | None
    """The event field holding the version (the model's ``__version_field__``, or the field
    the format puts the source position in)."""


def declared_format(
    model: type[Any], table: Table, ignored: frozenset[str] = frozenset()
) -> DeclaredFormat:
    """Read ``model``'s format declaration; raise :class:`RegistryError` in one line when it
    names what does not exist (``ignored``: columns no field maps, e.g. bookkeeping ones)."""
    name = model.__name__
    declared = getattr(model, "__input_format__", None)
    fields: Mapping[str, str] = model.__event_fields__
    version_field: str | None = model.__version_field__
    version_from = getattr(model, "__version_from__", None)
    if declared is None or declared == CHANGE_TYPE_JSON.name:
        if version_from is not None:
            raise RegistryError(
                f"{name}.__version_from__ needs a Debezium __input_format__ ('debezium' or "
                "'debezium-flat'); use __version_field__ for a field of the event"
            )
        return DeclaredFormat(None, fields, version_field)
    if declared not in FORMATS:
        raise RegistryError(
            f"{name}.__input_format__ is {declared!r}, not one of "
            f"{', '.join(repr(n) for n in FORMAT_NAMES)}"
        )
    if version_from is not None:
        if version_from not in VERSION_SOURCES:
            raise RegistryError(
                f"{name}.__version_from__ is {version_from!r}, not one of "
                f"{', '.join(repr(n) for n in VERSION_SOURCES)}"
            )
        if version_field is not None:
            raise RegistryError(
                f"{name} declares both __version_field__ and __version_from__: keep one"
            )
        version_field = VERSION_SOURCES[version_from]
    if not fields:
        fields = {c.key: c.key for c in table.columns if c.key not in ignored}
    targets = {field: target_of(table.columns[column]) for column, field in fields.items()}
    hook = getattr(model.from_kafka_event, "__func__", model.from_kafka_event)
    custom = not getattr(hook, "field_map_mapping", False)
    input_format = FORMATS[declared](
        None if custom else targets,
        version_from_lsn=version_from is not None,
        partial_updates=model.__partial_updates__ is True,
    )
    return DeclaredFormat(input_format, fields, version_field)


#: Column types and what they take, the first that matches wins (``Float`` is a ``Numeric``).
_TARGETS: tuple[tuple[type[Any], Target], ...] = (
    (Interval, Target.INTERVAL),
    (JSON, Target.JSON),
    (String, Target.TEXT),
    (Boolean, Target.BOOLEAN),
    (Integer, Target.INTEGER),
    (Float, Target.FLOAT),
    (Numeric, Target.DECIMAL),
    (DateTime, Target.DATETIME),
    (Date, Target.DATE),
    (Time, Target.TIME),
    (LargeBinary, Target.BINARY),
)


def target_of(column: Column[Any]) -> Target:
    """Say what ``column`` takes, as Debezium's values are converted for it."""
    for kind, target in _TARGETS:
        if isinstance(column.type, kind):
            return target
    return Target.OTHER
