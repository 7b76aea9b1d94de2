"""A consumed record as the core sees it, and where it was first produced.

Whatever adapter a record came through (the worker's consumer, the MSK adapter, the command
line), the core reads the same fields (:class:`Record`); a record forwarded through a
repartition topic carries its first place (:class:`Origin`), from which its version comes.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, cast


class Partition(NamedTuple):
    """One partition of a topic: the one partition type of this code. A named tuple, as
    aiokafka's ``TopicPartition`` and Faust's ``TP`` are, so each equals (and hashes as) the
    others with the same fields, and a dict keyed by one is read with any."""

    topic: str
    partition: int


class InPartition(Protocol):
    """Anything that says which partition it is in (a record, a gap, a head)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...


def partition_of(item: InPartition) -> Partition:
    """Return the partition ``item`` is in."""
    return Partition(item.topic, item.partition)


#: The partition of a record as a plain ``(topic, partition)`` tuple, read in C: for the loops
#: over every record of a batch, where building a :class:`Partition` each (0.4 us, measured)
#: would be a cost per event. A plain tuple equals, and hashes as, the Partition of the same
#: fields, so both key the same dicts.
partition_key = cast(Callable[[InPartition], Partition], operator.attrgetter("topic", "partition"))


#: An entity's key: its one key column's value, or the tuple of its key columns' values in
#: the table's primary-key order (a composite key, see ``streams.core.keys``).
EntityKey = str | int | tuple[str | int, ...]
#: Version of an entity's state: ``(timestamp ms, partition, offset)`` of the record by
#: default, or ``(declared version field, 0, 0)``. Tuples compare in that order.
Version = tuple[int, int, int]

#: Parses JSON from UTF-8 bytes; ``json.loads`` here, orjson's in the worker (both raise
#: ValueError, or its subclass UnicodeDecodeError, on what is not JSON).
JsonLoads = Callable[[bytes], Any]


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a record forwarded through a repartition topic was first produced."""

    topic: str
    partition: int
    offset: int
    timestamp: int

    def header(self) -> bytes:
        """Encode as the value of the ``mirror-origin`` header."""
        return f"{self.partition}:{self.offset}:{self.timestamp}:{self.topic}".encode()

    @classmethod
    def from_header(cls, raw: bytes) -> Origin | None:
        """Decode a ``mirror-origin`` header; None when it is malformed."""
        try:
            partition, offset, timestamp, topic = raw.decode("utf-8").split(":", 3)
            return cls(topic, int(partition), int(offset), int(timestamp))
        except (UnicodeDecodeError, ValueError):
            return None


ORIGIN_HEADER = "mirror-origin"


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One Kafka record as the core sees it, whatever adapter it came through."""

    topic: str
    """Topic the record was read from."""
    partition: int
    """Partition within the topic."""
    offset: int
    """Offset within the partition."""
    timestamp: int
    """Record timestamp in milliseconds since the epoch (producer or broker time)."""
    key: bytes | None
    """Record key bytes as produced (not necessarily the entity key)."""
    value: bytes | None
    """Record value bytes as produced; ``None`` is a Kafka tombstone."""
    headers: tuple[tuple[str, bytes], ...] = ()
    """Record headers, kept for dead letters."""
    origin: Origin | None = None
    """The record's place in the entity topic, when it was consumed from a repartition
    topic; versions and the fields injected into events come from there."""


class Record(Protocol):
    """What the core reads of a consumed record: a :class:`SourceRecord`, or aiokafka's own
    ``ConsumerRecord`` as the worker gets it (same fields; timestamps in milliseconds)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Any: ...


def first_of(record: Record) -> Origin:
    """Return where ``record`` was first produced (itself, unless forwarded)."""
    origin = getattr(record, "origin", None)
    if origin is not None:
        return origin  # type: ignore[no-any-return]
    return Origin(record.topic, record.partition, record.offset, record.timestamp)


def position_of(record: Record) -> Version:
    """Return ``(timestamp, partition, offset)`` where first produced: the default version."""
    origin = getattr(record, "origin", None)
    if origin is not None:
        return (origin.timestamp, origin.partition, origin.offset)
    return (record.timestamp, record.partition, record.offset)
