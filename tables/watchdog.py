"""A watchdog for the cached tables' recovery, a last resort: rejoin, then exit, on a stall.

faust-streaming 0.15.3 could leave a worker's table recovery waiting for changelog records that
never came ("No event received for active tp ... since recovery start", for minutes; about once
in five runs of three workers with a SIGKILL, before the mirrored topics left Faust's stream
path: docs/faust-0.15.3-rebalance-analysis.md, section 1.5). A fresh rebalance cleared it in
under 100 ms. So a recovery that makes no progress for RECOVERY_STALL_TIMEOUT is counted
(``mirror_recovery_stalls_total``) and the worker asks its group to rebalance; if the next
recovery stalls too, the worker exits with status 3 for its supervisor to restart it. Exiting
is safe: every batch is one SQL transaction and the stored offsets say where to resume.

Meanwhile the SQL mirror goes on (it does not wait for table recovery); only reads by key of
the recovering partitions answer 503.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable

import faust

from streams import metrics
from streams.core.recovery import RecoveryProgress
from streams.faust_bridge import recovery_remaining, request_rejoin

log = logging.getLogger(__name__)

#: Exit status of a worker whose table recovery stalled twice in a row.
RECOVERY_STALLED_EXIT = 3


def recovery_watchdog(app: faust.App, stall_seconds: float) -> Callable[[], Awaitable[None]]:
    """Return the check to run every second: rejoin, then exit, after ``stall_seconds`` stalls."""
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
