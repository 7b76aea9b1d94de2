"""A watchdog for the cached tables' recovery: exit when it stops making progress.

Under load, faust-streaming 0.15.3 can leave a worker's table recovery waiting for changelog
records that never come ("No event received for active tp ... since recovery start", for
minutes; seen about once in five runs of three workers with a SIGKILL). The worker then holds
its partitions and applies nothing. Exiting is safe (every batch is one SQL transaction and the
stored offsets say where to resume, exactly as after a crash) and lets the supervisor restart
the worker, which rejoins the group and recovers again.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import faust

log = logging.getLogger(__name__)

#: Exit status of a worker whose table recovery stalled.
RECOVERY_STALLED_EXIT = 3


def register_recovery_watchdog(app: faust.App, stall_seconds: float) -> None:
    """Exit the worker when table recovery makes no progress for ``stall_seconds``."""
    last: dict[str, float | int | None] = {"remaining": None, "since": None}

    async def watch_recovery() -> None:
        if not app.in_recovery:
            last["remaining"] = last["since"] = None
            return
        tables: Any = app.tables  # TableManagerT does not declare its recovery service
        remaining = int(tables.recovery.active_remaining_total())
        now = time.monotonic()
        previous, since = last["remaining"], last["since"]
        if previous is None or since is None or remaining < previous:
            last["remaining"], last["since"] = remaining, now
            return
        if now - since >= stall_seconds:
            message = (
                f"error: cached table recovery made no progress for {stall_seconds:.0f} s "
                f"({remaining} changelog records to go); exiting so that the supervisor "
                "restarts this worker (RECOVERY_STALL_TIMEOUT)"
            )
            log.critical(message)
            print(message, file=sys.stderr, flush=True)
            os._exit(RECOVERY_STALLED_EXIT)

    app.timer(1.0, name=f"{app.conf.id}.recovery-watchdog")(watch_recovery)
