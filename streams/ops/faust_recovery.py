"""The last resort when a cached table's recovery stalls (workaround 8).

Workarounds of faust-streaming 0.15.3, numbered across the ``faust_*`` modules (their index:
docs/internals.md, "Faust's workarounds").

8. **A table recovery can stall for good** (faust-streaming/faust#74, #176: "No event received
   for active tp ... since recovery start"): :func:`recovery_watchdog` rejoins the group, then
   exits for the supervisor (docs/faust-0.15.3-rebalance-analysis.md, section 1.5). No test
   makes the stall happen on demand; ``tests/unit/test_recovery_watch.py`` tests its steps.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable

import faust

from streams.core.recovery import RecoveryProgress
from streams.intake.faust_consumer import request_rejoin
from streams.ops import metrics
from tables.faust_store import recovery_remaining

log = logging.getLogger(__name__)


#: Exit status of a worker whose table recovery stalled twice in a row.
RECOVERY_STALLED_EXIT = 3


def recovery_watchdog(app: faust.App, stall_seconds: float) -> Callable[[], Awaitable[None]]:
    """Return the check to run every second: rejoin, then exit, after ``stall_seconds`` stalls.

    A last resort (workaround 8): a recovery that makes no progress for RECOVERY_STALL_TIMEOUT
    is counted (``mirror_recovery_stalls_total``) and the worker asks its group to rebalance,
    which cleared the stall in under 100 ms when it was seen; if the next recovery stalls too,
    the worker exits with status 3 for its supervisor to restart it. Exiting is safe: every
    batch is one SQL transaction and the stored offsets say where to resume. Meanwhile the SQL
    mirror goes on; only reads by key of the recovering partitions answer 503.
    """
    progress = RecoveryProgress(stall_seconds)

    async def watch_recovery() -> None:
        remaining = recovery_remaining(app)
        action = progress.observe(remaining, time.monotonic())
        if action is None:
            return
        metrics.RECOVERY_STALLS.inc()
        if action == "rejoin":
            log.error(
                "cached table recovery made no progress for %.0f s (%d changelog records to "
                "go); rejoining the group (RECOVERY_STALL_TIMEOUT)",
                stall_seconds,
                remaining,
            )
            await request_rejoin(app.consumer)
            return
        message = (
            f"error: cached table recovery made no progress for {stall_seconds:.0f} s "
            f"({remaining} changelog records to go), again after rejoining the group; exiting "
            "so that the supervisor restarts this worker (RECOVERY_STALL_TIMEOUT)"
        )
        log.critical(message)
        print(message, file=sys.stderr, flush=True)
        os._exit(RECOVERY_STALLED_EXIT)

    return watch_recovery
