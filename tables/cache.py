"""Cached tables: one Faust table per cached entity, holding what the database committed.

The agent that applied a batch puts the committed rows of the batch's keys here, read back in
the batch's own transaction, after that transaction commits, and acknowledges the batch only
once the changelog has them all. So the cache never shows state the database does not have
(invariant 4), and a worker killed between its commit and its changelog write leaves a gap that
the replay of the batch repairs: a replay changes nothing in SQL but still rewrites its keys.

Changelog records go where the producer's partitioner puts the entity key: a batch spans
partitions, so "the current event's partition" (Faust's default) would be wrong, and the key's
partition is where Faust's router looks for it. When the source topic is keyed by entity key
(the contract) or repartitioned, that is the partition the event came from, so the worker that
applies an entity also owns its cache entry and its changelog partition (co-partitioned).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import faust
import orjson

from models.registry import EntitySpec, Registry
from streams.api import public
from streams.settings import Settings


def cache_key(key: Any) -> bytes:
    """Return the table key of an entity key: its text as UTF-8, as the source record's key.

    Raw bytes, not Faust's default JSON (which would quote the text), so the key's partition
    is the one the producer of a source record keyed by entity key would pick.
    """
    return str(key).encode()


def encode_value(value: Mapping[str, Any]) -> bytes:
    """Encode a cached value (a row's public columns) as the changelog's JSON."""
    # default=str: dates, decimals and the like read back as text.
    return orjson.dumps(value, default=str)


def changelog_topic(app_id: str, kind: str) -> str:
    """Return the changelog topic of ``kind``'s cached table (Faust's naming)."""
    return f"{app_id}-{kind}-changelog"


def cache_entry(row: Mapping[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """Return the changelog value of ``row`` and what the cache holds for it (as read back)."""
    encoded = encode_value(public(row))
    value: dict[str, Any] = orjson.loads(encoded)
    return encoded, value


def cached_value(row: Mapping[str, Any]) -> dict[str, Any]:
    """Return what the cache holds for ``row``: its public columns as they read back as JSON."""
    return cache_entry(row)[1]


@dataclass(frozen=True, slots=True)
class EntityCache:
    """The cached table of one entity kind."""

    spec: EntitySpec
    table: Any  # faust.Table; Faust's generic table type does not help mypy here

    @property
    def changelog(self) -> str:
        """Return the name of the table's changelog topic."""
        return str(self.table.changelog_topic.get_topic_name())

    def get(self, key: Any) -> dict[str, Any] | None:
        """Return this worker's cached state of ``key``, or None."""
        value = self.table.data.get(cache_key(key))
        return dict(value) if value is not None else None

    def size(self) -> int:
        """Count the entries this worker holds."""
        return len(self.table.data)

    async def put(self, app: faust.App, states: Mapping[Any, Mapping[str, Any] | None]) -> None:
        """Write ``states`` (None: the entity is absent) and wait until the changelog has them.

        Sending again what was sent is harmless (the last value per key wins), so a caller
        retries a failed ``put`` with the same states.
        """
        if not states:
            return
        topic = self.changelog
        sent: list[tuple[bytes, dict[str, Any] | None, Any]] = []
        for key, row in states.items():
            k = cache_key(key)
            # Kept as it reads back from the changelog, so recovered and written entries agree.
            encoded, value = (None, None) if row is None else cache_entry(row)
            # Straight to the producer (as dead letters go) rather than through table[k] = v:
            # one awaitable per record, no per-key buffer round trip, and we can wait for all.
            future = await app.producer.send(
                topic,
                k,
                encoded,
                partition=None,
                timestamp=None,
                headers=None,
            )
            sent.append((k, value, future))
        data = self.table.data
        for k, value, future in sent:
            metadata = await future
            if value is None:
                data.pop(k, None)
            else:
                data[k] = value
            _remember_partition(data, k, metadata.partition)


def _remember_partition(data: Any, key: bytes, partition: int) -> None:
    """Record a locally written key's partition, as Faust's memory store does for recovered ones.

    Faust's in-memory store drops, after each recovery, the keys of partitions this worker no
    longer owns, but only keys it recovered from the changelog carry a partition. Keys written
    here would otherwise stay behind, stale, after their partition moved to another worker.
    """
    partitions = getattr(data, "_key_partition", None)
    if partitions is not None:
        partitions[key] = partition


def declare_caches(
    app: faust.App, registry: Registry, settings: Settings
) -> dict[str, EntityCache]:
    """Declare a table for every cached entity (``__cached__``, on by default), by kind."""
    caches: dict[str, EntityCache] = {}
    for spec in registry:
        if not spec.cached:
            continue
        table = app.Table(
            spec.kind,
            key_type=bytes,  # raw keys (see cache_key); values are JSON objects
            partitions=settings.topic_partitions,
            # Our own writes choose the partition by key; this keeps table[k] = v consistent.
            use_partitioner=True,
            help=(
                f"Latest committed state of each {spec.kind} by {spec.key_column}, "
                f"mirrored from {spec.topic}"
            ),
        )
        caches[spec.kind] = EntityCache(spec, table)
    return caches
