"""The benchmark's quick mode completes, reports every figure and leaves correct tables.

It asserts no speed. Quick mode leaves the peers out (``--peers`` adds them).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import ROOT

FIGURES = {
    "cores",
    "events",
    "entities",
    "partitions",
    "value_bytes_median",
    "mirror_events_per_s",
    "naive_events_per_s",
    "raw_consume_events_per_s",
    "raw_write_events_per_s",
    "mirror_vs_naive",
    "mirror_vs_raw_limit",
    "mirror_peak_rss_mb",
    "mirror_startup_s",
    "large_events",
    "large_events_per_s",
    "large_peak_rss_mb",
    # Each table checked against the newest state of each key of the produced events.
    "mirror_table_ok",
    "naive_table_ok",
    "raw_write_table_ok",
    "large_table_ok",
}


@pytest.mark.slow
def test_quick_benchmark_reports_every_figure(kafka_bootstrap: str, pg_server_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "bench/mirror_bench.py", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH_JSON ")]
    assert len(lines) == 1, done.stdout
    figures = json.loads(lines[0].removeprefix("BENCH_JSON "))
    assert set(figures) == FIGURES
    for name in FIGURES:
        assert figures[name] > 0, name
    assert all(figures[name] is True for name in FIGURES if name.endswith("_table_ok"))
    assert "| mirror |" in done.stdout and "| naive |" in done.stdout
    assert "| quix |" not in done.stdout and "| debezium |" not in done.stdout


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
