"""What every measured path is held to: one clock, one peak-RSS reading, one table check.

The clock (the same for the worker and the peers): it starts when the path's consumer
group is first seen ``Stable`` (partitions assigned; polled every 50 ms) and stops when
every partition's *applied* offset reaches the topic's end offset. Applied means durably
written by that path: the offset the worker stores in the same SQL transaction as the rows,
or the group offset a peer commits to Kafka only after its sink has written the rows. Those
are cheap to read (one indexed query, one offsets request); the table itself is read once,
at the end, for the check. Over the same window: the CPU each part of the pipeline used
(``bench/cpu.py``) and the applied offsets sampled at each poll (for the plots).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson
from sqlalchemy import create_engine, text

from bench import procfs

if TYPE_CHECKING:
    from bench.cpu import CpuCost
    from bench.launch import RunningPath

POLL_SECONDS = 0.05
#: A path that applies nothing for this long has failed (a dead task, a stuck consumer).
STALL_SECONDS = 120.0


@dataclass(frozen=True, slots=True)
class Event:
    """One record to produce."""

    key: str
    """Record key, the entity uuid."""
    value: bytes | None
    """Record value; None is a tombstone."""


@dataclass(frozen=True, slots=True)
class CatchUp:
    """How long a path took from assignment to caught up, and what it cost."""

    seconds: float
    """First ``Stable`` group state to every applied offset at the end offset."""
    startup_s: float
    """Process launch to first ``Stable`` group state."""
    peak_rss_mb: float
    """Largest peak resident set of the path's process trees (see :class:`TreeRss`)."""
    cpu: CpuCost
    """CPU each part used over the window."""
    progress: tuple[tuple[float, int], ...]
    """(seconds since the clock started, events applied) at each poll."""

    def figures(self, events: int) -> dict[str, float]:
        """Return the bench's per-path figures for ``events`` events."""
        return {
            "events_per_s": events / self.seconds,
            "seconds": self.seconds,
            "startup_s": self.startup_s,
            "peak_rss_mb": self.peak_rss_mb,
            # A part not known (a server restarted in the window) is left out.
            **{
                f"cpu_us_{part}": us
                for part, us in self.cpu.us_per_event(events).items()
                if us is not None
            },
        }


class TreeRss:
    """Peak RSS of a process and its descendants: the sum of each one's own peak (VmHWM).

    Exact for a single process (the worker, Quix, the Connect JVM are each one); an upper
    bound when several processes peak at different moments.
    """

    def __init__(self, root: int) -> None:
        self._root = root
        self._peaks: dict[int, int] = {}

    def sample(self) -> None:
        """Read VmHWM of every live process in the tree now."""
        for pid in procfs.process_tree(self._root):
            kib = procfs.status_kib(pid, "VmHWM:")
            if kib is not None:
                self._peaks[pid] = max(self._peaks.get(pid, 0), kib)

    @property
    def peak_mb(self) -> float:
        return sum(self._peaks.values()) / 1024


async def catch_up(
    path: RunningPath, ends: Mapping[int, int], *, stall: float = STALL_SECONDS
) -> CatchUp:
    """Poll ``path`` until its applied offsets add up to ``ends``'; raise if it dies or stalls."""
    progress, progress_at = -1, time.monotonic()
    while not await path.stable():
        path.check()
        if time.monotonic() - progress_at > stall:
            raise TimeoutError(f"no partition assigned for {stall:.0f} s; see {path.logs}")
        await asyncio.sleep(POLL_SECONDS)
    stable_at = time.monotonic()
    before = path.cpu.read()
    if sum((await path.applied()).values()) > 0:
        # Applied before the start was seen: a clock started now would flatter the path.
        raise RuntimeError(f"the clock's start was missed (already applying); see {path.logs}")
    samples: list[tuple[float, int]] = []
    progress_at = stable_at
    total = sum(ends.values())
    while True:
        path.check()
        # Summed: a forwarding worker's offsets are those of its repartition topic, whose
        # partitions hold other counts; an applied offset never passes its end offset.
        applied = min(sum((await path.applied()).values()), total)
        now = time.monotonic()
        samples.append((now - stable_at, applied))
        if applied >= total:
            cost = path.cpu.read() - before
            path.sample_rss()
            startup = stable_at - path.launched_at
            return CatchUp(now - stable_at, startup, path.peak_rss_mb, cost, tuple(samples))
        if applied != progress:
            progress, progress_at = applied, now
        if now - progress_at > stall:
            raise TimeoutError(f"no offset applied for {stall:.0f} s; see {path.logs}")
        await asyncio.sleep(POLL_SECONDS)


class NewestState:
    """The rows a correct mirror ends with, kept as events go by: each key's newest event."""

    def __init__(self) -> None:
        self.rows: dict[str, str] = {}

    def add(self, event: Event) -> None:
        """Take ``event`` as the newest of its key (a delete or a tombstone drops the key)."""
        body = orjson.loads(event.value) if event.value is not None else None
        if body is None or body.get("changeType") == "DELETED":
            self.rows.pop(event.key, None)
        else:
            self.rows[event.key] = body["planetName"]


def newest_state(events: Iterable[Event]) -> dict[str, str]:
    """The rows a correct mirror ends with: each key's newest event, deletes removed."""
    state = NewestState()
    for event in events:
        state.add(event)
    return state.rows


def table_errors(db_url: str, live_rows_sql: str, expected: Mapping[str, str]) -> int:
    """Count the keys whose row (``uuid``, ``name`` from ``live_rows_sql``) is not as expected."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            actual = {str(k): str(v) for k, v in conn.execute(text(live_rows_sql))}
    finally:
        engine.dispose()
    keys = expected.keys() | actual.keys()
    return sum(1 for k in keys if expected.get(k) != actual.get(k))
