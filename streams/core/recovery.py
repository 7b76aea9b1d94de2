"""When a cached table's recovery counts as stalled (pure): no progress for a while."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class RecoveryProgress:
    """What the watchdog saw of the current recovery (pure bookkeeping, no I/O)."""

    stall_seconds: float
    remaining: int | None = None
    since: float | None = None
    rejoined: bool = False
    """A stall made the worker rejoin its group; a second stall in a row exits."""

    def observe(self, remaining: int | None, now: float) -> str | None:
        """Note the records left to recover (None: not recovering); return "rejoin" or "exit"
        when the recovery has made no progress for ``stall_seconds``."""
        if remaining is None:
            self.remaining = self.since = None
            return None
        if self.remaining is not None and remaining < self.remaining:
            self.rejoined = False  # progress: a later stall starts over
        if self.since is None or self.remaining is None or remaining < self.remaining:
            self.remaining, self.since = remaining, now
            return None
        if now - self.since < self.stall_seconds:
            return None
        self.since = now
        if self.rejoined:
            return "exit"
        self.rejoined = True
        return "rejoin"
