"""When a batch leaves the feed: once full, or once the stage it is for wants it; never on a
fixed timer (a record at a low rate is applied as soon as the batch before it is done)."""

from __future__ import annotations

import asyncio
from typing import NamedTuple

from streams.intake.feed import Feed


class Rec(NamedTuple):
    topic: str
    partition: int
    offset: int


def put(feed: Feed, first: int, last: int) -> None:
    feed.put(("t", 0), [Rec("t", 0, o) for o in range(first, last + 1)], first)


async def test_a_partial_batch_waits_while_the_stage_is_busy_and_goes_when_it_is_free() -> None:
    feed = Feed(high_water=1_000)
    wanted = asyncio.Event()  # the SQL stage is busy with the batch before
    put(feed, 0, 2)
    taking = asyncio.create_task(feed.take(10, 0.0, wanted))
    await asyncio.sleep(0)
    put(feed, 3, 4)  # more arrive meanwhile: they join the batch
    await asyncio.sleep(0)
    assert not taking.done()
    wanted.set()
    batch = await asyncio.wait_for(taking, 5)
    assert [r.offset for r in batch] == [0, 1, 2, 3, 4]


async def test_a_full_batch_goes_at_once_even_while_the_stage_is_busy() -> None:
    feed = Feed(high_water=1_000)
    put(feed, 0, 2)
    taking = asyncio.create_task(feed.take(5, 0.0, asyncio.Event()))
    await asyncio.sleep(0)
    put(feed, 3, 9)
    batch = await asyncio.wait_for(taking, 5)
    assert [r.offset for r in batch] == [0, 1, 2, 3, 4]
    assert len(feed) == 5


async def test_a_wanted_batch_goes_with_what_is_there() -> None:
    feed = Feed(high_water=1_000)
    wanted = asyncio.Event()
    wanted.set()
    taking = asyncio.create_task(feed.take(100, 0.0, wanted))
    await asyncio.sleep(0)
    assert not taking.done()  # nothing there yet: it waits for a record
    put(feed, 0, 0)
    batch = await asyncio.wait_for(taking, 5)
    assert [r.offset for r in batch] == [0]


async def test_a_linger_holds_a_wanted_batch_for_more_until_it_passes() -> None:
    feed = Feed(high_water=1_000)
    wanted = asyncio.Event()
    wanted.set()
    put(feed, 0, 0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    batch = await asyncio.wait_for(feed.take(100, 0.05, wanted), 5)
    assert [r.offset for r in batch] == [0]
    assert loop.time() - started >= 0.05
