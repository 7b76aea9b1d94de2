"""A stage that fails on a batch gives its partitions up to be read again; nothing is stepped over.

The checkpoint's pipeline runs for real here, over an SQLite store (no broker: the cache is a
stand-in whose changelog write fails once, as a bug or a full disk would make it fail).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, NamedTuple

from models.planet import Planet
from models.registry import Registry, build_spec
from models.store import SqlStore
from streams.apply.applied_offsets import AppliedOffsets
from streams.apply.deadletters import DeadLetterWriter
from streams.apply.holds import FAILED
from streams.apply.lane import BatchLane
from streams.apply.sql_applier import SqlApplier
from streams.core.records import SourceRecord
from streams.intake.handoff import Handoff
from streams.settings import Settings
from tests.waiting import eventually

PLANET = build_spec(Planet)
TOPIC = "planet-changed"


class TP(NamedTuple):
    topic: str
    partition: int


class FailingCache:
    """A cached table whose changelog write raises on the ``fail_on``-th batch, once the
    batch after it has committed (so that one is on its way when the failure comes)."""

    def __init__(self, fail_on: int, store: SqlStore, committed_after: int) -> None:
        self.spec = PLANET
        self.changelog = "planet-changelog"
        self.hashed = False
        self.fail_on = fail_on
        self.store = store
        self.committed_after = committed_after
        self.written: list[int] = []

    async def put(self, entries: Any) -> None:
        self.written.append(len(list(entries)))
        if len(self.written) == self.fail_on:
            await eventually(
                lambda: self.store.stored_offsets("g").get((TOPIC, 0)),
                lambda stored: stored == self.committed_after,
                what=f"the batch after it committed (offset {self.committed_after} stored)",
                every=0.01,
            )
            raise RuntimeError("no space left on device")


def records(partition: int, first: int, count: int) -> list[SourceRecord]:
    return [
        SourceRecord(
            TOPIC,
            partition,
            o,
            1_000 + o,
            f"k{o % 7}".encode(),
            json.dumps({"planetUuid": f"k{o % 7}", "planetName": f"n{o}"}).encode(),
        )
        for o in range(first, first + count)
    ]


async def test_a_batch_whose_cache_step_fails_is_read_again_and_not_stepped_over(
    tmp_path: Path,
) -> None:
    store = SqlStore.from_url(f"sqlite:///{tmp_path / 'm.sqlite3'}")
    store.create_tables([PLANET])
    registry = Registry()
    registry.register(Planet)
    mirror = SqlApplier(registry, store, group="g")
    handoff = Handoff(high_water=10_000)
    (feed,) = handoff.add_topic(TOPIC)
    applied = AppliedOffsets()
    cache = FailingCache(fail_on=2, store=store, committed_after=30)
    checkpoint = BatchLane(
        mirror,
        PLANET,
        DeadLetterWriter(Settings()),
        f"{TOPIC}.dlq",
        handoff,
        applied,
        cache,  # type: ignore[arg-type]
    )
    tp = TP(TOPIC, 0)
    handoff.positions.position(tp, 0, 0)
    applied.positioned(tp, 0)
    handoff.fetched_at = handoff.positions.epoch
    running = asyncio.create_task(checkpoint.run(feed, batch_size=10, linger=0))
    try:
        # Three batches of ten: the second's cache step fails once the third has committed.
        for first in (0, 10, 20):
            assert handoff.deliver(tp, records(0, first, 10))
        await eventually(
            lambda: (dict(handoff.held), checkpoint.idle.is_set(), len(feed), cache.written),
            lambda seen: tp in seen[0] and seen[1] and not seen[2],
            what="the partition held, the checkpoint idle and the feed empty",
            every=0.01,
        )
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    # The partition is held and no longer positioned: it is read again from the stored offset
    # (the group's offset, for the cache: the failed batch's start), once the hold ends.
    assert FAILED in handoff.held[tp]
    assert handoff.positions.expected(tp) is None
    # The Kafka offset never passes the batch whose cache step failed, nor does a later one.
    assert applied.next[(TOPIC, 0)] == 10
    # SQL committed all three; the third batch reached the cache step after the failure.
    assert store.stored_offsets("g")[(TOPIC, 0)] == 30
    assert len(cache.written) == 3  # one cache step per batch: the third did reach it
    store.dispose()
