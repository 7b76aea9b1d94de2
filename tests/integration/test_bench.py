"""The benchmark's quick mode completes, reports every figure and leaves correct tables.

It asserts no speed: only that each figure is there and each table right. Quick mode runs
every scenario at a tiny size and leaves the peers out (``--peers`` adds them); the test adds
MariaDB (``--databases``): the worker on it too, in the warm-up, steady state and initial load
(about 25 s more, the bench starting the server through devservices.mariadb), and Debezium
input (``--inputs``): the worker on the same events as Debezium change events, on both
databases, with its rate over its own on changeType JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import ROOT

PARTS = ("machine", "path", "database", "broker", "bench")
#: Figures of each run of a path on a workload, after its key (``steady_mirror_x2``...).
RUN_FIGURES = (
    "events_per_s",
    "seconds",
    "startup_s",
    "peak_rss_mb",
    "table_ok",
    *(f"cpu_us_{part}" for part in PARTS),
)
RUNS = ("mirror", "steady_mirror", "steady_mirror_uncached", "steady_mirror_x2", "initial_mirror")
#: The worker's runs on MariaDB, each with its rate over the worker's on PostgreSQL.
ON_MARIADB = ("mirror_mariadb", "steady_mirror_mariadb", "initial_mirror_mariadb")
#: The worker's runs on Debezium change events, each with its rate over its own on changeType
#: JSON on the same database.
ON_DEBEZIUM = {
    f"{workload}mirror_dbz{db}": f"{workload}mirror_dbz{db}_vs_mirror{db}"
    for workload in ("", "steady_", "initial_")
    for db in ("", "_mariadb")
}
#: CPU parts of processes other than the measured path's.
SHARES_OF_OTHERS = ("_cpu_us_database", "_cpu_us_broker", "_cpu_us_bench")
FRESHNESS_RATES = (500, 2000)
FIGURES = {
    "cores",
    "partitions",
    "batch_size",
    "producer",
    "value_bytes_median",
    "events",
    "entities",
    "steady_events",
    "steady_entities",
    "initial_events",
    "initial_entities",
    *(f"{run}_{figure}" for run in (*RUNS, *ON_MARIADB, *ON_DEBEZIUM) for figure in RUN_FIGURES),
    *(f"{run}_vs_mirror" for run in ON_MARIADB),
    *ON_DEBEZIUM.values(),
    "naive_events",
    "naive_events_per_s",
    "naive_seconds",
    "raw_consume_events_per_s",
    "raw_consume_seconds",
    "raw_write_events_per_s",
    "raw_write_seconds",
    "mirror_vs_naive",
    "mirror_vs_raw_limit",
    # Each table checked against the newest state of each key of the produced events.
    "naive_table_ok",
    "raw_write_table_ok",
    "freshness_mirror_table_ok",
    *(f"freshness_mirror_{rate}_{q}_ms" for rate in FRESHNESS_RATES for q in ("p50", "p99")),
    # Timing results: present, whatever they are (None: the worker kept up with every rate).
    "freshness_mirror_sustained_events_per_s",
    "freshness_mirror_fell_behind_at",
    "freshness_mirror_producer_limited",
    "freshness_mirror_phases",
}
#: Present whatever their value, or not numbers.
NOT_POSITIVE = {
    "producer",
    "freshness_mirror_sustained_events_per_s",
    "freshness_mirror_fell_behind_at",
    "freshness_mirror_producer_limited",
    "freshness_mirror_phases",
}


@pytest.mark.slow
def test_quick_benchmark_reports_every_figure(kafka_bootstrap: str, pg_server_url: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "bench/mirror_bench.py",
            "--quick",
            "--databases",
            "postgresql,mariadb",
            "--inputs",
            "changetype,debezium",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH_JSON ")]
    assert len(lines) == 1, done.stdout
    figures = json.loads(lines[0].removeprefix("BENCH_JSON "))
    # The PNGs are drawn when matplotlib is installed (the bench extra), else that is said.
    drawn = figures.pop("plots", None) or figures.pop("plots_not_drawn")
    assert drawn
    assert set(figures) == FIGURES
    for name in FIGURES - NOT_POSITIVE:
        if name.endswith(SHARES_OF_OTHERS):
            # Read in jiffies (10 ms) over quick mode's windows of a tenth of a second: the
            # database's, broker's or bench's share of a window may be no whole jiffy.
            assert figures[name] >= 0, name
        else:
            assert figures[name] > 0, name
    assert all(figures[name] is True for name in FIGURES if name.endswith("_table_ok"))
    phases = figures["freshness_mirror_phases"]
    assert {p["rate"] for p in phases if p["fixed"]} == set(FRESHNESS_RATES)
    # Every marker was seen: each phase drains before the next.
    assert all(p["seen"] == p["markers"] > 0 for p in phases), phases
    for row in (
        "| warm-up: 2,000 events over 200 entities |",
        "the worker with its cache off |",
        "two workers in one group |",
        "| initial load: 5,000 events, every entity new |",
        "| warm-up: 2,000 events over 200 entities, on MariaDB |",
        "| steady state: 10,000 events over 1,000 entities, on MariaDB |",
        "| initial load: 5,000 events, every entity new, on MariaDB |",
        "| 500 events/s |",
        "| highest rate sustained |",
        "On Debezium change events, events/s",
    ):
        assert row in done.stdout, row
    assert "Quix" not in done.stdout and "JDBC sink" not in done.stdout


@pytest.mark.slow
def test_quick_recovery_benchmark_reports_every_event(
    kafka_bootstrap: str, pg_server_url: str
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "bench/mirror_bench.py",
            "--recovery",
            "--sizes",
            "2000",
            "--stores",
            "rocksdb",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH_RECOVERY_JSON ")]
    assert len(lines) == 1, done.stdout
    report = json.loads(lines[0].removeprefix("BENCH_RECOVERY_JSON "))
    assert report["failed"] == {}
    figures = report["results"]["2000-rocksdb"]
    for event in ("load", "join", "leave", "kill", "restart"):
        assert figures[event]["sql_s"] > 0 and figures[event]["ready_s"] > 0, event
    assert figures["rows_ok"] is True
