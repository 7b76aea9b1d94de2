"""A cached table's changelog keeps its source topic's partition count, across added partitions.

Reads by key go to the worker owning the key's changelog partition, which is the key's hash
modulo the changelog's partition count; the source topic's records of a key sit in the same
partition number (co-partitioned) while both counts agree. When partitions are added to the
source topic, the changelog is given as many (:func:`grow_changelog`); from then on each entry
is placed by its key's hash (``EntityCache.hashed``: producers keep the old count for a while,
and records written before sit where the old count put them), and the entries already in the
changelog whose key now hashes to another partition are written there again from the database,
with a deletion where they were (:func:`rebuild_moved`), so the cache is rebuilt, not left to
miss. A read the owner's copy cannot answer meanwhile is answered from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from models.store import SqlStore
from streams.settings import Settings
from tables.cache import EntityCache, Entry, cache_entry, cache_key, key_partition

log = logging.getLogger(__name__)

#: Rows read, and their entries written, while one lock of the entity is held.
REBUILD_PAGE = 2000


async def grow_changelog(settings: Settings, cache: EntityCache, partitions: int) -> bool:
    """Give ``cache``'s changelog ``partitions`` partitions; return whether this call did
    (False: another worker did first)."""
    from aiokafka.admin import NewPartitions
    from aiokafka.errors import InvalidPartitionsError

    from streams.topics import admin_client

    admin = await admin_client(settings)
    try:
        await admin.create_partitions({cache.changelog: NewPartitions(partitions)})
    except InvalidPartitionsError:
        return False  # it has that many already
    finally:
        await admin.close()
    return True


async def rebuild_moved(cache: EntityCache, store: SqlStore, old: int, new: int) -> int:
    """Write again the entries whose key's changelog partition moved from ``old`` to ``new``
    partitions: each row as the database has it to its new partition, a deletion to the old.

    Page by page, each page read and written while the entity's lock is held alone, so that
    no batch commits a newer state of a key between this read and this write (a batch's own
    entry, written after its commit, then comes after this one). Returns the keys moved.
    """
    spec = cache.spec
    after: Any = None
    moved = 0
    while True:
        with contextlib.ExitStack() as stack:
            tx = await asyncio.to_thread(
                stack.enter_context, store.alone(spec, f"rebuild the {spec.kind} cache")
            )
            rows = await asyncio.to_thread(tx.rows_after, spec, after, REBUILD_PAGE)
            entries = []
            for row in rows:
                key = cache_key(row[spec.key_column])
                was, now = key_partition(key, old), key_partition(key, new)
                if was != now:
                    entries += [Entry(key, None, was), Entry(key, cache_entry(row), now)]
            if entries:
                await cache.writer.write(cache.changelog, entries)
                moved += len(entries) // 2
            await asyncio.to_thread(stack.close)
        if len(rows) < REBUILD_PAGE:
            return moved
        after = rows[-1][spec.key_column]
