"""A cached table's copy in Faust's store, and Faust's table recovery (workarounds 7, 12).

Workarounds of faust-streaming 0.15.3, numbered across the ``faust_*`` modules (their index:
docs/internals.md, "Faust's workarounds").

7. **A table cannot be written outside a stream event** (faust-streaming/faust#300, #497:
   ``Table._send_changelog`` raises "Cannot modify table key from outside of stream
   iteration"): :class:`LocalTable` writes the store the way Faust's recovery does, a batch at a
   time. Test: Faust's error, and LocalTable's write.

12. **Table files that do not match their changelog stop the worker**
    (``faust/tables/recovery.py``, ``Recovery._restart_recovery``: ``ConsistencyError`` when a
    partition's persisted offset is past the changelog's highwater, as after a Kafka reset;
    under the highwater of a log made again, the entries kept are the old log's).
    ``tables.local_store`` checks the files before Faust opens them, reading them with
    :func:`table_files` and :func:`persisted_offset` (``faust/stores/rocksdb.py``:
    ``Store.partition_path``, ``<tabledir>/<table>-<partition>.db``, and ``Store.offset_key``).
    Test: Faust's check in its source, and the offset read from files Faust's store wrote.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from faust.types import TP


class LocalTable:
    """This worker's copy of a cached table (Faust's store), written a batch at a time.

    Faust's tables write through an event context (``table[key] = value`` during a stream
    event; its RocksDB store asserts one), so the cache writes the store the way Faust's own
    recovery does (``Store.apply_changelog_batch``): for RocksDB one write batch per partition
    and the changelog offset it now holds (``set_persisted_offset``, so a restart recovers only
    what came after); for the in-memory store its dict, and the partition of each key (Faust
    drops keys of partitions no longer assigned after each recovery, by that index).
    """

    def __init__(self, table: Any) -> None:
        self.table = table

    def size(self) -> int:
        """Count the entries of this worker's active partitions (RocksDB: its estimate, as
        counting would read every key)."""
        store: Any = self.table.data
        if hasattr(store, "_dbs_for_actives"):  # faust/stores/rocksdb.py
            return sum(
                int(db.property_int_value("rocksdb.estimate-num-keys") or 0)
                for db in store._dbs_for_actives()
            )
        return len(store)

    def get(self, key: bytes, partition: int) -> bytes | None:
        """Return the entry of ``key`` in ``partition`` of this worker's copy, or None.

        In that partition only: Faust's RocksDB store looks a key up in every partition's
        database when its index does not know it (``Store._get``, ``_dbs_for_key``), and an
        older entry of the key can sit in another partition (placed there before partitions
        were added); the in-memory store keeps one value per key, with its partition.
        """
        store: Any = self.table.data
        if hasattr(store, "_db_for_partition"):  # faust/stores/rocksdb.py
            value: bytes | None = store._db_for_partition(partition).get(key)
            return value
        data = store.data if hasattr(store, "data") else store  # faust/stores/memory.py
        partitions = getattr(store, "_key_partition", None)
        if partitions is not None and partitions.get(key, partition) != partition:
            return None
        found: bytes | None = data.get(key)
        return found

    def write(self, entries: Iterable[tuple[bytes, bytes | None, int, int]]) -> None:
        """Write ``(key, value or None to delete, partition, changelog offset)`` entries."""
        store: Any = self.table.data
        if hasattr(store, "_db_for_partition"):  # faust/stores/rocksdb.py
            from rocksdict import WriteBatch

            # Faust's key index (``Store._key_index``, an LRU of ``table_key_index_size`` keys
            # behind a lock) is left alone: it serves Faust's lookups of a key without its
            # partition, which this project never makes (``get`` reads the key's partition),
            # and keeping it cost about 2 % of the worker's time (one evicting insert an entry).
            batches: dict[int, Any] = {}
            last: dict[int, int] = {}
            for key, value, partition, offset in entries:
                batch = batches.get(partition)
                if batch is None:
                    batch = batches[partition] = WriteBatch(raw_mode=True)
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
                if offset > last.get(partition, -1):
                    last[partition] = offset
            topic = self.table.changelog_topic.get_topic_name()
            for partition, batch in batches.items():
                store._db_for_partition(partition).write(batch)
                store.set_persisted_offset(TP(topic, partition), last[partition])
            return
        data = store.data if hasattr(store, "data") else store  # faust/stores/memory.py
        partitions = getattr(store, "_key_partition", None)
        for key, value, partition, _ in entries:
            if value is None:
                data.pop(key, None)
                if partitions is not None:
                    partitions.pop(key, None)
            else:
                data[key] = value
                if partitions is not None:
                    partitions[key] = partition


def recovering_partitions(app: Any, changelog: str) -> set[int]:
    """Return the partitions of ``changelog`` this worker is still recovering (none when the
    tables are not recovering)."""
    if not app.in_recovery:
        return set()
    recovery = app.tables.recovery
    remaining = recovery.active_remaining()
    busy = {tp.partition for tp, n in remaining.items() if tp.topic == changelog and n > 0}
    if any(recovery.buffers.values()):  # read, not yet applied to the store
        busy |= {tp.partition for tp in recovery.active_tps if tp.topic == changelog}
    return busy


def recovery_remaining(app: Any) -> int | None:
    """Return the changelog records the app's table recovery still waits for (None: none runs).

    ``TableManagerT`` does not declare its recovery service; Faust's ``Recovery`` has it.
    """
    if not app.in_recovery:
        return None
    return int(app.tables.recovery.active_remaining_total())


#: Where Faust's RocksDB store keeps the changelog offset a partition holds
#: (``faust/stores/rocksdb.py``, ``Store.offset_key``).
OFFSET_KEY = b"__faust\0offset__"


def table_files(tabledir: Path, table: str) -> dict[int, Path]:
    """Return the partition databases of ``table`` under ``tabledir``, by partition."""
    pattern = re.compile(rf"{re.escape(table)}-(\d+)\.db")
    if not tabledir.is_dir():
        return {}
    return {
        int(match.group(1)): path
        for path in tabledir.iterdir()
        if (match := pattern.fullmatch(path.name)) is not None
    }


def persisted_offset(path: Path) -> int | None:
    """Return the changelog offset a partition database holds (None: none), read-only."""
    from rocksdict import AccessType, Options, Rdict

    db = Rdict(str(path), Options(raw_mode=True), access_type=AccessType.read_only())
    try:
        raw = db.get(OFFSET_KEY)
    finally:
        db.close()
    return None if raw is None else int(raw)
