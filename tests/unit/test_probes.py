"""streams/ops/probes.py: liveness from the event loop's heartbeat, readiness from serving."""

from __future__ import annotations

import asyncio
import time

from streams.ops.probes import STUCK_AFTER, LoopHeartbeat, ProbeAnswer, readiness
from tests.waiting import eventually


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_live_before_the_first_tick_and_while_ticks_are_recent() -> None:
    clock = Clock()
    heartbeat = LoopHeartbeat(interval=1.0, stuck_after=30.0, clock=clock)
    assert heartbeat.liveness() == ProbeAnswer(True)  # not started: the web server comes after
    heartbeat.tick()
    clock.now += 30.0
    assert heartbeat.liveness() == ProbeAnswer(True)


def test_a_heartbeat_silent_longer_than_stuck_after_is_a_503_naming_the_loop() -> None:
    clock = Clock()
    heartbeat = LoopHeartbeat(interval=1.0, stuck_after=30.0, clock=clock)
    heartbeat.tick()
    clock.now += 42.5
    answer = heartbeat.liveness()
    assert (answer.ok, answer.status) == (False, 503)
    assert answer.reason == (
        "the event loop heartbeat has not ticked for 42.5 s (it ticks every 1 s; stuck after 30 s)"
    )
    heartbeat.tick()  # the loop turns again: live again
    assert heartbeat.liveness().status == 200


def test_the_default_threshold_is_well_above_the_tick() -> None:
    heartbeat = LoopHeartbeat()
    assert heartbeat.stuck_after == STUCK_AFTER >= 10 * heartbeat.interval


async def test_the_heartbeat_ticks_on_the_loop_and_a_blocked_loop_stops_it() -> None:
    heartbeat = LoopHeartbeat(interval=0.01, stuck_after=0.2)
    task = asyncio.create_task(heartbeat.run())
    try:
        first = await eventually(lambda: heartbeat.last_tick, what="a first tick", every=0.01)
        await eventually(
            lambda: heartbeat.last_tick, lambda t: t != first, what="a second tick", every=0.01
        )
        assert heartbeat.liveness().ok
        # The loop blocked by a synchronous call on it (the state under test, not a wait): no
        # tick comes meanwhile, and /health, answered when the loop turns, says so.
        time.sleep(0.3)
        answer = heartbeat.liveness()
        assert not answer.ok and "has not ticked for" in answer.reason
        await eventually(
            lambda: heartbeat.liveness().ok, what="ticking again once unblocked", every=0.01
        )
    finally:
        task.cancel()


def test_ready_from_serving_until_stopping() -> None:
    assert readiness(serving=False, stopping=False) == ProbeAnswer(False, "starting")
    assert readiness(serving=True, stopping=False) == ProbeAnswer(True)
    assert readiness(serving=True, stopping=True) == ProbeAnswer(False, "stopping")
    assert readiness(serving=False, stopping=True).status == 503
