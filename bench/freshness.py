"""Freshness under a steady load: how long from the produce call to the row readable in SQL.

A path is started on a topic of its own and caught up first; then a producer paced at a
fixed rate writes the steady mix (cycled from a pool generated beforehand, so generating
costs nothing while timed) for a fixed time. Every 100 ms one of the produced events is a
*marker*: a CREATED of a new entity whose name carries its number. A thread polls the path's
table every 5 ms for the pending markers (``WHERE uuid = ANY(...)``, the primary key) and
notes when each is first readable; its latency is from just before the produce call that
carried it to the start of the query that saw it.

**Sustained rate.** Phases run at rising rates, the fixed freshness rates (20 s each)
among the ladder's steps (10 s each). A path *falls behind* at a rate when the median
latency of the markers of the phase's last second exceeds the median of the first phase
(its freshness at the lowest rate) by more than ``BEHIND_MARGIN`` (1 s): a path applying
10 % slower than the rate gains a second of backlog in a 10-s step. A step whose oldest
pending marker is ``CUT_AFTER`` (5 s) past that is cut short (it has fallen behind). The
highest rate below the first that falls behind is the rate the path sustains; after the
first fall the ladder stops, and only the fixed rates still to come are run. Between phases
the path drains its backlog (every marker seen, every applied offset at the end).
"""

from __future__ import annotations

import asyncio
import math
import random
import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from bench import database
from bench.launch import RunningPath
from bench.measure import Event, NewestState
from bench.producer import RecordWriter
from bench.workload import marker_event

MARKER_EVERY = 0.1
POLL_EVERY = 0.005
TICK = 0.005
BEHIND_MARGIN = 1.0
CUT_AFTER = 5.0
DRAIN_TIMEOUT = 240.0
#: A phase whose producer reached less than this share of its rate measured the producer.
PRODUCER_SHORTFALL = 0.95


@dataclass(frozen=True, slots=True)
class Plan:
    """The rates and lengths of a freshness run."""

    fixed_rates: tuple[int, ...]
    """Freshness rates, reported with p50 / p99; always run, never cut short."""
    fixed_seconds: float
    ladder: tuple[int, ...]
    """Further rates stepped through to find the highest sustained one."""
    step_seconds: float

    def phases(self) -> list[tuple[int, float, bool]]:
        """(rate, seconds, fixed) in the order they run: rising rates."""
        fixed = set(self.fixed_rates)
        rates = sorted(fixed | set(self.ladder))
        return [
            (r, self.fixed_seconds if r in fixed else self.step_seconds, r in fixed) for r in rates
        ]


@dataclass(frozen=True, slots=True)
class Phase:
    """What one paced phase measured."""

    rate: int
    seconds: float
    fixed: bool
    produced: int
    achieved_rate: float
    latencies_ms: tuple[float, ...]
    """Each seen marker's latency, in produced order."""
    produced_s: tuple[float, ...]
    """When each seen marker was produced, seconds into the phase (beside latencies_ms)."""
    markers: int
    last_second_ms: float
    """Median latency of the markers of the phase's last second."""
    cut_short: bool
    path_cpu_us: float
    """The path's CPU per produced event over the phase."""

    def percentile(self, q: float) -> float:
        """Return the ``q`` quantile (0..1) of the latencies in ms (nearest rank)."""
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    @property
    def producer_short(self) -> bool:
        return not self.cut_short and self.achieved_rate < PRODUCER_SHORTFALL * self.rate


@dataclass
class Result:
    """A path's freshness run: its phases and the highest rate it sustained."""

    phases: list[Phase] = field(default_factory=list)
    sustained: int | None = None
    """Highest rate before the first it fell behind at; None if it fell behind at the first."""
    fell_behind_at: int | None = None
    """First rate it fell behind at; None if it kept up with every rate."""
    producer_limited: bool = False
    """The ladder stopped because the producer could not reach a rate (not the path)."""
    expected: NewestState = field(default_factory=NewestState)

    def phase(self, rate: int) -> Phase | None:
        return next((p for p in self.phases if p.rate == rate), None)


class MarkerPoll:
    """A thread noting when each pending marker's row is first readable."""

    def __init__(self, db_url: str, table: str) -> None:
        self._conn = database.connect(db_url, autocommit=True)
        self._sql = f"SELECT uuid FROM {table} WHERE uuid = ANY(%s)"
        self._lock = threading.Lock()
        self._pending: dict[str, float] = {}
        self.seen: dict[str, float] = {}
        """Marker key -> latency in seconds."""
        self.error: Exception | None = None
        """Why the poll stopped, if it failed."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="marker-poll", daemon=True)
        self._thread.start()

    def produced(self, key: str, at: float) -> None:
        with self._lock:
            self._pending[key] = at

    def oldest_pending_age(self, now: float) -> float:
        with self._lock:
            return now - min(self._pending.values()) if self._pending else 0.0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _run(self) -> None:
        try:
            with self._conn.cursor() as cursor:
                while not self._stop.wait(POLL_EVERY):
                    with self._lock:
                        keys = list(self._pending)
                    if not keys:
                        continue
                    asked = time.monotonic()
                    cursor.execute(self._sql, (keys,))
                    found = [row[0] for row in cursor.fetchall()]
                    with self._lock:
                        for key in found:
                            self.seen[key] = asked - self._pending.pop(key)
        except Exception as exc:  # said by the drain, rather than waiting out its timeout
            self.error = exc

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._conn.close()


class Session:
    """One path's freshness run: the producer's place in the pool, the markers, the state."""

    def __init__(
        self,
        path: RunningPath,
        *,
        writer: RecordWriter,
        topic: str,
        ends: Callable[[], Awaitable[Mapping[int, int]]],
        pool: Sequence[Event],
        encode: Callable[[Event], Sequence[Event]],
        expected: NewestState,
        seed: int,
    ) -> None:
        self._path = path
        self._writer = writer
        self._topic = topic
        self._ends = ends
        self._encode = encode
        self._encoded = [encode(e) for e in pool]  # before the clock: encoding costs
        self._rows = [_row(e) for e in pool]
        self._cursor = 0
        self._rng = random.Random(f"markers {seed}")  # keys apart from the pool's
        self.result = Result(expected=expected)

    async def run(self, plan: Plan, poll: MarkerPoll, on_phase: Callable[[Phase], None]) -> Result:
        """Run ``plan``'s phases, judging each as it ends."""
        for rate, seconds, fixed in plan.phases():
            if (self.result.fell_behind_at or self.result.producer_limited) and not fixed:
                continue
            phase = await self._phase(poll, rate, seconds, fixed)
            self.result.phases.append(phase)
            on_phase(phase)
            _judge(self.result, phase)
        return self.result

    def _next_events(self, count: int) -> list[Event]:
        """The records of the pool's next ``count`` events, noted in the expected state."""
        expected = self.result.expected.rows
        chunk = []
        for _ in range(count):
            chunk.extend(self._encoded[self._cursor])
            key, name = self._rows[self._cursor]
            if name is None:
                expected.pop(key, None)
            else:
                expected[key] = name
            self._cursor = (self._cursor + 1) % len(self._encoded)
        return chunk

    async def _phase(self, poll: MarkerPoll, rate: int, seconds: float, fixed: bool) -> Phase:
        """Produce at ``rate`` for ``seconds`` with markers, then wait for the path to drain."""
        markers: list[tuple[str, float]] = []  # key, seconds into the phase
        baseline = _baseline(self.result)
        cpu_before = self._path.cpu.read()
        started = time.monotonic()
        next_marker, checked, sent, cut = started, started, 0, False
        while (now := time.monotonic()) - started < seconds:
            due = min(int(rate * (now - started)), int(rate * seconds)) - sent
            marker = None
            if now >= next_marker and due > 0:
                marker = marker_event(self._rng, len(markers))
                self.result.expected.add(marker)
                markers.append((marker.key, now - started))
                next_marker += MARKER_EVERY
            chunk = list(self._encode(marker)) if marker is not None else []
            events = due - (marker is not None)
            chunk += self._next_events(events)
            if chunk:
                if marker is not None:
                    poll.produced(marker.key, time.monotonic())
                await self._writer.send(self._topic, chunk)
                sent += events + (marker is not None)
            if now - checked >= 1.0:
                checked = now
                self._path.check()
                if not fixed and poll.oldest_pending_age(now) > CUT_AFTER + baseline:
                    cut = True
                    break
            await asyncio.sleep(TICK)
        elapsed = time.monotonic() - started
        await self._writer.flush()
        cpu = self._path.cpu.read() - cpu_before
        await self._drain(poll)
        seen = poll.seen
        tail = [seen[k] * 1000 for k, at in markers if at >= elapsed - 1.0 and k in seen]
        return Phase(
            rate=rate,
            seconds=seconds,
            fixed=fixed,
            produced=sent,
            achieved_rate=sent / elapsed,
            latencies_ms=tuple(seen[k] * 1000 for k, _ in markers if k in seen),
            produced_s=tuple(round(at, 3) for k, at in markers if k in seen),
            markers=len(markers),
            last_second_ms=statistics.median(tail) if tail else float("inf"),
            cut_short=cut,
            path_cpu_us=round((cpu.seconds["path"] or 0.0) / max(sent, 1) * 1e6, 1),
        )

    async def _drain(self, poll: MarkerPoll) -> None:
        """Wait until every marker is seen and the applied offsets reach the topic's end."""
        ends = await self._ends()
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while time.monotonic() < deadline:
            self._path.check()
            if poll.error is not None:
                raise RuntimeError(f"the marker poll failed: {poll.error}")
            done = await self._path.applied()
            if not poll.pending and sum(done.values()) >= sum(ends.values()):
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(
            f"the path did not drain in {DRAIN_TIMEOUT:.0f} s; see {self._path.logs}"
        )


def _row(event: Event) -> tuple[str, str | None]:
    """The key and the live name ``event`` leaves (None: it deletes the key)."""
    state = NewestState()
    state.add(event)
    return event.key, state.rows.get(event.key)


def _baseline(result: Result) -> float:
    """The first phase's median latency in seconds (0 before it has run)."""
    return result.phases[0].percentile(0.5) / 1000 if result.phases else 0.0


def _judge(result: Result, phase: Phase) -> None:
    """Note whether the path kept up with ``phase``, against the first phase's median."""
    if result.fell_behind_at is not None or result.producer_limited:
        return
    if phase.producer_short:
        result.producer_limited = True
        return
    behind = (
        phase.cut_short
        or len(phase.latencies_ms) < phase.markers
        or phase.last_second_ms / 1000 > _baseline(result) + BEHIND_MARGIN
    )
    if behind:
        result.fell_behind_at = phase.rate
    else:
        result.sustained = phase.rate
