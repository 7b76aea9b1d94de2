"""The registry that ties each declared model to the topic it mirrors.

Everything else (agent, SQL table, cached table, HTTP routes) is derived from the
:class:`EntitySpec` entries here, so a user's whole declaration is one model class.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Integer,
    Interval,
    SmallInteger,
    String,
    Table,
    Uuid,
    inspect,
)

from models.columns import (
    ColumnKind,
    ColumnRule,
    Invalid,
    PatchCheck,
    RowCheck,
    check_row,
    check_value,
    compile_key_check,
    compile_patch_check,
    compile_row_check,
)
from models.input_formats import declared_format
from streams.core.errors import RegistryError
from streams.core.formats import InputFormat

RowMapper = Callable[[dict[str, Any]], Mapping[str, Any]]
#: A model's ``on_batch(conn, applied, deleted)``: the rows a batch wrote (by key), the keys
#: it deleted, called in the batch's transaction on its SQLAlchemy connection.
BatchHook = Callable[[Any, Mapping[Any, Mapping[str, Any]], list[Any]], None]

#: Bookkeeping columns every mirrored table gets: the version of the state the row holds.
VERSION_COLUMNS = ("mirror_version", "mirror_partition", "mirror_offset")

#: Record fields the core injects into each event (``streams.core.routing``): a field map naming
#: one of them reads them.
RECORD_FIELDS = ("kafkaRecordTimestamp", "kafkaTopic", "kafkaPartition", "kafkaOffset")


@dataclass(frozen=True, slots=True)
class EntitySpec:
    """One declared entity: its model, topic, table and how events map to rows."""

    model: type[Any]
    """The mapped SQLAlchemy class."""
    kind: str
    """Lower-case name used in URLs and metrics, e.g. ``planet``."""
    topic: str
    """Entity-changed topic it mirrors (before any configured prefix)."""
    table: Table
    """The SQL table rows go to."""
    key_column: str
    """The first primary-key column: the one holding the entity key, unless the key is
    composite (:attr:`key_columns`)."""
    key_field: str | None
    """Event field holding the key, when the field map names it (None for a composite key:
    :attr:`key_fields`)."""
    update_columns: tuple[str, ...]
    """Columns an update overwrites."""
    cached: bool
    """Whether the latest state is also kept in a Faust table."""
    version_field: str | None
    """Event field carrying the entity's version, or None to use the record position."""
    tombstone_table: Table
    """Keys of deleted entities with the version of their delete (no resurrection)."""
    repartition: bool
    """Whether events go through a repartition topic keyed by entity key."""
    mapper: RowMapper
    """Maps an event to column values (``from_kafka_event`` underneath)."""

    rules: tuple[ColumnRule, ...] = ()
    """What each column but the key takes (``models.columns``)."""
    key_rule: ColumnRule | None = None
    """What the key column takes."""
    column_kinds: Mapping[str, ColumnKind] = field(default_factory=dict)
    """The kind of every column, bookkeeping ones included (for the COPY encoding)."""
    reads_record_fields: bool = True
    """Whether the mapping reads the record fields injected into events (kafkaTopic ...)."""
    row_check: RowCheck | None = None
    key_check: Callable[[Any], str | None] | None = None
    batch_hook: BatchHook | None = None
    """The model's ``on_batch(conn, applied, deleted)``, when it defines one."""
    soft_delete: str | None = None
    """The model's ``__soft_delete__`` column: a delete sets it instead of removing the row."""
    soft_delete_kind: ColumnKind | None = None
    """Whether that column holds a timestamp (DATETIME) or milliseconds (INTEGER)."""
    partial_updates: bool = False
    """The model's ``__partial_updates__``: an update changes only the columns it carries."""
    patch_mapper: RowMapper | None = None
    """Maps an update to the columns it carries (with partial updates)."""
    patch_check: PatchCheck | None = None
    input_format: InputFormat | None = None
    """The format of the entity's records (``__input_format__``); None: changeType JSON."""
    key_columns: tuple[str, ...] = ()
    """The primary-key columns in the table's order (set by :func:`build_spec`; one column
    unless the key is composite, whose entity key is then the tuple of their values)."""
    key_fields: tuple[str | None, ...] = ()
    """Event field holding each key column, when the field map names it."""
    composite: bool = False
    """Whether the key has several columns (keys are tuples, ``streams.core.keys``)."""
    key_checks: tuple[Callable[[Any], str | None], ...] = ()
    """The check of each key column (a composite key's parts)."""
    key_rules: tuple[ColumnRule, ...] = ()
    """What each key column takes."""
    single_key_type: type | None = None
    """The type a single key already is when it needs no converting (``str`` for text,
    ``int`` for an integer column; None: always converted, a UUID's text form). Kept here,
    not looked up per record: routing asks it of every record."""

    def key_of(self, row: Any) -> Any:
        """Return the entity key of ``row``: its key column's value, or the tuple of them."""
        if not self.composite:
            return row[self.key_column]
        return tuple(row[c] for c in self.key_columns)

    @property
    def canonical_single_keys(self) -> bool:
        """Whether routing converts single keys by :meth:`canonical_key`: always, for a single
        key (every key column is text, integer or UUID; :func:`build_spec` refuses others)."""
        return not self.composite

    def canonical_key(self, key: Any) -> Any:
        """Return a key (that :meth:`check_key` passed) with each part as its column holds it:
        ``"2"`` for an integer column is ``2``, ``7`` for a text one ``"7"``, a UUID its
        lower-case text. So the key of an event equals the key of a tombstone (whose record
        key is text) and the key read back from the table, whatever the producer sent: one
        entity is one key in a batch's fold and in the cache. A key already of its column's
        type is returned as it is."""
        if not self.composite:
            if type(key) is self.single_key_type:
                return key
            return check_value(self.key_rules[0], key)
        return tuple(
            check_value(rule, part) for rule, part in zip(self.key_rules, key, strict=True)
        )

    def row_from_event(self, event: dict[str, Any]) -> Mapping[str, Any]:
        """Map an event to a row of column values."""
        return self.mapper(event)

    def patch_from_event(self, event: dict[str, Any]) -> Mapping[str, Any]:
        """Map an update to the columns it carries (fields absent from it are left out)."""
        assert self.patch_mapper is not None
        return self.patch_mapper(event)

    def prepare_patch(self, row: Mapping[str, Any]) -> tuple[Mapping[str, Any], tuple[str, ...]]:
        """Check the columns a partial update names; return the row as the table takes it and
        the NOT NULL columns it leaves out (or raise ``Invalid`` saying why it would not do)."""
        assert self.patch_check is not None
        checked, missing = self.patch_check(row)
        if self.soft_delete is not None:
            checked = {**checked, self.soft_delete: None}
        return checked, missing

    def prepare_row(self, row: Mapping[str, Any]) -> Mapping[str, Any]:
        """Return ``row`` as the table takes it, or raise ``Invalid`` saying why it would not.

        Deterministic, unlike a database refusal, which is only seen for the write a batch
        keeps per key. The database's own check stays as the backstop (``store_refused``).
        """
        checked = self.row_check(row) if self.row_check is not None else check_row(self.rules, row)
        if self.soft_delete is not None:
            # The mirror owns the column: any create or update of the entity undeletes it.
            checked = {**checked, self.soft_delete: None}
        return checked

    def check_key(self, key: Any) -> str | None:
        """Say why the key column (each of a composite key's columns) cannot hold ``key``,
        or None."""
        if self.composite:
            if not isinstance(key, tuple) or len(key) != len(self.key_columns):
                return f"a {self.kind} key has {len(self.key_columns)} parts"
            for column, check, part in zip(self.key_columns, self.key_checks, key, strict=True):
                problem = check(part)
                if problem is not None:
                    return f"key column {column!r}: {problem}"
            return None
        if self.key_check is not None:
            return self.key_check(key)
        if self.key_rule is None:
            return None
        try:
            check_value(self.key_rule, key)
        except Invalid as exc:
            return str(exc)
        return None


def _instance_to_row(instance: Any) -> dict[str, Any]:
    """Read the column values a user's ``from_kafka_event`` set on a model instance."""
    state = inspect(instance)
    values = state.dict
    return {
        attr.columns[0].key: values[attr.key]
        for attr in state.mapper.column_attrs
        if attr.key in values
    }


def field_map_mapping(hook: Callable[..., Any]) -> Callable[..., Any]:
    """Mark ``MirroredEntity.from_kafka_event`` (models/base.py), the field map's own mapping:
    a model that does not override it is mapped without building an instance per event."""
    hook.field_map_mapping = True  # type: ignore[attr-defined]
    return hook


def _mapper_for(model: type[Any]) -> RowMapper:
    hook = getattr(model.from_kafka_event, "__func__", model.from_kafka_event)
    if getattr(hook, "field_map_mapping", False):
        # Fast path: the field map gives a dict, no ORM instance is built per event.
        return model.row_from_event  # type: ignore[no-any-return]

    def mapper(event: dict[str, Any]) -> Mapping[str, Any]:
        result = model.from_kafka_event(event)
        if isinstance(result, Mapping):
            return result
        if isinstance(result, model):
            return _instance_to_row(result)
        raise TypeError(
            f"{model.__name__}.from_kafka_event returned {type(result).__name__}, "
            "expected the model or a dict"
        )

    return mapper


def _patch_mapper_for(model: type[Any], mapper: RowMapper) -> RowMapper:
    """Return the mapping of a partial update: the field map's fields the event has, or the
    model's own ``from_kafka_event`` (whose result names the columns it carries)."""
    if mapper != model.row_from_event:
        return mapper
    fields = tuple(model.__event_fields__.items())

    def patch(event: dict[str, Any]) -> Mapping[str, Any]:
        return {column: event[name] for column, name in fields if name in event}

    return patch


def _soft_delete_column(
    model: type[Any], table: Table, key_columns: tuple[str, ...]
) -> ColumnKind | None:
    """Check the model's ``__soft_delete__`` column; return what it holds (None: not declared)."""
    name = model.__name__
    column_name = getattr(model, "__soft_delete__", None)
    if column_name is None:
        return None
    if not isinstance(column_name, str) or column_name not in table.columns:
        raise RegistryError(f"{name}.__soft_delete__ names no column of the table: {column_name!r}")
    column = table.columns[column_name]
    if column_name in key_columns or column_name.startswith("mirror_") or not column.nullable:
        raise RegistryError(
            f"{name}.__soft_delete__ must name a nullable column of its own, not {column_name!r}"
        )
    kind = column_rule(column).kind
    if kind not in (ColumnKind.DATETIME, ColumnKind.INTEGER):
        raise RegistryError(
            f"{name}.{column_name} (__soft_delete__) must be a DateTime (the delete's time) or "
            "an integer column (its milliseconds since the epoch)"
        )
    if column_name in model.__event_fields__:
        raise RegistryError(
            f"{name}.__event_fields__ maps {column_name!r}, which __soft_delete__ gives to the "
            "mirror (set by deletes, cleared by creates and updates): map it to no field"
        )
    return kind


#: The kinds a key column may be, and the type a single key of each already is when it needs
#: no converting (None: a UUID's text is always made canonical).
_CANONICAL_KEY_TYPES: Mapping[ColumnKind, type | None] = {
    ColumnKind.TEXT: str,
    ColumnKind.INTEGER: int,
    ColumnKind.UUID: None,
}


def build_spec(model: type[Any]) -> EntitySpec:
    """Derive an :class:`EntitySpec` from a mapped ``MirroredEntity`` subclass."""
    name = model.__name__
    table = getattr(model, "__table__", None)
    if not isinstance(table, Table):
        raise RegistryError(f"{name} is not mapped to a table; inherit from models.Base")
    primary = list(table.primary_key.columns)
    if not primary:
        raise RegistryError(f"{name} must have a primary key (the entity key)")
    key_columns = tuple(c.key for c in primary)
    key_column = key_columns[0]
    key_rules = tuple(column_rule(c) for c in primary)
    for column, rule in zip(primary, key_rules, strict=True):
        if isinstance(column.type, Uuid) and column.type.as_uuid:
            raise RegistryError(
                f"{name}.{column.key} is a Uuid key column taking uuid.UUID objects, but the "
                "mirror's keys are text: declare it Mapped[str] with "
                "mapped_column(Uuid(as_uuid=False), primary_key=True), the same column in the "
                "database"
            )
        if rule.kind not in _CANONICAL_KEY_TYPES:
            # A key is text or an integer in URLs, record keys, the cache and its changelog;
            # a date or a decimal part would not encode there.
            raise RegistryError(
                f"{name}.{column.key} is a {type(column.type).__name__} key column, but the "
                "mirror's keys are text or integers: declare it String (a date as its ISO "
                "text), an Integer type or Uuid(as_uuid=False)"
            )
    ignored = {*VERSION_COLUMNS, getattr(model, "__soft_delete__", None)} - {None}
    declared = declared_format(model, table, frozenset(str(c) for c in ignored))
    if declared.fields is not model.__event_fields__:
        model.__event_fields__ = declared.fields  # a Debezium-fed model: every column by name
    fields: Mapping[str, str] = declared.fields
    unknown = [column for column in fields if column not in table.columns]
    if unknown:
        raise RegistryError(f"{name}.__event_fields__ names unknown columns: {unknown}")
    key_fields = tuple(fields.get(c) for c in key_columns)
    composite = len(key_columns) > 1
    if composite:
        if model.__key_field__ is not None and model.__key_field__ not in key_fields:
            raise RegistryError(
                f"{name} has a composite key {key_columns}: map each key column in "
                "__event_fields__ (or override from_kafka_event), not __key_field__"
            )
        key_field = None
        # The field map requires the first key column's field; the others are checked by
        # routing (a part missing is a rejection), which reads them all.
        model.__key_field__ = key_fields[0]
    else:
        key_field = model.__key_field__ or key_fields[0]
        model.__key_field__ = key_field
        key_fields = (key_field,)
    declared_updates = model.__update_columns__
    if declared_updates is None:
        update_columns = tuple(c.key for c in table.columns if c.key not in key_columns)
    else:
        missing = [c for c in declared_updates if c not in table.columns]
        if missing:
            raise RegistryError(f"{name}.__update_columns__ names unknown columns: {missing}")
        update_columns = tuple(declared_updates)
    kind = str(getattr(model, "__kind__", name.lower()))
    missing_bookkeeping = [c for c in VERSION_COLUMNS if c not in table.columns]
    if missing_bookkeeping:
        raise RegistryError(f"{name} lacks {missing_bookkeeping}; inherit from MirroredEntity")
    update_columns = tuple(c for c in update_columns if c not in VERSION_COLUMNS)
    soft_delete_kind = _soft_delete_column(model, table, key_columns)
    soft_delete = model.__soft_delete__ if soft_delete_kind is not None else None
    if soft_delete is not None and soft_delete not in update_columns:
        update_columns = (*update_columns, soft_delete)
    partial_updates = model.__partial_updates__
    if not isinstance(partial_updates, bool):
        raise RegistryError(f"{name}.__partial_updates__ must be True or False")
    mapper = _mapper_for(model)
    rules = tuple(
        column_rule(c)
        for c in table.columns
        if c.key not in key_columns and c.key not in VERSION_COLUMNS
    )
    key_rule = key_rules[0]
    key_checks = tuple(compile_key_check(rule) for rule in key_rules)
    if mapper == model.row_from_event:  # the field map is the whole mapping
        unmapped = [
            c.key
            for c in table.columns
            if c.key not in key_columns
            and c.key not in VERSION_COLUMNS
            and c.key not in fields
            and _required(c)
        ]
        if unmapped:
            raise RegistryError(
                f"{name}.{unmapped[0]} is NOT NULL without a default, but __event_fields__ "
                "does not map it: map it, give it a default, make it nullable, or override "
                "from_kafka_event"
            )
    return EntitySpec(
        model=model,
        kind=kind,
        topic=str(model.__topic__),
        table=table,
        key_column=key_column,
        key_field=key_field,
        update_columns=update_columns,
        cached=bool(model.__cached__),
        version_field=declared.version_field,
        tombstone_table=_tombstone_table(table, primary),
        repartition=bool(model.__repartition__),
        rules=rules,
        key_rule=key_rule,
        column_kinds={c.key: column_rule(c).kind for c in table.columns},
        reads_record_fields=mapper != model.row_from_event
        or bool(set(fields.values()) & set(RECORD_FIELDS)),
        row_check=compile_row_check(rules),
        key_check=key_checks[0],
        mapper=mapper,
        batch_hook=_batch_hook(model),
        soft_delete=soft_delete,
        soft_delete_kind=soft_delete_kind,
        partial_updates=partial_updates,
        patch_mapper=_patch_mapper_for(model, mapper) if partial_updates else None,
        patch_check=compile_patch_check(rules) if partial_updates else None,
        input_format=declared.input_format,
        key_columns=key_columns,
        key_fields=key_fields,
        composite=composite,
        key_checks=key_checks,
        key_rules=key_rules,
        single_key_type=_CANONICAL_KEY_TYPES[key_rule.kind],
    )


def _batch_hook(model: type[Any]) -> BatchHook | None:
    """Return the model's ``on_batch`` classmethod, or None; refuse one not callable."""
    hook = getattr(model, "on_batch", None)
    if hook is None:
        return None
    if not callable(hook):
        raise RegistryError(f"{model.__name__}.on_batch must be a classmethod, not {hook!r}")
    return cast(BatchHook, hook)


def _required(column: Column[Any]) -> bool:
    """NOT NULL without a default of its own: a created row must give it a value."""
    return (
        not column.nullable
        and not column.primary_key
        and column.default is None
        and column.server_default is None
    )


def column_rule(column: Column[Any]) -> ColumnRule:
    """Say what ``column`` takes, for the checks before any SQL (``models.columns``)."""
    kind = ColumnKind.OTHER
    length = None
    int_range = None
    as_uuid = False
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        python_type = object
    if isinstance(column.type, JSON):
        kind = ColumnKind.JSON
    elif isinstance(column.type, String):
        kind = ColumnKind.TEXT
        length = column.type.length
    elif isinstance(column.type, Boolean):
        kind = ColumnKind.BOOLEAN
    elif isinstance(column.type, Integer):
        kind = ColumnKind.INTEGER
        bits = (
            16
            if isinstance(column.type, SmallInteger)
            else 64
            if isinstance(column.type, BigInteger)
            else 32
        )
        int_range = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    elif isinstance(column.type, Float):
        kind = ColumnKind.FLOAT
    elif isinstance(column.type, DateTime):
        kind = ColumnKind.DATETIME
    elif isinstance(column.type, Date):
        kind = ColumnKind.DATE
    elif isinstance(column.type, Interval):
        kind = ColumnKind.INTERVAL
    elif isinstance(column.type, Uuid):
        kind = ColumnKind.UUID
        as_uuid = bool(column.type.as_uuid)
    del python_type
    return ColumnRule(column.key, kind, _required(column), length, int_range, as_uuid)


def _tombstone_table(table: Table, keys: list[Column[Any]]) -> Table:
    """Return (defining once) the table of tombstones beside ``table``, keyed by the same
    columns."""
    name = f"{table.name}_tombstone"
    existing = table.metadata.tables.get(name)
    if existing is not None:
        return existing
    return Table(
        name,
        table.metadata,
        *(Column(key.key, key.type, primary_key=True) for key in keys),
        Column("mirror_version", BigInteger, nullable=False),
        Column("mirror_partition", Integer, nullable=False),
        Column("mirror_offset", BigInteger, nullable=False),
        # Wall-clock ms of the delete, for the retention purge.
        Column("deleted_at", BigInteger, nullable=False, index=True),
    )


class Registry:
    """Declared entities by topic and by kind."""

    def __init__(self) -> None:
        self._by_kind: dict[str, EntitySpec] = {}
        self._by_topic: dict[str, EntitySpec] = {}

    def register(self, model: type[Any]) -> EntitySpec:
        """Add a model; the same class twice is a no-op, a clash of topic or kind an error."""
        spec = build_spec(model)
        for index, value in ((self._by_kind, spec.kind), (self._by_topic, spec.topic)):
            existing = index.get(value)
            if existing is not None and existing.model is not model:
                if existing.model.__qualname__ == model.__qualname__ and (
                    existing.model.__module__ == model.__module__
                ):
                    continue  # the same declaration imported again (module reloaded)
                raise RegistryError(
                    f"{model.__name__} and {existing.model.__name__} both declare {value!r}"
                )
        self._by_kind[spec.kind] = spec
        self._by_topic[spec.topic] = spec
        return spec

    def unregister(self, model: type[Any]) -> None:
        """Remove ``model`` (tests declare throwaway entities)."""
        for index in (self._by_kind, self._by_topic):
            for name in [name for name, spec in index.items() if spec.model is model]:
                del index[name]

    def by_kind(self, kind: str) -> EntitySpec | None:
        """Return the entity named ``kind``, if declared."""
        return self._by_kind.get(kind)

    def by_topic(self, topic: str) -> EntitySpec | None:
        """Return the entity mirrored from ``topic`` (without prefix), if declared."""
        return self._by_topic.get(topic)

    def __iter__(self) -> Iterator[EntitySpec]:
        return iter(sorted(self._by_kind.values(), key=lambda spec: spec.kind))

    def __len__(self) -> int:
        return len(self._by_kind)


#: The registry that ``MirroredEntity`` subclasses join when they are declared.
default_registry = Registry()
