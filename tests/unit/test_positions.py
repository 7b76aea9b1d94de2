"""Read positions (pure): records admitted in order from where a partition was positioned."""

from __future__ import annotations

from streams.core.positions import (
    Admission,
    Jump,
    ReadPositions,
    Start,
    lost_below_log_start,
    start_offset,
)


def test_an_unpositioned_partition_is_refused() -> None:
    positions = ReadPositions()
    assert positions.admit("p0", 0, 9, positions.epoch) is None


def test_runs_are_admitted_in_order_from_the_positioned_offset() -> None:
    positions = ReadPositions()
    positions.position("p0", 100)
    fetched = positions.epoch
    assert positions.admit("p0", 100, 149, fetched) == Admission(100)
    assert positions.admit("p0", 150, 199, fetched) == Admission(150)
    assert positions.expected("p0") == 200


def test_a_run_fetched_before_the_positioning_is_refused() -> None:
    positions = ReadPositions()
    positions.position("p0", 0)
    before = positions.epoch
    positions.position("p0", 500)  # sought again: what was fetched before is stale
    assert positions.admit("p0", 40, 60, before) is None
    assert positions.admit("p0", 500, 510, positions.epoch) == Admission(500)


def test_records_already_handed_on_are_cut_from_an_overlapping_run() -> None:
    positions = ReadPositions()
    positions.position("p0", 10)
    assert positions.admit("p0", 5, 20, positions.epoch) == Admission(10)
    assert positions.expected("p0") == 21


def test_a_run_starting_past_the_expected_offset_is_a_jump() -> None:
    positions = ReadPositions()
    positions.position("p0", 10)
    assert positions.admit("p0", 40, 45, positions.epoch) == Admission(10, Jump("p0", 10, 40))


def test_forgotten_partitions_are_refused_until_positioned_again() -> None:
    positions = ReadPositions()
    positions.position("p0", 0)
    positions.forget(["p0"])
    assert positions.admit("p0", 0, 1, positions.epoch) is None
    assert positions.positioned() == set()


def test_offsets_the_consumer_stepped_over_count_as_read_once_every_record_is_applied() -> None:
    # A transaction's records at 10..14, its commit marker at 15: the consumer's position is 16.
    positions = ReadPositions()
    positions.position("p0", 10)
    fetched = positions.epoch
    assert positions.admit("p0", 10, 14, fetched) == Admission(10)
    # A jump, checked for retention losses as a run's is (here: none, the log starts at 0).
    assert positions.read_past("p0", 16, fetched) == Jump("p0", 15, 16)
    assert lost_below_log_start(15, 16, log_start=0) == 0
    assert positions.expected("p0") == 16
    assert positions.read_to("p0", 12) == 12  # records 12..14 not applied yet: behind
    assert positions.read_to("p0", 15) == 16  # all applied: the marker is no record to wait for
    # The next run still continues from 15, the offset the store has after record 14.
    assert positions.admit("p0", 16, 20, fetched) == Admission(16, None, 15)
    assert positions.read_to("p0", 15) == 15  # records 16..20 to apply


def test_stepping_over_is_ignored_for_a_partition_positioned_since_the_fetch() -> None:
    positions = ReadPositions()
    positions.position("p0", 10)
    before = positions.epoch
    positions.position("p0", 10)
    assert positions.read_past("p0", 30, before) is None
    assert positions.read_past("p1", 30, positions.epoch) is None  # not positioned
    assert positions.read_past("p0", 10, positions.epoch) is None  # nothing stepped over
    assert positions.expected("p0") == 10 and positions.read_to("p0", 10) == 10
    assert positions.read_to("p1", 7) == 7


def test_lost_records_are_those_below_the_log_start() -> None:
    assert lost_below_log_start(expected=100, delivered=140, log_start=130) == 30
    assert lost_below_log_start(expected=100, delivered=140, log_start=90) == 0  # compacted
    assert lost_below_log_start(expected=100, delivered=140, log_start=500) == 40


def test_reading_starts_at_the_stored_offset_or_the_log_start() -> None:
    assert start_offset(None, None, 0, replay_unconfirmed=False) == Start(0)
    # Nothing applied yet: reading from the log start follows on from nothing stored (0).
    assert start_offset(None, 7, 3, replay_unconfirmed=False) == Start(3, continues=0)
    assert start_offset(50, 40, 0, replay_unconfirmed=False) == Start(50, continues=50)
    # The cache catches up: reading from the group's offset, below the stored one.
    assert start_offset(50, 40, 0, replay_unconfirmed=True) == Start(40, continues=40)
    # Retention took 50..79 (counted): reading from 80 follows on from the stored 50.
    assert start_offset(50, 40, 80, replay_unconfirmed=True) == Start(80, lost=30, continues=40)


def test_each_run_says_which_stored_offset_it_continues_from() -> None:
    positions = ReadPositions()
    # Retention took 50..79 before they were applied: the first run follows on from 50.
    positions.position("p0", 80, continues=50)
    fetched = positions.epoch
    first = positions.admit("p0", 80, 99, fetched)
    assert first is not None and first.continues_from == 50
    # Later runs follow on from the end of the run before, whatever offsets they skip.
    second = positions.admit("p0", 105, 120, fetched)
    assert second is not None and second.continues_from == 100
    positions.position("p0", 121)
    third = positions.admit("p0", 121, 130, positions.epoch)
    assert third is not None and third.continues_from == 121


def test_a_stored_offset_above_the_log_end_belongs_to_another_log() -> None:
    # The topic was created again (or a fresh broker came up): its new log is read whole.
    start = start_offset(105, 105, 0, replay_unconfirmed=True, log_end=57)
    assert start == Start(0, continues=0, replaced=105)
    # The same log (same topic id) lost its tail: what it still holds was applied.
    start = start_offset(105, 90, 0, replay_unconfirmed=False, log_end=57, same_log=True)
    assert start == Start(57, continues=57, replaced=105)
    # A group offset above the end is not used for the cache's replay.
    assert start_offset(40, 80, 0, replay_unconfirmed=True, log_end=60) == Start(40, continues=40)
