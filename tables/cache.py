"""Cached tables: one Faust table per cached entity, holding what the database committed.

The agent that applied a batch puts the committed rows of the batch's keys here, after that
transaction commits, and acknowledges the batch only once the changelog has them all. So the
cache never shows state the database does not have (invariant 4), and a worker killed between
its commit and its changelog write leaves a gap that the replay of the batch repairs (reading
starts again at the group's Kafka offset, which moves only after the cache write).

Entries are the JSON of a row's public columns, kept as bytes: the same bytes in the changelog,
in this worker's table, and in the table another worker recovers from the changelog. A batch's
entries are written as one record batch per changelog partition (:class:`ChangelogWriter`), not
one produce per key. Changelog records go to the partition of the entity key under Kafka's
default partitioner, where Faust's router looks for them; when the source topic is keyed by
entity key (the contract) or repartitioned, that is the partition the event came from, so the
worker that applies an entity also owns its cache entry (co-partitioned).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import faust
import orjson

from models.registry import EntitySpec, Registry
from streams.core.keys import key_text
from streams.kafka.producers import OwnProducer
from streams.kafka.record_batches import RecordBatches
from streams.ops import metrics
from streams.settings import Settings
from tables.api import public
from tables.faust_store import LocalTable, recovering_partitions
from tables.partitioner import key_partition, key_partitions

log = logging.getLogger(__name__)

#: Largest record batch the changelog writer builds (one per partition and batch of entries).
CHANGELOG_BATCH_BYTES = 1024 * 1024

#: RocksDB options of each table partition. Faust's defaults (faust/stores/rocksdb.py: 64 MiB
#: write buffers, three of them, and a 2 GiB block cache, per partition) are sized for large
#: state; a cache entry is a row's JSON, about 100 bytes.
ROCKSDB_OPTIONS = {
    "write_buffer_size": 1024 * 1024,
    "max_write_buffer_number": 2,
    "target_file_size_base": 8 * 1024 * 1024,
    "block_cache_size": 4 * 1024 * 1024,
}


def cache_key(key: Any) -> bytes:
    """Return the table key of an entity key: its text as UTF-8, as the source record's key.

    Raw bytes, not Faust's default JSON (which would quote the text), so the key's partition
    is the one the producer of a source record keyed by entity key would pick. A composite key
    (a tuple) is the compact JSON array of its parts, ``["o-7",2]``
    (``streams.core.keys.key_text``): unambiguous, and stable across versions.
    """
    if type(key) is tuple:
        return key_text(key).encode()
    return str(key).encode()


def encode_value(value: Mapping[str, Any]) -> bytes:
    """Encode a cached value (a row's public columns) as the changelog's JSON.

    The copy works around orjson (3.12 and later) returning bytes whose allocation is rounded
    up to at least 4 KiB and never shrunk (ijl/orjson#483; home-assistant/core#181240 trims
    its cached fragments the same way): a table of 20,000 such entries held 80 MB instead of
    2 MB. The cache keeps its entries for good, so each is copied to its exact size.
    """
    # default=str: dates, decimals and the like read back as text.
    return bytes(memoryview(orjson.dumps(value, default=str)))


def changelog_topic(app_id: str, kind: str) -> str:
    """Return the changelog topic of ``kind``'s cached table (Faust's naming)."""
    return f"{app_id}-{kind}-changelog"


def cache_entry(row: Mapping[str, Any]) -> bytes:
    """Return the cache entry (and changelog value) of ``row``."""
    return encode_value(public(row))


def cached_value(row: Mapping[str, Any]) -> dict[str, Any]:
    """Return what a read of the cache answers for ``row``: its public columns as JSON reads."""
    value: dict[str, Any] = orjson.loads(cache_entry(row))
    return value


class Entry(NamedTuple):
    """One cache write: the table key, the entry (None: the entity is gone), its partition.

    A named tuple: a batch writes thousands, and it is the cheapest immutable value.
    """

    key: bytes
    value: bytes | None
    partition: int | None
    """The changelog partition when the writer must say (a deletion where an entry used to be,
    ``tables.changelogs.rebuild_moved``); None: the key's hash places it, where reads look."""


class ChangelogWriter:
    """Writes cache entries to changelog topics, one record batch per partition.

    Its own producer (idempotent, acks from all replicas), so that a batch of a few thousand
    entries is a few record batches built in C, not a few thousand sends through Faust's
    producer. Sending an entry again is harmless: the last value per key wins.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer = OwnProducer(
            settings,
            "changelog",
            lambda: {
                "max_batch_size": CHANGELOG_BATCH_BYTES,
                "max_request_size": 16 * CHANGELOG_BATCH_BYTES,
            },
        )
        self._partitions: dict[str, list[int]] = {}
        self._stale: set[str] = set()
        """Topics whose partitions the producer's metadata may not know yet."""

    def forget(self, topic: str) -> None:
        """Read ``topic``'s partitions from the brokers again before the next write (it was
        given more)."""
        self._partitions.pop(topic, None)
        self._stale.add(topic)

    async def write(
        self, topic: str, entries: Iterable[Entry]
    ) -> list[tuple[bytes, bytes | None, int, int]]:
        """Write ``entries`` and wait until the broker has them all; return each entry as
        ``(key, value, partition, offset)``, in order."""
        producer = await self._producer.get()
        batches: RecordBatches[tuple[bytes, bytes | None, int]] = RecordBatches(producer, topic)
        try:
            return await self._write(producer, topic, entries, batches)
        except Exception as exc:
            await self._producer.discard_if_broken(producer, exc, (f for f, _ in batches.sent))
            raise

    async def _write(
        self,
        producer: Any,
        topic: str,
        entries: Iterable[Entry],
        batches: RecordBatches[tuple[bytes, bytes | None, int]],
    ) -> list[tuple[bytes, bytes | None, int, int]]:
        """Send ``entries`` as record batches (``batches``), then await them."""
        partitions = self._partitions.get(topic)
        if partitions is None:
            if topic in self._stale:
                await producer.client.force_metadata_update()
                self._stale.discard(topic)
            partitions = sorted(await producer.partitions_for(topic))
            self._partitions[topic] = partitions
        count = len(partitions)
        entries = list(entries)
        placed_by_hash = iter(
            key_partitions(
                [e.key for e in entries if e.partition is None or e.partition >= count], count
            )
        )
        for entry in entries:
            partition = entry.partition
            if partition is None or partition >= count:
                partition = partitions[next(placed_by_hash)]
            if batches.add(partition, entry.key, entry.value, (entry.key, entry.value, partition)):
                await batches.send_full()
        placed: list[tuple[bytes, bytes | None, int, int]] = []
        for future, in_batch in await batches.send_rest():
            base = (await future).offset  # the record batch's first offset
            placed.extend((k, v, p, base + i) for i, (k, v, p) in enumerate(in_batch))
        return placed

    async def close(self) -> None:
        """Stop the producer."""
        await self._producer.close()


@dataclass(slots=True)
class EntityCache:
    """The cached table of one entity kind.

    While Faust recovers this worker's tables, the mirror goes on: entries are written to the
    changelog as always, but held back from this worker's copy (the recovery, applying older
    changelog records, would undo them), and applied once the recovery is done. Reads by key of
    a partition still recovering answer 503 meanwhile.
    """

    spec: EntitySpec
    table: Any  # faust.Table; Faust's generic table type does not help mypy here
    writer: ChangelogWriter
    app: Any = None
    pending: dict[bytes, tuple[bytes | None, int, int]] = field(default_factory=dict)
    """Entries written to the changelog during a recovery, for this worker's copy after it."""
    partitions: int = 0
    """The changelog's partition count, when it grew after the table was declared (0: the
    table's own)."""
    broken: str | None = None
    """Why this worker's copy (its local store, under DATA_DIR) could not be written, once it
    failed (a full disk): it is no longer written or read until the worker restarts and
    rebuilds it from the changelog, which has every entry."""

    @property
    def changelog(self) -> str:
        """Return the name of the table's changelog topic."""
        return str(self.table.changelog_topic.get_topic_name())

    def get(self, key: Any) -> dict[str, Any] | None:
        """Return this worker's cached state of ``key``, or None (absent, or not known here:
        the reader asks the database)."""
        if self.broken is not None:
            return None
        self.flush()  # a recovery just over: what it held back comes first
        k = cache_key(key)
        value = LocalTable(self.table).get(k, key_partition(k, self.count()))
        if value is None:
            return None
        decoded: dict[str, Any] = orjson.loads(value)
        return decoded

    def size(self) -> int:
        """Count the entries this worker holds (an estimate with RocksDB)."""
        return LocalTable(self.table).size()

    async def put(self, entries: Iterable[Entry]) -> None:
        """Write ``entries`` to the changelog, then to this worker's table (or hold them while
        the table recovers)."""
        placed = await self.writer.write(self.changelog, entries)
        if self.broken is not None:
            return
        if self.app is not None and self.app.in_recovery:
            for key, value, partition, offset in placed:
                self.pending[key] = (value, partition, offset)
            return
        self._write_local(placed)

    async def on_recovered(self) -> None:
        """Faust's callback once this table's recovery is complete (``Table.on_recover``)."""
        self.flush()

    def flush(self) -> None:
        """Apply the entries held back during a recovery, once it is over (at its end, and
        before any read or write after it)."""
        if self.pending and (self.app is None or not self.app.in_recovery):
            held, self.pending = self.pending, {}
            self._write_local([(k, v, p, o) for k, (v, p, o) in held.items()], flushing=False)

    def _write_local(
        self, entries: list[tuple[bytes, bytes | None, int, int]], *, flushing: bool = True
    ) -> None:
        """Write entries the changelog has to this worker's copy.

        If the local store fails (RocksDB on a full disk stays failed until reopened), the
        mirror goes on: the changelog has the entries, and this copy is given up until the
        worker restarts and recovers it from there; reads ask the database meanwhile. One
        error line, ``mirror_cache_local_failures_total``.
        """
        if self.broken is not None:
            return
        owned = self._active_partitions()
        if owned is not None:
            # Entries of partitions another worker owns are that worker's (it reads them from
            # the changelog when it recovers); written here, with their changelog offsets, they
            # would make a later recovery of such a partition here skip what came before.
            entries = [entry for entry in entries if entry[2] in owned]
        try:
            if flushing:
                self.flush()
            LocalTable(self.table).write(entries)
        except Exception as exc:  # RocksDB raises plain Exception ("IO error: No space left")
            self.broken = " ".join(str(exc).split()) or type(exc).__name__
            metrics.CACHE_LOCAL_FAILURES.labels(self.spec.kind).inc()
            log.error(
                "the cached table %s cannot be written on this worker (%s): reads of it are "
                "answered from the database, the mirror and the changelog go on; restart the "
                "worker once its DATA_DIR can be written (a full disk?), and its copy is rebuilt "
                "from the changelog",
                self.spec.kind,
                self.broken,
            )

    def _active_partitions(self) -> set[int] | None:
        """Return the changelog partitions this worker owns (None: no app to ask)."""
        if self.app is None:
            return None
        changelog = self.changelog
        return {
            tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == changelog
        }

    def count(self) -> int:
        """Return the changelog's partition count as this worker knows it."""
        return self.partitions or int(self.table.partitions)

    def holds(self, key: Any) -> bool:
        """Tell whether ``key``'s partition is one this worker's copy owns: only then does a
        read answer from it (a router still counting the partitions a topic had, or a
        rebalance under way, can send a read to another worker)."""
        owned = self._active_partitions()
        return owned is None or key_partition(cache_key(key), self.count()) in owned

    def recovering(self, key: Any) -> bool:
        """Tell whether ``key``'s partition of this worker's table is still recovering."""
        if self.app is None:
            return False
        busy = recovering_partitions(self.app, self.changelog)
        return bool(busy) and key_partition(cache_key(key), self.count()) in busy


def declare_caches(
    app: faust.App,
    registry: Registry,
    settings: Settings,
    partitions: Mapping[str, int] | None = None,
) -> dict[str, EntityCache]:
    """Declare a table for every cached entity (``__cached__``, on by default), by kind.

    ``partitions`` gives each kind's changelog partition count: its source topic's, so that
    partition *n* of both belongs to one worker (TOPIC_PARTITIONS for a topic yet to be made).
    """
    partitions = partitions or {}
    caches: dict[str, EntityCache] = {}
    writer = ChangelogWriter(settings)
    for spec in registry:
        if not spec.cached:
            continue
        table = app.Table(
            spec.kind,
            # bytes: raw keys (see cache_key) and raw JSON values, written and recovered alike.
            key_type=bytes,
            value_type=bytes,
            partitions=partitions.get(spec.kind, settings.topic_partitions),
            options=dict(ROCKSDB_OPTIONS) if settings.table_store == "rocksdb" else None,
            # Our own writes choose the partition by key; this keeps table[k] = v consistent.
            use_partitioner=True,
            help=(
                f"Latest committed state of each {spec.kind} by {', '.join(spec.key_columns)}, "
                f"mirrored from {spec.topic}"
            ),
        )
        cache = caches[spec.kind] = EntityCache(spec, table, writer, app)
        table.on_recover(cache.on_recovered)
    return caches
