"""What ``GET /health`` and ``GET /ready`` decide, as Kubernetes means them.

Liveness (``/health``): the process is healthy, its event loop turning. A blocked loop answers
no request at all, which a probe's timeout catches; a loop that turns only now and then, or a
heartbeat that stopped, is caught here: :class:`LoopHeartbeat` ticks every second, and
``/health`` answers 503 naming how long the loop has been stuck once the last tick is older
than :data:`STUCK_AFTER`.

Readiness (``/ready``): the worker serves its HTTP API, answering reads or forwarding them to
the key's owner: from its web server's start until it begins to stop. Owning partitions, a
rebalance and a table recovery do not count: a replica beyond the partition count forwards
every read, and a read that meets a rebalance or a recovery answers 503 with ``Retry-After``
for its key alone (``GET /partitions`` shows that state).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Seconds between two ticks of the heartbeat.
TICK_INTERVAL = 1.0
#: Seconds without a tick after which the loop counts as stuck: far longer than any step the
#: worker takes on its loop should (SQL runs in threads), and than the probe's own timeout.
STUCK_AFTER = 30.0


@dataclass(frozen=True, slots=True)
class ProbeAnswer:
    """A probe's verdict: 200 when ``ok``, else 503 with ``reason``."""

    ok: bool
    """Whether the probe passes."""
    reason: str = ""
    """Why it does not, in words (empty when it does)."""

    @property
    def status(self) -> int:
        """The HTTP status the probe answers with."""
        return 200 if self.ok else 503


class LoopHeartbeat:
    """Ticks on the event loop; tells how long ago it last did.

    A tick is a task waking from ``asyncio.sleep``: ticks stop coming while the loop is
    blocked (a synchronous call on it, a starved loop) and once the task has died.
    """

    def __init__(
        self,
        interval: float = TICK_INTERVAL,
        stuck_after: float = STUCK_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.stuck_after = stuck_after
        self.clock = clock
        self.last_tick: float | None = None
        """When the heartbeat last ticked (``clock`` time); None before its first tick."""

    def tick(self) -> None:
        """Note that the loop is turning now."""
        self.last_tick = self.clock()

    async def run(self) -> None:
        """Tick every ``interval`` seconds, for as long as the task runs."""
        while True:
            self.tick()
            await asyncio.sleep(self.interval)

    def liveness(self) -> ProbeAnswer:
        """Answer ``/health``: stuck once the last tick is older than ``stuck_after``."""
        if self.last_tick is None:
            return ProbeAnswer(True)  # not started yet: the web server starts after it
        silent = self.clock() - self.last_tick
        if silent <= self.stuck_after:
            return ProbeAnswer(True)
        return ProbeAnswer(
            False,
            f"the event loop heartbeat has not ticked for {silent:.1f} s (it ticks every "
            f"{self.interval:g} s; stuck after {self.stuck_after:g} s)",
        )


def readiness(serving: bool, stopping: bool) -> ProbeAnswer:
    """Answer ``/ready``: ready from the web server's start (``serving``) until the worker
    begins to stop, whatever its partitions, rebalances and recoveries."""
    if stopping:
        return ProbeAnswer(False, "stopping")
    if not serving:
        return ProbeAnswer(False, "starting")
    return ProbeAnswer(True)
