"""The recovery watchdog's bookkeeping: a stall rejoins, a second stall in a row exits."""

from __future__ import annotations

from streams.core.recovery import RecoveryProgress


def test_progress_never_counts_as_a_stall() -> None:
    progress = RecoveryProgress(stall_seconds=10)
    for second, remaining in enumerate(range(100, 0, -1)):
        assert progress.observe(remaining, second * 5.0) is None


def test_a_stall_rejoins_and_a_second_one_in_a_row_exits() -> None:
    progress = RecoveryProgress(stall_seconds=10)
    assert progress.observe(50, 0.0) is None
    assert progress.observe(50, 9.0) is None
    assert progress.observe(50, 10.0) == "rejoin"
    assert progress.observe(50, 15.0) is None
    assert progress.observe(50, 20.0) == "exit"


def test_progress_after_a_rejoin_starts_over() -> None:
    progress = RecoveryProgress(stall_seconds=10)
    progress.observe(50, 0.0)
    assert progress.observe(50, 10.0) == "rejoin"
    assert progress.observe(40, 11.0) is None
    assert progress.observe(40, 21.0) == "rejoin"


def test_the_end_of_a_recovery_forgets_it() -> None:
    progress = RecoveryProgress(stall_seconds=10)
    progress.observe(50, 0.0)
    assert progress.observe(None, 5.0) is None
    assert progress.observe(50, 12.0) is None
