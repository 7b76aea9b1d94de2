"""The hand-off: runs reach their feed in order; full or unpositioned ones are not fetched."""

from __future__ import annotations

from typing import NamedTuple

from streams.intake.handoff import BACKLOG, Handoff


class TP(NamedTuple):
    topic: str
    partition: int


class Rec(NamedTuple):
    topic: str
    partition: int
    offset: int


def run(tp: TP, first: int, last: int) -> list[Rec]:
    return [Rec(tp.topic, tp.partition, o) for o in range(first, last + 1)]


async def test_admitted_runs_come_out_as_batches_in_partition_order() -> None:
    handoff = Handoff(high_water=1_000)
    (feed,) = handoff.add_topic("t")
    a, b = TP("t", 0), TP("t", 1)
    for tp in (a, b):
        handoff.positions.position(tp, 0)
    handoff.fetched_at = handoff.positions.epoch
    assert handoff.deliver(a, run(a, 0, 4)) and handoff.deliver(b, run(b, 0, 2))
    assert handoff.deliver(a, run(a, 3, 6))  # overlap: 3 and 4 were handed on already
    batch = await feed.take(100, linger=0)
    assert [(r.partition, r.offset) for r in batch if r.partition == 0] == [
        (0, o) for o in range(7)
    ]
    assert [r.offset for r in batch if r.partition == 1] == [0, 1, 2]


async def test_a_full_feed_holds_its_partition_until_taken_from() -> None:
    handoff = Handoff(high_water=5)
    (feed,) = handoff.add_topic("t")
    a = TP("t", 0)
    handoff.positions.position(a, 0)
    handoff.fetched_at = handoff.positions.epoch
    handoff.deliver(a, run(a, 0, 9))
    assert handoff.held == {a: {BACKLOG: None}}
    assert handoff.unfetchable([a]) == {a}
    assert len(await feed.take(8, linger=0)) == 8
    assert a not in handoff.held and handoff.unfetchable([a]) == set()


def test_unpositioned_partitions_are_not_fetched_and_their_runs_are_refused() -> None:
    handoff = Handoff(high_water=100)
    handoff.add_topic("t")
    a = TP("t", 0)
    other = TP("changelog", 0)
    assert handoff.unfetchable([a, other]) == {a}
    assert handoff.deliver(a, run(a, 0, 3)) is False


def test_a_run_dropped_while_unpositioned_is_remembered_for_the_positioner() -> None:
    # A fetch issued before a rebalance can return after the positioner sought the partition:
    # its records, from the new position, are consumed; the partition must be sought again.
    handoff = Handoff(high_water=100)
    handoff.add_topic("t")
    a = TP("t", 0)
    handoff.positions.position(a, 0)
    handoff.fetched_at = handoff.positions.epoch
    handoff.forget([a])
    handoff.fetched_past.clear()  # the positioner starts positioning it
    assert handoff.deliver(a, run(a, 5, 9)) is False
    assert handoff.fetched_past == {a}


def test_forgetting_a_partition_marks_it_moved_on() -> None:
    # A fetch returning while the flow is stopped is forgotten: a positioning under way is
    # redone.
    handoff = Handoff(high_water=100)
    handoff.add_topic("t")
    a, other = TP("t", 0), TP("changelog", 0)
    handoff.forget([a, other])
    assert handoff.fetched_past == {a}


def test_forgetting_drops_what_waits() -> None:
    handoff = Handoff(high_water=100)
    (feed,) = handoff.add_topic("t")
    a, b = TP("t", 0), TP("t", 1)
    for tp in (a, b):
        handoff.positions.position(tp, 0)
    handoff.fetched_at = handoff.positions.epoch
    handoff.deliver(a, run(a, 0, 3))
    handoff.deliver(b, run(b, 0, 3))
    handoff.forget([a])
    assert len(feed) == 4 and feed.backlog(a) == 0


def test_timed_holds_end_by_themselves() -> None:
    handoff = Handoff(high_water=100)
    a = TP("t", 0)
    handoff.hold(a, "dead_letter", until=10.0)
    handoff.hold(a, BACKLOG)
    assert handoff.release_expired(9.0) == []
    assert handoff.release_expired(11.0) == [] and handoff.held == {a: {BACKLOG: None}}
    handoff.release(a, BACKLOG)
    assert handoff.held == {}
