"""The cached tables' changelogs at start: made when missing, read, and refilled when lost.

A changelog holds what the database committed, entity by entity; the database is the truth.
After a Kafka reset, or a changelog deleted and made again, the new log lacks every entity
that has not changed since: reads by key would answer 404 for entities the database has, until
each changes again. So before Faust starts (and recovers tables from it), each changelog the
table's rows were not written to (``streams.core.changelog_checks.refill_reason``, from the
topic id recorded in the database, ``mirror_changelogs``) is written again from the rows.

Guarantee: the refill holds the entity's exclusive write lock (the one a batch keyed otherwise
takes, ``StoreTransaction.serialize``) from reading the rows until the broker has every entry,
so no batch commits in between; a batch committed before it writes its entries after them or
wrote older ones before (each partition's batches reach the changelog in order), so the last
entry of every key is its newest committed state. Running workers read what a refill wrote at
their next recovery, which this worker's joining the group starts. A refill that fails leaves
nothing recorded, and the next start does it again (an entry written twice is harmless).

A source topic given more partitions (``streams.ops.topic_watch``): its changelog is given as many
(:func:`grow_changelog`), and the entries whose key now hashes to another partition are written
there again from the rows, with a deletion where they were (:func:`rebuild_moved`), under the
same lock and with the same guarantee as a refill.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from models.registry import EntitySpec
from models.store import SqlStore, StoreTransaction
from streams.core.changelog_checks import ChangelogLog, refill_reason
from streams.core.errors import MirrorError
from streams.kafka.topics import admin_client, topic_ids
from streams.settings import Settings
from tables.cache import ChangelogWriter, Entry, cache_entry, cache_key
from tables.partitioner import key_partition

log = logging.getLogger(__name__)

#: Rows read and written to the changelog at a time during a refill.
REFILL_PAGE = 5000
#: Seconds to wait for a changelog just made to show every partition with a leader.
READY_TIMEOUT = 60.0


async def read_changelogs(settings: Settings, wanted: Mapping[str, int]) -> dict[str, ChangelogLog]:
    """Make the changelog topics of ``wanted`` (topic: partitions) that are missing, as Faust
    would (compacted), and return what the broker says of each: its id and end offsets."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import NewTopic
    from aiokafka.errors import KafkaError, TopicAlreadyExistsError

    admin = await admin_client(settings)
    try:
        existing = set(await admin.list_topics())
        for topic, partitions in sorted(wanted.items()):
            if topic in existing:
                continue
            new = NewTopic(
                topic,
                partitions,
                settings.topic_replicas,
                topic_configs={"cleanup.policy": "compact"},
            )
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker was first
                await admin.create_topics([new])
            log.info("created changelog %s (%d partitions)", topic, partitions)
    finally:
        await admin.close()
    deadline = time.monotonic() + READY_TIMEOUT
    ids = await topic_ids(settings, sorted(wanted))
    while ids is not None and set(wanted) - set(ids):  # a topic just made: not known everywhere
        if time.monotonic() > deadline:
            raise MirrorError(f"the broker gives no topic id for {sorted(set(wanted) - set(ids))}")
        await asyncio.sleep(0.2)
        ids = await topic_ids(settings, sorted(wanted))
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.broker_hosts, **settings.kafka_client_options()
    )
    await consumer.start()
    try:
        logs = {}
        for topic, partitions in sorted(wanted.items()):
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            while True:  # a topic just made has no leaders for a moment
                try:
                    ends = await consumer.end_offsets(tps)
                    break
                except KafkaError as exc:
                    if time.monotonic() > deadline:
                        raise MirrorError(
                            f"cannot read the end offsets of {topic}: {exc!r}"
                        ) from None
                    await asyncio.sleep(0.2)
            logs[topic] = ChangelogLog(
                topic,
                None if ids is None else ids.get(topic),
                {tp.partition: int(offset) for tp, offset in ends.items()},
            )
        return logs
    finally:
        await consumer.stop()


async def refill(
    store: SqlStore,
    spec: EntitySpec,
    group: str,
    changelog: ChangelogLog,
    writer: ChangelogWriter,
) -> tuple[str, int] | None:
    """Write every row of ``spec`` to ``changelog`` when the rows were not written to it (see
    the module's guarantee); return why and how many entries, or None when nothing was due."""
    loop = asyncio.get_running_loop()

    def entries(row: dict[str, Any]) -> list[Entry]:
        return [Entry(cache_key(spec.key_of(row)), cache_entry(row), None)]

    def run() -> tuple[str, int] | None:
        with store.transaction(f"refill {changelog.topic} from {spec.table.name}") as tx:
            tx.serialize(spec, exclusive=True)  # before reading what is recorded: one refill
            recorded = tx.changelog_id(group, changelog.topic)
            reason = refill_reason(recorded, changelog, tx.has_rows(spec))
            written = 0
            if reason is not None:
                written = write_rows(tx, spec, writer, changelog.topic, entries, loop)
            if changelog.topic_id is not None and recorded != changelog.topic_id:
                tx.note_changelog(group, changelog.topic, changelog.topic_id)
        return None if reason is None else (reason, written)

    return await asyncio.to_thread(run)


def write_rows(
    tx: StoreTransaction,
    spec: EntitySpec,
    writer: ChangelogWriter,
    topic: str,
    entries: Callable[[dict[str, Any]], list[Entry]],
    loop: asyncio.AbstractEventLoop,
) -> int:
    """In ``tx`` (which holds the entity's lock alone), write the ``entries`` of each row to
    ``topic``, a page at a time, each page confirmed by the broker before the next is read
    (called in a thread; the writes run on ``loop``). Return the rows that gave entries."""
    written = 0
    for page in tx.row_pages(spec, REFILL_PAGE):
        due = [entry for row in page for entry in entries(row)]
        if due:
            asyncio.run_coroutine_threadsafe(writer.write(topic, due), loop).result()
            written += sum(1 for row in page if entries(row))
    return written


async def grow_changelog(settings: Settings, topic: str, partitions: int) -> bool:
    """Give the changelog ``topic`` ``partitions`` partitions; return whether this call did
    (False: it had that many already, another worker was first)."""
    from aiokafka.admin import NewPartitions
    from aiokafka.errors import InvalidPartitionsError

    admin = await admin_client(settings)
    try:
        await admin.create_partitions({topic: NewPartitions(partitions)})
    except InvalidPartitionsError:
        return False
    finally:
        await admin.close()
    return True


async def rebuild_moved(
    store: SqlStore, spec: EntitySpec, writer: ChangelogWriter, topic: str, old: int, new: int
) -> int:
    """Write again the entries whose key's partition of ``topic`` moved when it grew from
    ``old`` to ``new`` partitions: each row to its new partition, a deletion to the old one (so
    neither the owner of the old partition nor a count of entries keeps a stale copy). Returns
    the keys moved."""
    loop = asyncio.get_running_loop()

    def entries(row: dict[str, Any]) -> list[Entry]:
        key = cache_key(spec.key_of(row))
        was, now = key_partition(key, old), key_partition(key, new)
        if was == now:
            return []
        return [Entry(key, None, was), Entry(key, cache_entry(row), now)]

    def run() -> int:
        with store.transaction(f"rebuild {topic} from {spec.table.name}") as tx:
            tx.serialize(spec, exclusive=True)
            return write_rows(tx, spec, writer, topic, entries, loop)

    return await asyncio.to_thread(run)
