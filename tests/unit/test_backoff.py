"""The one retry rule (streams.core.backoff): doubling to a ceiling, each wait spread."""

from __future__ import annotations

import pytest

from streams.core.backoff import Backoff


def test_waits_double_from_the_first_up_to_the_ceiling_without_jitter() -> None:
    backoff = Backoff(first=0.5, ceiling=4.0, jitter=0.0)
    assert [backoff.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_a_success_starts_again_from_the_first_wait() -> None:
    backoff = Backoff(first=0.5, ceiling=30.0, jitter=0.0)
    backoff.next()
    backoff.next()
    backoff.reset()
    assert backoff.next() == 0.5


def test_a_failure_no_retry_fixes_waits_the_longest_and_doubles_from_there() -> None:
    backoff = Backoff(first=0.5, ceiling=30.0, jitter=0.0)
    assert backoff.longest() == 30.0
    assert backoff.next() == 30.0


@pytest.mark.parametrize(("draw", "expected"), [(0.0, 0.8), (0.5, 1.0), (1.0, 1.2)])
def test_each_wait_is_spread_within_the_jitter(draw: float, expected: float) -> None:
    backoff = Backoff(first=1.0, ceiling=30.0, jitter=0.2, draw=lambda: draw)
    assert backoff.next() == pytest.approx(expected)


def test_workers_failing_together_do_not_wait_alike() -> None:
    waits = {round(Backoff().next(), 6) for _ in range(50)}
    assert len(waits) > 40
    assert all(0.4 <= wait <= 0.6 for wait in waits)
