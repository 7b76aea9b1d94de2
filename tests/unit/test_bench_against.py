"""Old code against new in the bench (bench/against.py): the order of runs and the summary."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench import against
from bench.scenarios import Run


def _run(path: str, rate: float, cpu: float) -> Run:
    figures = {"events_per_s": rate, "cpu_us_machine": cpu}
    return Run(path, "steady", 1000, figures=figures, table_errors=0)


def test_the_sides_alternate_new_first_and_only_old_runs_elsewhere() -> None:
    args = argparse.Namespace(rounds=3, partitions=4)
    runs = against.paths(args, Path("/old"))
    assert [r.name for r in runs] == ["new_1", "old_1", "new_2", "old_2", "new_3", "old_3"]
    assert {r.checkout for r in runs if r.name.startswith("new")} == {None}
    assert {r.checkout for r in runs if r.name.startswith("old")} == {Path("/old")}
    assert {r.partitions for r in runs} == {4}


def test_the_summary_compares_medians() -> None:
    runs = [
        _run("new_1", 110, 40),
        _run("old_1", 100, 50),
        _run("new_2", 90, 44),
        _run("old_2", 120, 52),
        _run("new_3", 100, 42),
        _run("old_3", 80, 48),
    ]
    lines = against.summary(runs, "abc")
    assert lines[0] == "new (this checkout): 110, 90, 100 events/s"
    assert lines[1] == "old (abc): 100, 120, 80 events/s"
    assert "median events/s: new 100.0, old 100.0, new / old 1.000" in lines
    assert "median machine CPU us/event: new 42.0, old 50.0, new / old 0.840" in lines


def test_a_side_without_a_finished_run_is_said() -> None:
    failed = Run("old_1", "steady", 1000, not_run="failed: boom")
    assert against.summary([_run("new_1", 1, 1), failed], "abc") == [
        "no run of the old side finished"
    ]
