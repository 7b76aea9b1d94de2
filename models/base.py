"""The declarative base and the mixin a user's model inherits to mirror a topic.

Declaring an entity is one class::

    class Planet(MirroredEntity, Base):
        __tablename__ = "servicea_planet"
        __topic__ = "planet-changed"
        __event_fields__ = {"uuid": "planetUuid", "name": "planetName"}

        uuid: Mapped[str] = mapped_column(String(64), primary_key=True)
        name: Mapped[str] = mapped_column(String(255), nullable=False)

The class registers itself in :data:`models.registry.default_registry`; the worker derives
the agent, the table and the cache from that entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

from sqlalchemy import BigInteger, Integer
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from models.registry import VERSION_COLUMNS, default_registry, field_map_mapping

__all__ = ["VERSION_COLUMNS", "Base", "MirroredEntity"]


class Base(DeclarativeBase):
    """Declarative base of every mirrored table in this process."""


class MirroredEntity:
    """Mixin that ties a mapped class to the entity-changed topic it mirrors.

    Class attributes a model sets:

    - ``__topic__``: the topic name (required; without it the class is not registered).
    - ``__event_fields__``: column name -> event field, for the simple cases. Fields of the
      event that are not listed are ignored.
    - ``__key_field__``: event field holding the entity key; derived from
      ``__event_fields__`` when the primary key column is listed there.
    - ``__update_columns__``: columns an update overwrites (default: every mapped column
      but the key); leave out e.g. ``created_at`` so only the create sets it.
    - ``__cached__``: whether the latest state is also kept in a Faust table (default True).
    - ``__version_field__``: event field carrying the entity's integer version; without
      it the version is the record's ``(timestamp, partition, offset)``.
    - ``__repartition__``: set when the topic's record key is not the entity key; events
      are then forwarded through a repartition topic keyed by entity key, so one worker
      owns each entity (also settable per kind with ``REPARTITION``).
    - ``__soft_delete__``: a nullable DateTime (or integer: milliseconds) column, e.g.
      ``"deleted_at"``. A delete (DELETED, or a Kafka tombstone) then sets it to the delete
      record's time instead of removing the row; a newer create or update clears it, an older
      one is stale as after any delete. Reads leave such rows out unless asked for them.
    - ``__input_format__``: how the topic's records carry changes: ``"changetype-json"`` (the
      default), ``"debezium"`` (Debezium's change events, with or without the JsonConverter's
      schema) or ``"debezium-flat"`` (the rows of its ``ExtractNewRecordState`` transform). A
      Debezium-fed model without ``__event_fields__`` maps every column from the field of the
      same name (Debezium writes column names); see ``streams/core/debezium.py``.
    - ``__version_from__``: with a Debezium format, ``"source.lsn"`` takes versions from the
      source's position (PostgreSQL's LSN; ``__lsn`` of flattened rows, ``add.fields=lsn``)
      instead of the record's, so events a restarted connector emits again are stale.
    - ``__partial_updates__``: when True, an UPDATED (or no changeType) event changes only the
      columns it carries, a field present with ``null`` sets NULL; a create, or an update of
      an entity the table does not have, must still give every NOT NULL column.

    Several ``primary_key=True`` columns make a composite key: the entity key is then the tuple
    of their values in the table's primary-key order (``streams.core.keys`` has its URL, record
    key and text forms), and ``on_batch`` gets such tuples as keys.

    Every table also gets three bookkeeping columns, the version of the state it holds:
    ``mirror_version`` (record timestamp in ms, or the declared version field),
    ``mirror_partition`` and ``mirror_offset`` (tie-breakers; 0 with a version field).

    Override ``from_kafka_event`` (the hook users of the Lambda pattern know) for anything
    the field map cannot say; it may return an instance of the model or a dict of columns.

    Define a classmethod ``on_batch(conn, applied, deleted)`` for what declarations cannot say
    (an audit table, a derived count kept in step with the mirror). It is called once per
    batch that wrote or deleted rows, inside the batch's transaction and on its connection,
    with ``applied`` (the rows the batch wrote, public columns, by key) and ``deleted`` (the
    keys it deleted). What it writes commits or rolls back with the batch; if it raises, the
    batch rolls back and is retried, like a database error. A replayed batch (after a crash)
    writes nothing new, so the hook sees each change once.
    """

    __topic__: ClassVar[str]
    __event_fields__: ClassVar[Mapping[str, str]] = {}
    __key_field__: ClassVar[str | None] = None
    __update_columns__: ClassVar[tuple[str, ...] | None] = None
    __cached__: ClassVar[bool] = True
    __version_field__: ClassVar[str | None] = None
    __repartition__: ClassVar[bool] = False
    __soft_delete__: ClassVar[str | None] = None
    __partial_updates__: ClassVar[bool] = False
    __input_format__: ClassVar[str | None] = None
    __version_from__: ClassVar[str | None] = None

    mirror_version: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    mirror_partition: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    mirror_offset: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__topic__" in cls.__dict__:
            default_registry.register(cls)

    @classmethod
    def row_from_event(cls, event: Mapping[str, Any]) -> dict[str, Any]:
        """Map an event to column values through ``__event_fields__`` (missing field: KeyError).

        Only the key is required; other listed fields absent from the event become None,
        which the database refuses when the column is NOT NULL.
        """
        fields = cls.__event_fields__
        key_field = cls.__key_field__
        row: dict[str, Any] = {}
        for column, field_name in fields.items():
            if field_name == key_field:
                row[column] = event[field_name]
            else:
                row[column] = event.get(field_name)
        return row

    @classmethod
    @field_map_mapping
    def from_kafka_event(cls, event: Mapping[str, Any]) -> Self:
        """Build an instance from an event; override for custom mappings."""
        return cls(**cls.row_from_event(event))
