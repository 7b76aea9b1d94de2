"""Staleness (pure): 0 when caught up, the oldest unapplied record's age, a lower bound when
that record is not fetched yet; and where a worker finds that record without reading batches."""

from __future__ import annotations

from typing import NamedTuple

from streams.core.staleness import BEHIND_FLOOR, Head, Staleness, oldest_unapplied
from streams.intake.feed import Feed, heads_of, held_heads

NOW = 1_000_000.0
P = ("planet-changed", 0)


class Rec(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp: int


def test_the_oldest_unapplied_record_is_the_first_head_at_or_after_the_position() -> None:
    heads = [Head(10, 1_000), Head(15, 2_000), Head(20, 3_000)]  # batch, batch, feed
    assert oldest_unapplied(10, heads) == Head(10, 1_000)
    assert oldest_unapplied(12, heads) == Head(15, 2_000)  # first batch committed already
    assert oldest_unapplied(21, heads) is None
    assert oldest_unapplied(0, []) is None


def test_caught_up_reads_zero_and_behind_reads_the_records_age() -> None:
    staleness = Staleness()
    for highwater in (100, 90):  # a high watermark not refreshed yet: caught up too
        caught = staleness.read(P, 100, highwater, None, NOW)
        assert (caught.lag, caught.seconds, caught.exact) == (0, 0.0, True)
    reading = staleness.read(P, 100, 130, Head(100, int((NOW - 42.5) * 1000)), NOW)
    assert (reading.lag, reading.seconds, reading.exact) == (30, 42.5, True)


def test_a_partition_behind_never_reads_zero() -> None:
    staleness = Staleness()
    future = Head(5, int((NOW + 3) * 1000))  # a producer's clock ahead of ours
    assert staleness.read(P, 5, 6, future, NOW).seconds == BEHIND_FLOOR
    other = ("planet-changed", 1)
    assert staleness.read(other, 0, 6, None, NOW).seconds == BEHIND_FLOOR  # first seen now


def test_a_record_seen_once_keeps_counting_while_nothing_is_applied() -> None:
    staleness = Staleness()
    head = Head(50, int((NOW - 10) * 1000))
    staleness.read(P, 50, 60, head, NOW)
    # The partition is held and its records dropped: the same record is still the oldest.
    held = staleness.read(P, 50, 60, None, NOW + 5)
    assert (held.seconds, held.exact) == (15.0, True)
    # Once something is applied, the remembered record says nothing of the next one.
    moved = staleness.read(P, 55, 60, None, NOW + 6)
    assert (moved.seconds, moved.exact) == (BEHIND_FLOOR, False)


def test_an_unfetched_backlog_is_a_lower_bound_from_when_it_was_first_seen() -> None:
    staleness = Staleness()
    assert staleness.read(P, 0, 500, None, NOW).exact is False
    later = staleness.read(P, 0, 500, None, NOW + 7)
    assert (later.seconds, later.exact) == (7.0, False)
    fetched = staleness.read(P, 0, 500, Head(0, int((NOW - 3600) * 1000)), NOW + 8)
    assert (fetched.seconds, fetched.exact) == (3608.0, True)
    assert staleness.read(P, 500, 500, None, NOW + 9).seconds == 0.0
    assert not staleness.known and not staleness.behind_since  # caught up: forgotten


def test_forgetting_a_revoked_partition_starts_it_over() -> None:
    staleness = Staleness()
    staleness.read(P, 0, 5, None, NOW)
    staleness.forget([P])
    assert staleness.read(P, 0, 5, None, NOW + 30).seconds == BEHIND_FLOOR


async def test_a_batch_and_a_feed_name_the_first_record_of_each_partition() -> None:
    feed = Feed(high_water=1_000)
    a, b = ("t", 0), ("t", 1)
    feed.put(a, [Rec("t", 0, o, 100 + o) for o in range(5)], 0)
    feed.put(b, [Rec("t", 1, o, 200 + o) for o in range(3)], 0)
    feed.put(a, [Rec("t", 0, o, 100 + o) for o in range(5, 8)], 5)
    batch = await feed.take(6, linger=0)  # a's first run, and one record of b
    assert {tp: r.offset for tp, r in batch.heads.items()} == {a: 0, b: 0}
    assert batch.heads == heads_of(batch)
    assert {tp: r.offset for tp, r in feed.heads().items()} == {b: 1, a: 5}
    found = [(tp, r.offset) for tp, r in held_heads([batch.heads], feed)]
    assert found == [(a, 0), (b, 0), (b, 1), (a, 5)]


def test_the_store_and_the_broker_tell_a_partitions_staleness() -> None:
    from streams.core.staleness import stored_staleness

    assert stored_staleness(10, 10, None, NOW) == 0.0
    assert stored_staleness(4, 10, int((NOW - 90) * 1000), NOW) == 90.0
    assert stored_staleness(4, 10, None, NOW) is None  # the record did not come in time
    assert stored_staleness(4, 10, int((NOW + 1) * 1000), NOW) == BEHIND_FLOOR
