"""Benchmark: this project's worker beside its peers, where users run it (``./run bench``).

On the real local Kafka broker and PostgreSQL (started by devservices), each path into an
empty table of its own database, one at a time, all in one run: the worker (``mirror``) and
the peers Quix Streams and Debezium's JDBC sink (``bench/peers/``; ``--no-peers`` leaves
them out, as ``--quick`` does). ``--databases postgresql,mariadb`` also runs the worker and
Debezium's sink on MariaDB (``mirror_mariadb``, ``debezium_mariadb``) in workloads 1 to 3,
on the same topics, reported beside their PostgreSQL rows. ``--inputs changetype,debezium``
also runs the worker and Debezium's sink on the same events as Debezium change events
(``bench/debezium_input.py``, one topic both read, reshaped for neither: ``mirror_dbz``,
``debezium_dbz``) in workloads 1 to 3, reported beside the worker's rate on changeType JSON:

1. warm-up: 200,000 events over 20,000 entities (the old default, a few seconds: start-up
   and warm-up weigh a lot), then the naive path and the raw limits on the same topic;
2. steady state: 1,000,000 events over 100,000 entities; also the worker with its cache off
   and two workers in one group, on the same topic;
3. initial load: 500,000 events, each a CREATED of a new entity;
4. ``--long`` only: 5,000,000 events over 100,000 entities, the worker alone (its memory);
5. freshness: each path caught up on a topic of its own, then a producer paced at fixed
   rates with markers (``bench/freshness.py``): p50 / p99 from produce to readable, and the
   highest rate it sustains.

Each run is timed by ``bench/measure.py``'s clock, with the CPU per event of the machine,
the path, the database server and the broker (``bench/cpu.py``), and its table checked once
at the end. Prints a line per step, then the tables and one ``BENCH_JSON {...}`` line, and draws
``docs/bench/*.png`` when matplotlib is installed (``bench/plots.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import (  # noqa: E402
    against,
    baselines,
    freshness,
    plots,
    report,
    topics,
)
from bench.debezium_input import ENCODING  # noqa: E402
from bench.measure import newest_state, table_errors  # noqa: E402
from bench.paths import (  # noqa: E402
    INPUTS,
    MIRROR,
    ON_DEBEZIUM_INPUT,
    ON_EVERY_DATABASE,
    PEERS,
    PLANET,
    SCALED,
    UNCACHED,
    BenchPath,
    PeerPath,
    WorkerPath,
    on_database,
    topic_of,
)
from bench.producer import client_name  # noqa: E402
from bench.scenarios import Bench, Run, run_line  # noqa: E402
from bench.servers import DEFAULT, SERVERS, Databases  # noqa: E402
from bench.topics import create_and_fill, end_offsets  # noqa: E402
from bench.workload import Workload, make_events  # noqa: E402
from devservices import kafka as dev_kafka  # noqa: E402

# Still importable from here, as before issue 22 (tests/unit/test_bench_peers.py, scripts).
__all__ = ["PLANET", "create_and_fill", "end_offsets", "make_events"]

FULL_PLAN = freshness.Plan(
    fixed_rates=(5_000, 20_000),
    fixed_seconds=20.0,
    ladder=(10_000, 15_000, 25_000, 30_000, 40_000, 50_000, 60_000, 80_000),
    step_seconds=10.0,
)
QUICK_PLAN = freshness.Plan(
    fixed_rates=(500, 2_000), fixed_seconds=2.0, ladder=(1_000, 4_000), step_seconds=1.0
)


def say(line: str) -> None:
    print(line, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line; ``--quick`` shrinks every scenario and leaves the peers out."""
    parser = argparse.ArgumentParser(prog="./run bench", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="steady state's events")
    parser.add_argument("--entities", type=int, default=100_000, help="steady state's keys")
    parser.add_argument("--initial-events", type=int, default=500_000)
    parser.add_argument("--warmup-events", type=int, default=200_000)
    parser.add_argument("--warmup-entities", type=int, default=20_000)
    parser.add_argument("--naive-events", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--only",
        default="warmup,steady,initial,freshness",
        help="scenarios to run, of warmup, steady, initial, freshness (comma-separated)",
    )
    parser.add_argument(
        "--paths",
        default="mirror,quix,debezium,mirror_uncached,mirror_x2",
        help="paths to run (comma-separated); the last two run on the steady state only;"
        " with --inputs debezium, mirror and debezium (or mirror_dbz, debezium_dbz) name the"
        " paths on Debezium input too",
    )
    parser.add_argument(
        "--databases",
        default=DEFAULT,
        help="databases the worker and Debezium's sink write to, of postgresql, mariadb"
        " (comma-separated); the other paths, the baselines and freshness: PostgreSQL only",
    )
    parser.add_argument(
        "--inputs",
        default="changetype",
        help="the events' shapes, of changetype, debezium (comma-separated): debezium runs"
        " the worker and Debezium's sink of --paths on Debezium change events too, in the"
        " warm-up, steady state and initial load",
    )
    parser.add_argument(
        "--rates",
        default=None,
        help="freshness rates (comma-separated), instead of 5,000 and 20,000 and the ladder",
    )
    parser.add_argument(
        "--phase-seconds", type=float, default=None, help="length of every freshness phase"
    )
    parser.add_argument("--long", action="store_true", help="also 5,000,000 events, worker only")
    parser.add_argument("--skip-naive", action="store_true", help="leave out the naive path")
    parser.add_argument(
        "--peers",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the peers, Quix Streams and Debezium's JDBC sink (default: not with --quick)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="every scenario at a tiny size, no peers (CI)"
    )
    parser.add_argument(
        "--repartition",
        action="store_true",
        help="the worker forwards the topic through a repartition topic (REPARTITION=planet)",
    )
    parser.add_argument(
        "--plots", type=Path, default=None, help="folder of the PNGs (default docs/bench)"
    )
    parser.add_argument(
        "--against",
        metavar="REV",
        default=None,
        help="old code against new: the worker of this checkout and of git revision REV, "
        "alternating on the steady state (bench/against.py); nothing else runs",
    )
    parser.add_argument(
        "--rounds", type=int, default=6, help="rounds of new and old with --against"
    )
    args = parser.parse_args(argv)
    args.plan = FULL_PLAN
    args.pool, args.pool_entities = 200_000, 100_000
    if args.quick:
        args.events, args.entities, args.initial_events = 10_000, 1_000, 5_000
        args.warmup_events, args.warmup_entities, args.naive_events = 2_000, 200, 1_000
        args.plan, args.pool, args.pool_entities = QUICK_PLAN, 5_000, 1_000
    if args.rates:
        rates = tuple(int(r) for r in args.rates.split(","))
        args.plan = dataclasses.replace(args.plan, fixed_rates=rates, ladder=())
    if args.phase_seconds:
        seconds = args.phase_seconds
        args.plan = dataclasses.replace(args.plan, fixed_seconds=seconds, step_seconds=seconds)
    if args.peers is None:
        args.peers = not args.quick
    if args.plots is None:
        args.plots = ROOT / (".cache/bench/quick-plots" if args.quick else "docs/bench")
    args.only = set(args.only.split(","))
    args.paths = set(args.paths.split(","))
    args.databases = set(args.databases.split(","))
    args.inputs = set(args.inputs.split(","))
    if unknown := args.inputs - set(INPUTS):
        parser.error(f"--inputs: unknown {', '.join(sorted(unknown))} (of {', '.join(INPUTS)})")
    if unknown := args.databases - SERVERS.keys():
        parser.error(f"--databases: unknown {', '.join(sorted(unknown))} (of {', '.join(SERVERS)})")
    return args


def workloads(args: argparse.Namespace) -> dict[str, Workload]:
    """The workloads of this run, by name."""
    s = args.seed
    return {
        "warmup": Workload(
            "warmup",
            f"warm-up: {args.warmup_events:,} events over {args.warmup_entities:,} entities",
            args.warmup_events,
            args.warmup_entities,
            s,
        ),
        "steady": Workload(
            "steady",
            f"steady state: {args.events:,} events over {args.entities:,} entities",
            args.events,
            args.entities,
            s + 1,
        ),
        "initial": Workload(
            "initial",
            f"initial load: {args.initial_events:,} events, every entity new",
            args.initial_events,
            args.initial_events,
            s + 2,
            kind="initial",
        ),
        "long": Workload(
            "long",
            f"long: {args.events * 5:,} events over {args.entities:,} entities",
            args.events * 5,
            args.entities,
            s + 3,
        ),
    }


def choose_paths(args: argparse.Namespace) -> tuple[list[BenchPath], list[BenchPath]]:
    """The paths of this run: (every one, for the steady state; the main ones, elsewhere).

    The main ones are the worker and the peers; the steady state adds the worker with its
    cache off and two workers in a group. With ``debezium`` in ``--inputs`` the worker and
    Debezium's sink follow on Debezium change events (without ``changetype``, only they run).
    They write to PostgreSQL; for each other database in ``--databases`` the worker and
    Debezium's sink run again after them, writing to it (without ``postgresql`` in
    ``--databases``, only those run).
    """
    every: list[WorkerPath | PeerPath] = [MIRROR, *PEERS, UNCACHED, SCALED]
    chosen = [
        _configured(p, args)
        for p in every
        if p.name in args.paths and (args.peers or p not in PEERS)
    ]
    main = [p for p in chosen if p.name in ("mirror", *(q.name for q in PEERS))]
    # Debezium input: after the main paths, the worker and Debezium's sink on its topic.
    # Named by the path they stand for (mirror, debezium) or by their own names.
    debezium = [
        _configured(path, args)
        for name, path in ON_DEBEZIUM_INPUT.items()
        if "debezium" in args.inputs
        and args.paths & {name, path.name}
        and (args.peers or isinstance(path, WorkerPath))
    ]
    if "changetype" not in args.inputs:
        chosen, main = [], []
    chosen, main = [*chosen, *debezium], [*main, *debezium]
    elsewhere = [
        on_database(p, database)
        for database in SERVERS
        if database != DEFAULT and database in args.databases
        for p in main
        if p.name in ON_EVERY_DATABASE
    ]
    if DEFAULT not in args.databases:
        chosen, main = [], []
    return [*chosen, *elsewhere], [*main, *elsewhere]


def run_baselines(bench: Bench, args: argparse.Namespace, warmup: Workload) -> None:
    """The naive path (on its own slice), then the raw limits on the warm-up's topic."""
    runs = bench.results.runs
    if not args.skip_naive:
        say(f"naive path: {args.naive_events:,} events ...")
        prefix = bench.prefix("naive")
        topic = topic_of(MIRROR, prefix)
        events = make_events(min(args.naive_events, warmup.events), warmup.entities, warmup.seed)
        asyncio.run(create_and_fill(bench.bootstrap, topic, args.partitions, events))
        ends = asyncio.run(end_offsets(bench.bootstrap, topic, args.partitions))
        db_url = bench.databases.fresh("naive")
        run = Run("naive", "warmup", len(events))
        run.figures = baselines.run_naive(bench.bootstrap, db_url, topic, ends)
        expected = newest_state(events)
        run.table_errors = table_errors(db_url, baselines.LIVE_ROWS_SQL["naive"], expected)
        runs[("warmup", "naive")] = run
        say(f"   naive: {run_line(run)}")
    say("raw consume / raw write ...")
    topic = topic_of(MIRROR, bench.prefix("warmup"))
    ends = asyncio.run(end_offsets(bench.bootstrap, topic, args.partitions))
    consume = Run("raw_consume", "warmup", warmup.events)
    consume.figures = baselines.run_raw_consume(bench.bootstrap, topic, ends)
    runs[("warmup", "raw_consume")] = consume
    events = list(warmup.generate())
    write = Run("raw_write", "warmup", warmup.events)
    db_url = bench.databases.fresh("raw_write")
    write.figures = baselines.run_raw_write(db_url, events)
    expected = newest_state(events)
    write.table_errors = table_errors(db_url, baselines.LIVE_ROWS_SQL["raw_write"], expected)
    runs[("warmup", "raw_write")] = write
    say(f"   raw consume: {run_line(consume)}")
    say(f"   raw write: {run_line(write)}")


def _configured(path: WorkerPath | PeerPath, args: argparse.Namespace) -> WorkerPath | PeerPath:
    """A worker path with the run's partitions (and forwarding, for ``--repartition``)."""
    if not isinstance(path, WorkerPath):
        return path
    forward = args.repartition and path.name in ("mirror", "mirror_dbz")
    return dataclasses.replace(path, partitions=args.partitions, repartition=forward)


def _on_default(paths: Sequence[BenchPath]) -> list[BenchPath]:
    """The paths writing to PostgreSQL: the freshness poll reads its tables with psycopg2."""
    return [p for p in paths if p.database == DEFAULT]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--recovery" in argv:
        from bench import recovery_bench

        return recovery_bench.main(argv)
    args = parse_args(argv)
    chosen_paths, main_paths = choose_paths(args)
    bootstrap = dev_kafka.start(1)
    run_id = uuid.uuid4().hex[:6]
    databases = Databases(run_id)
    # Every server the run needs, before anything is produced: one that cannot start says so.
    databases.start([DEFAULT, *sorted({p.database for p in chosen_paths})])
    workdir = ROOT / ".cache" / "bench"
    workdir.mkdir(parents=True, exist_ok=True)
    bench = Bench(
        bootstrap=bootstrap,
        databases=databases,
        run_id=run_id,
        workdir=workdir,
        partitions=args.partitions,
        batch_size=args.batch_size,
        say=say,
    )
    chosen = workloads(args)
    writer = client_name()
    say(f"bench run {run_id}: producer {writer}, work files in {workdir}")
    try:
        if args.against:
            return against.run(bench, chosen["steady"], args, say)
        if "warmup" in args.only:
            bench.workload(chosen["warmup"], main_paths)
            if DEFAULT in args.databases and "changetype" in args.inputs:
                run_baselines(bench, args, chosen["warmup"])
        if "steady" in args.only:
            bench.workload(chosen["steady"], chosen_paths)
        if "initial" in args.only:
            bench.workload(chosen["initial"], main_paths)
        if args.long:
            bench.workload(chosen["long"], [p for p in main_paths if p.name == MIRROR.name])
        if "freshness" in args.only:
            for path in _on_default(main_paths):
                if path.encoding == ENCODING:  # freshness: on the changeType input only
                    continue
                bench.run_freshness(path, args.plan, args.pool, args.pool_entities, args.seed + 4)
        meta = {"partitions": args.partitions, "batch_size": args.batch_size, "producer": writer}
        summary = report.summarize(bench.results, meta)
        summary.update(plots.draw_all(bench.results, args.plots, say))
        report.print_report(bench.results, summary, say)
    finally:
        databases.drop_all()
        with contextlib.suppress(Exception):
            asyncio.run(topics.delete_topics(bootstrap, f"bench-{run_id}."))
    failed = [r for (_, p), r in bench.results.runs.items() if p.startswith("mirror") and not r.ok]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
