"""What the bench runs, in order: each workload's topics filled once, each path run on them.

Every path runs from an empty table of a fresh database of its own, on the same broker and
database server (PostgreSQL, or MariaDB for the ``*_mariadb`` paths), one at a time; each is
timed by ``bench/measure.py``'s clock and checked once at the end. Each step prints its
line as it ends, so an interrupted run keeps its figures.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import freshness, measure, topics
from bench.cpu import PARTS, PARTS_LABEL
from bench.launch import Launch, RunningPath
from bench.measure import Event, NewestState
from bench.paths import BenchPath, topic_of
from bench.peers import PeerSkipped
from bench.producer import open_writer
from bench.servers import Databases
from bench.workload import Workload, iter_events


@dataclass
class Run:
    """One path on one workload: its figures, or why it has none."""

    path: str
    workload: str
    events: int
    figures: dict[str, float] = field(default_factory=dict)
    progress: tuple[tuple[float, int], ...] = ()
    table_errors: int | None = None
    not_run: str | None = None
    """``skipped: ...`` or ``failed: ...``."""

    @property
    def ok(self) -> bool:
        return self.not_run is None and self.table_errors == 0


@dataclass
class FreshRun:
    """One path's freshness run."""

    path: str
    result: freshness.Result | None = None
    table_errors: int | None = None
    not_run: str | None = None


@dataclass
class Results:
    """Everything the report prints."""

    runs: dict[tuple[str, str], Run] = field(default_factory=dict)
    """(workload, path) -> run."""
    workloads: dict[str, Workload] = field(default_factory=dict)
    fresh: dict[str, FreshRun] = field(default_factory=dict)
    value_bytes_median: float = 0.0


class Bench:
    """Runs workloads and freshness for a list of paths on the shared broker and databases."""

    def __init__(
        self,
        *,
        bootstrap: str,
        databases: Databases,
        run_id: str,
        workdir: Path,
        partitions: int,
        batch_size: int,
        say: Callable[[str], None],
    ) -> None:
        self.bootstrap = bootstrap
        self.databases = databases
        self.run_id = run_id
        self.workdir = workdir
        self.partitions = partitions
        self.batch_size = batch_size
        self.say = say
        self.results = Results()

    def prefix(self, name: str) -> str:
        """Topic prefix of a workload (or a freshness run) of this bench run."""
        return f"bench-{self.run_id}.{name}."

    def workload(self, workload: Workload, paths: Sequence[BenchPath]) -> None:
        """Fill the workload's topics once, then run each path on them."""
        self.results.workloads[workload.name] = workload
        runnable = []
        for path in paths:
            try:
                path.available()
                runnable.append(path)
            except PeerSkipped as exc:
                self._note(
                    Run(path.name, workload.name, workload.events, not_run=f"skipped: {exc}")
                )
        prefix = self.prefix(workload.name)
        targets = {topic_of(p, prefix): p.encode for p in runnable}
        self.say(
            f"{workload.label}: producing {workload.events:,} events into "
            f"{len(targets)} topic(s) ..."
        )
        expected = NewestState()
        sizes: list[int] = []
        events = _tap(workload.generate(), expected, sizes if workload.name == "warmup" else None)
        started = time.monotonic()
        asyncio.run(topics.fill(self.bootstrap, self.partitions, targets, events))
        self.say(f"   produced in {time.monotonic() - started:.1f} s")
        if sizes:
            self.results.value_bytes_median = statistics.median(sizes)
        ends = {
            t: asyncio.run(topics.end_offsets(self.bootstrap, t, self.partitions)) for t in targets
        }
        for path in runnable:
            self.say(f"{workload.label}: {path.label} ...")
            run = Run(path.name, workload.name, workload.events)
            try:
                db_url = self.databases.fresh(f"{workload.name}_{path.name}", path.database)
                catch = asyncio.run(
                    self._catch_up(path, db_url, prefix, ends[topic_of(path, prefix)])
                )
                run.figures, run.progress = catch.figures(workload.events), catch.progress
                run.table_errors = measure.table_errors(db_url, path.live_rows_sql, expected.rows)
            except Exception as exc:  # a failed path is a result; the others still run
                run.not_run = _failure(exc)
            self._note(run)

    async def _catch_up(
        self, path: BenchPath, db_url: str, prefix: str, ends: dict[int, int]
    ) -> measure.CatchUp:
        launch = path.launch(self.bootstrap, db_url, prefix, self.workdir, self.batch_size)
        async with self._running(launch, path) as running:
            return await measure.catch_up(running, ends)

    def _running(self, launch: Launch, path: BenchPath) -> RunningPath:
        return RunningPath(launch, self.bootstrap, lambda: self.databases.pid(path.database))

    def run_freshness(
        self, path: BenchPath, plan: freshness.Plan, pool_size: int, entities: int, seed: int
    ) -> None:
        """Start ``path`` on a topic of its own, catch it up, then run ``plan``'s phases."""
        fresh = FreshRun(path.name)
        self.results.fresh[path.name] = fresh
        try:
            path.available()
        except PeerSkipped as exc:
            fresh.not_run = f"skipped: {exc}"
            self.say(f"freshness: {path.name}: {fresh.not_run}")
            return
        self.say(
            f"freshness: {path.label}: rates {', '.join(f'{r:,}' for r, _, _ in plan.phases())} ..."
        )
        try:
            db_url = self.databases.fresh(f"fresh_{path.name}", path.database)
            pool = list(iter_events(pool_size, entities, seed))
            expected = NewestState()
            fresh.result = asyncio.run(self._freshness(path, db_url, plan, pool, expected, seed))
            fresh.table_errors = measure.table_errors(db_url, path.live_rows_sql, expected.rows)
            self.say(f"   {path.name}: {_fresh_summary(fresh)}")
        except Exception as exc:
            fresh.not_run = _failure(exc)
            self.say(f"   {path.name}: {fresh.not_run}")

    async def _freshness(
        self,
        path: BenchPath,
        db_url: str,
        plan: freshness.Plan,
        pool: list[Event],
        expected: NewestState,
        seed: int,
    ) -> freshness.Result:
        prefix = self.prefix(f"fresh-{path.name}")
        topic = topic_of(path, prefix)
        # Caught up on the whole pool first: the path has read, written and committed before
        # any marker, its JIT (Connect's JVM) has compiled what it runs; 20,000 events left
        # Debezium's sink seconds behind a 5,000 events/s load for its first 10 s.
        await topics.fill(
            self.bootstrap, self.partitions, {topic: path.encode}, _tap(pool, expected)
        )

        async def ends() -> dict[int, int]:
            return await topics.end_offsets(self.bootstrap, topic, self.partitions)

        launch = path.launch(self.bootstrap, db_url, prefix, self.workdir, self.batch_size)
        async with self._running(launch, path) as running:
            await measure.catch_up(running, await ends())
            writer = open_writer(self.bootstrap)
            poll = freshness.MarkerPoll(db_url, path.table)
            try:
                session = freshness.Session(
                    running,
                    writer=writer,
                    topic=topic,
                    ends=ends,
                    pool=pool,
                    encode=path.encode,
                    expected=expected,
                    seed=seed,
                )
                return await session.run(
                    plan, poll, lambda p: self.say(f"   {path.name}: {_phase_line(p)}")
                )
            finally:
                poll.close()
                await writer.close()

    def _note(self, run: Run) -> None:
        self.results.runs[(run.workload, run.path)] = run
        self.say(f"   {run.path}: {run_line(run)}")


def _tap(
    events: Iterable[Event], expected: NewestState, sizes: list[int] | None = None
) -> Iterator[Event]:
    """Pass ``events`` on, noting each in ``expected`` (and its value's size in ``sizes``)."""
    for event in events:
        expected.add(event)
        if sizes is not None:
            sizes.append(len(event.value or b""))
        yield event


def _failure(exc: Exception) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"failed: {type(exc).__name__}: {first}"


def run_line(run: Run) -> str:
    """One run's figures in a line, printed as soon as it ends."""
    if run.not_run is not None:
        return run.not_run
    f = run.figures
    line = f"{f['events_per_s']:,.0f} events/s, {f['seconds']:.2f} s"
    if "cpu_us_machine" in f:
        cpu = cpu_text(f)
        line += f", CPU us/event {cpu} ({PARTS_LABEL})"
    if "peak_rss_mb" in f:
        line += f", peak RSS {f['peak_rss_mb']:.1f} MB"
    if run.table_errors is not None:
        line += (
            ", table ok" if not run.table_errors else f", table WRONG ({run.table_errors:,} keys)"
        )
    return line


def cpu_text(figures: dict[str, float]) -> str:
    """The CPU us/event of each part, ``?`` for a part not known."""
    return " / ".join(
        f"{figures[f'cpu_us_{part}']:.0f}" if f"cpu_us_{part}" in figures else "?" for part in PARTS
    )


def _phase_line(phase: freshness.Phase) -> str:
    cut = " (cut short)" if phase.cut_short else ""
    p50, p99 = phase.percentile(0.5), phase.percentile(0.99)
    return (
        f"{phase.rate:,} events/s for {phase.seconds:.0f} s: produced {phase.achieved_rate:,.0f}/s,"
        f" markers {len(phase.latencies_ms)}/{phase.markers}, p50 {p50:,.0f} ms,"
        f" p99 {p99:,.0f} ms, last second {phase.last_second_ms:,.0f} ms{cut}"
    )


def _fresh_summary(fresh: FreshRun) -> str:
    result = fresh.result
    assert result is not None
    table = "table ok" if not fresh.table_errors else f"table WRONG ({fresh.table_errors:,} keys)"
    return f"sustains {sustained_text(result)}, {table}"


def sustained_text(result: freshness.Result) -> str:
    """The highest sustained rate as the report says it."""
    if result.producer_limited:
        return f"at least {result.sustained or 0:,} events/s (the producer could go no faster)"
    if result.sustained is None:
        return f"less than {result.fell_behind_at or 0:,} events/s"
    if result.fell_behind_at is None:
        return f"at least {result.sustained:,} events/s (every rate tried)"
    return f"{result.sustained:,} events/s (behind at {result.fell_behind_at:,})"
