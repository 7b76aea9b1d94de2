"""The delivery guard: each partition's records admitted in order from where it was sought."""

from __future__ import annotations

from streams.delivery import GAP_CONFIRMATIONS, DeliveryGuard, Verdict


def test_nothing_is_admitted_before_the_partition_is_sought() -> None:
    guard = DeliveryGuard()
    assert guard.admit("p0", 0, now=0.0) is Verdict.DROP
    guard.sought("p0", 5, now=1.0)
    assert [guard.admit("p0", o, now=2.0) for o in (5, 6, 7)] == [Verdict.ADMIT] * 3
    assert guard.expected_offset("p0") == 8


def test_records_before_the_expected_offset_are_dropped() -> None:
    guard = DeliveryGuard()
    guard.sought("p0", 10, now=0.0)
    assert guard.admit("p0", 9, now=0.0) is Verdict.DROP
    assert guard.admit("p0", 10, now=0.0) is Verdict.ADMIT
    assert guard.admit("p0", 10, now=0.0) is Verdict.DROP  # delivered twice


def test_a_stale_later_run_is_held_back_and_the_partition_sought_again() -> None:
    guard = DeliveryGuard()
    guard.sought("p0", 100, now=0.0)
    # Records from a stale position further on arrive first: seek once, drop the rest.
    assert guard.admit("p0", 600, now=0.0) is Verdict.SEEK
    assert [guard.admit("p0", o, now=0.0) for o in (601, 602)] == [Verdict.DROP] * 2
    # Then the partition is read again from 100, in order.
    assert guard.admit("p0", 100, now=0.0) is Verdict.ADMIT
    assert guard.admit("p0", 101, now=0.0) is Verdict.ADMIT


def test_a_real_gap_is_believed_when_the_same_record_comes_first_after_seeking() -> None:
    guard = DeliveryGuard()
    guard.sought("p0", 100, now=0.0)  # 100 and 101 are transaction markers, say
    verdicts = [guard.admit("p0", 102, now=0.0) for _ in range(GAP_CONFIRMATIONS)]
    assert verdicts == [Verdict.SEEK] * (GAP_CONFIRMATIONS - 1) + [Verdict.ADMIT]
    assert guard.expected_offset("p0") == 103


def test_forgotten_partitions_are_held_until_sought_again() -> None:
    guard = DeliveryGuard()
    guard.sought("p0", 3, now=0.0)
    guard.forget(["p0"])
    assert guard.admit("p0", 3, now=0.0) is Verdict.DROP


def test_a_partition_behind_its_end_without_progress_is_stalled() -> None:
    guard = DeliveryGuard()
    guard.sought("behind", 10, now=0.0)
    guard.sought("caught-up", 20, now=0.0)
    guard.sought("moving", 30, now=0.0)
    assert guard.admit("moving", 30, now=4.0) is Verdict.ADMIT
    ends = {"behind": 50, "caught-up": 20, "moving": 60}
    assert guard.stalled(now=5.0, after=5.0, ends=ends) == ["behind"]
    guard.resought("behind", now=5.0)
    assert guard.stalled(now=6.0, after=5.0, ends=ends) == []
