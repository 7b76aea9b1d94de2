"""The hand-off between the consumer and one entity's agent: fetched records, in batches.

The consumer puts each fetched run of a partition's records here as one item (no per-record
work); the agent takes up to a batch of records at a time, across partitions, each partition's
records in order. A feed reports when a partition's backlog passes its high-water mark, so the
consumer stops fetching that partition until the agent has caught up (back-pressure without
stopping the other partitions or topics).
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from streams.core.records import partition_key


class FeedBatch(list[Any]):
    """Records taken from a feed in one batch, with the first record of each partition and
    the stored offset each partition's records continue from."""

    __slots__ = ("heads", "starts")

    def __init__(self) -> None:
        super().__init__()
        self.heads: dict[Hashable, Any] = {}
        """The first (oldest) record of each partition in the batch: staleness reads these,
        never the whole batch."""
        self.starts: dict[Hashable, int] = {}
        """The offset stored with the data that each partition's records in the batch follow
        on (``streams.core.positions.Admission``): its transaction checks it."""


def heads_of(records: Iterable[Any]) -> dict[Hashable, Any]:
    """Return the first record of each partition of ``records`` (one pass; off the hot path)."""
    heads: dict[Hashable, Any] = {}
    for record in records:
        heads.setdefault(partition_key(record), record)
    return heads


def held_heads(
    batches: Iterable[Mapping[Hashable, Any]], feed: Feed | None
) -> Iterator[tuple[Hashable, Any]]:
    """Yield the first record of each partition in each of ``batches`` (their heads, oldest
    batch first), then in ``feed``: where a lane's unapplied records are, oldest first."""
    for heads in batches:
        yield from heads.items()
    if feed is not None:
        yield from feed.heads().items()


class Feed:
    """Runs of fetched records of one topic waiting for its agent, in the order they came."""

    def __init__(
        self,
        high_water: int,
        on_backlog: Callable[[Hashable, bool], None] = lambda tp, full: None,
    ) -> None:
        self.high_water = high_water
        """Records of one partition waiting here above which it is reported full."""
        self._on_backlog = on_backlog
        self._runs: deque[tuple[Hashable, Sequence[Any], int]] = deque()
        """Each run: its partition, its records, and the stored offset it continues from."""
        self._size = 0
        self._backlog: Counter[Hashable] = Counter()
        self._full: set[Hashable] = set()
        self._arrived = asyncio.Event()

    def __len__(self) -> int:
        return self._size

    def backlog(self, partition: Hashable) -> int:
        """Count the records of ``partition`` waiting here."""
        return self._backlog[partition]

    def heads(self) -> dict[Hashable, Any]:
        """Return the first waiting record of each partition (one look per run, not record)."""
        heads: dict[Hashable, Any] = {}
        for partition, records, _ in self._runs:
            if partition not in heads:
                heads[partition] = records[0]
        return heads

    def put(self, partition: Hashable, records: Sequence[Any], continues: int) -> None:
        """Append one fetched run of ``partition``'s records (in offset order), which follow
        on from the stored offset ``continues``."""
        if not records:
            return
        self._runs.append((partition, records, continues))
        self._size += len(records)
        self._backlog[partition] += len(records)
        if self._backlog[partition] > self.high_water and partition not in self._full:
            self._full.add(partition)
            self._on_backlog(partition, True)
        self._arrived.set()

    def drop(self, partitions: Iterable[Hashable]) -> Counter[Hashable]:
        """Remove every waiting record of ``partitions`` (revoked, or held); return how many
        of each."""
        gone = set(partitions)
        dropped: Counter[Hashable] = Counter()
        if not gone:
            return dropped
        kept: deque[tuple[Hashable, Sequence[Any], int]] = deque()
        for run in self._runs:
            if run[0] in gone:
                dropped[run[0]] += len(run[1])
            else:
                kept.append(run)
        self._runs = kept
        self._size -= dropped.total()
        for partition in gone:
            self._backlog.pop(partition, None)
            self._release(partition)
        return dropped

    async def take(
        self, max_records: int, linger: float = 0.0, wanted: asyncio.Event | None = None
    ) -> FeedBatch:
        """Wait for records, then return up to ``max_records`` of them, oldest runs first.

        The batch goes as soon as it is full, or as soon as the step it is for waits for
        work (``wanted`` set, or no ``wanted`` given): at a low rate a record is applied as soon
        as the batch before it is done, and under a backlog the batches are full. Records that
        arrived while the batch before was applied have waited already. With ``linger``, a
        batch that is not full waits up to that long after its first record for more, even
        when the step wants it (fewer, larger transactions at low rates, for a later copy).
        """
        while not self._size:
            self._arrived.clear()
            await self._arrived.wait()
        if self._size >= max_records:
            return self._pop(max_records)
        loop = asyncio.get_running_loop()
        lingered_until = loop.time() + linger
        while self._size < max_records:
            remaining = lingered_until - loop.time()
            if remaining <= 0 and (wanted is None or wanted.is_set()):
                break
            self._arrived.clear()
            waits = [asyncio.ensure_future(self._arrived.wait())]
            if remaining <= 0 and wanted is not None:
                waits.append(asyncio.ensure_future(wanted.wait()))
            try:
                await asyncio.wait(
                    waits,
                    timeout=remaining if remaining > 0 else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                for waiting in waits:
                    waiting.cancel()
        return self._pop(max_records)

    def _pop(self, max_records: int) -> FeedBatch:
        batch = FeedBatch()
        heads = batch.heads
        starts = batch.starts
        while self._runs and len(batch) < max_records:
            partition, records, continues = self._runs[0]
            room = max_records - len(batch)
            if len(records) <= room:
                self._runs.popleft()
                taken = records
            else:
                taken = records[:room]
                self._runs[0] = (partition, records[room:], taken[-1].offset + 1)
            batch.extend(taken)
            self._backlog[partition] -= len(taken)
            if partition not in heads:
                heads[partition] = taken[0]
                starts[partition] = continues
        self._size -= len(batch)
        for partition in heads:
            if self._backlog[partition] <= 0:
                del self._backlog[partition]
            if self._backlog[partition] <= self.high_water:
                self._release(partition)
        return batch

    def _release(self, partition: Hashable) -> None:
        if partition in self._full:
            self._full.discard(partition)
            self._on_backlog(partition, False)
