"""The bench's figures as a reader wants them: markdown tables, and one BENCH_JSON line.

Keys of BENCH_JSON: the warm-up workload (200,000 events over 20,000 entities, the bench's
old default) keeps the old unprefixed names (``mirror_events_per_s``, ``mirror_vs_quix``,
...); the other workloads prefix them (``steady_``, ``initial_``, ``long_``); freshness
figures start with ``freshness_``. Ratios are given only when both tables are right.

Paths on a database other than PostgreSQL (``--databases``) end in ``_<database>``
(``mirror_mariadb``, ``debezium_mariadb``): their rows follow the PostgreSQL ones, labelled
``on MariaDB``, with the worker / peer ratios on that database
(``mirror_mariadb_vs_debezium_mariadb``) and the worker's rate there over its own rate on
PostgreSQL (``mirror_mariadb_vs_mirror``).

On Debezium input (``--inputs debezium``) the worker and Debezium's sink are ``mirror_dbz`` and
``debezium_dbz`` (``_mariadb`` on MariaDB), with the worker's rate there over its rate on
changeType JSON (``mirror_dbz_vs_mirror``) and over the sink's (``mirror_dbz_vs_debezium_dbz``),
and a table of their own.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from typing import Any, NamedTuple

from bench.cpu import PARTS, PARTS_LABEL
from bench.freshness import BEHIND_MARGIN, Phase
from bench.paths import ON_EVERY_DATABASE
from bench.scenarios import FreshRun, Results, Run, cpu_text, sustained_text
from bench.servers import DEFAULT, SERVERS

LABELS = {
    "mirror": "worker",
    "quix": "Quix",
    "debezium": "Debezium",
    "mirror_uncached": "worker, cache off",
    "mirror_x2": "two workers, one group",
    "mirror_dbz": "worker, Debezium input",
    "debezium_dbz": "Debezium, Debezium input",
    "naive": "naive",
    "raw_consume": "raw consume",
    "raw_write": "raw write",
}
PEERS = ("quix", "debezium")
#: The suffix of the paths on each database but PostgreSQL (``bench.paths.on_database``),
#: and the database's label.
ELSEWHERE = {f"_{name}": server.label for name, server in SERVERS.items() if name != DEFAULT}
LABELS.update(
    {
        f"{p}{suffix}": f"{LABELS[p]} on {where}"
        for p in ON_EVERY_DATABASE
        for suffix, where in ELSEWHERE.items()
    }
)
KEY_PREFIX = {"warmup": "", "steady": "steady_", "initial": "initial_", "long": "long_"}
FIGURES = ("events_per_s", "seconds", "startup_s", "peak_rss_mb", *(f"cpu_us_{p}" for p in PARTS))


def ratio(a: Run | None, b: Run | None) -> float | None:
    """``a``'s events/s over ``b``'s, when both ran and left right tables."""
    if a is None or b is None or not (a.ok and b.ok):
        return None
    return round(a.figures["events_per_s"] / b.figures["events_per_s"], 2)


def summarize(results: Results, meta: dict[str, Any]) -> dict[str, Any]:
    """Every figure of the run, keyed as BENCH_JSON prints them."""
    summary: dict[str, Any] = {"cores": os.cpu_count(), **meta}
    if results.value_bytes_median:  # of the warm-up's values, when it ran
        summary["value_bytes_median"] = results.value_bytes_median
    for name, load in results.workloads.items():
        summary[f"{KEY_PREFIX[name]}events"] = load.events
        summary[f"{KEY_PREFIX[name]}entities"] = load.entities
    for (workload, path), run in results.runs.items():
        key = f"{KEY_PREFIX[workload]}{path}"
        if run.not_run is not None:
            summary[f"{key}_not_run"] = run.not_run
            continue
        for figure in FIGURES:
            if figure in run.figures:
                summary[f"{key}_{figure}"] = round(run.figures[figure], 2)
        if run.table_errors is not None:
            summary[f"{key}_table_ok"] = run.table_errors == 0
        if path == "naive":
            summary["naive_events"] = run.events
    for name in results.workloads:
        for suffix in ("", *ELSEWHERE):
            key = f"{KEY_PREFIX[name]}mirror{suffix}"
            mirror = results.runs.get((name, f"mirror{suffix}"))
            for peer in PEERS:
                other = results.runs.get((name, f"{peer}{suffix}"))
                if other is not None and other.not_run is None:
                    summary[f"{key}_vs_{peer}{suffix}"] = ratio(mirror, other)
            if suffix and mirror is not None:  # against the worker's own rate on PostgreSQL
                summary[f"{key}_vs_mirror"] = ratio(mirror, results.runs.get((name, "mirror")))
            dbz = results.runs.get((name, f"mirror_dbz{suffix}"))
            if dbz is not None:
                for other in (f"mirror{suffix}", f"debezium_dbz{suffix}"):
                    if (run := results.runs.get((name, other))) is not None and run.ok:
                        summary[f"{KEY_PREFIX[name]}mirror_dbz{suffix}_vs_{other}"] = ratio(
                            dbz, run
                        )
    baselines = {p: results.runs.get(("warmup", p)) for p in ("naive", "raw_consume", "raw_write")}
    if baselines["naive"] is not None:
        summary["mirror_vs_naive"] = ratio(
            results.runs.get(("warmup", "mirror")), baselines["naive"]
        )
    raw = [r for p, r in baselines.items() if p != "naive" and r is not None and r.not_run is None]
    mirror = results.runs.get(("warmup", "mirror"))
    if len(raw) == 2 and mirror is not None and mirror.not_run is None:
        limit = min(r.figures["events_per_s"] for r in raw)
        summary["mirror_vs_raw_limit"] = round(mirror.figures["events_per_s"] / limit, 3)
    for path, fresh in results.fresh.items():
        summary.update(_freshness_figures(path, fresh))
    return summary


def _freshness_figures(path: str, fresh: FreshRun) -> dict[str, Any]:
    key = f"freshness_{path}"
    if fresh.result is None:
        return {f"{key}_not_run": fresh.not_run}
    result = fresh.result
    figures: dict[str, Any] = {
        f"{key}_sustained_events_per_s": result.sustained,
        f"{key}_fell_behind_at": result.fell_behind_at,
        f"{key}_producer_limited": result.producer_limited,
        f"{key}_table_ok": fresh.table_errors == 0,
        f"{key}_phases": [_phase_figures(p) for p in result.phases],
    }
    for phase in result.phases:
        if phase.fixed:
            figures[f"{key}_{phase.rate}_p50_ms"] = _ms(phase.percentile(0.5))
            figures[f"{key}_{phase.rate}_p99_ms"] = _ms(phase.percentile(0.99))
    return figures


def _phase_figures(phase: Phase) -> dict[str, Any]:
    return {
        "rate": phase.rate,
        "seconds": phase.seconds,
        "fixed": phase.fixed,
        "achieved_rate": round(phase.achieved_rate, 1),
        "markers": phase.markers,
        "seen": len(phase.latencies_ms),
        "p50_ms": _ms(phase.percentile(0.5)),
        "p99_ms": _ms(phase.percentile(0.99)),
        "last_second_ms": _ms(phase.last_second_ms),
        "cut_short": phase.cut_short,
        "path_cpu_us": phase.path_cpu_us,
    }


def _ms(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else round(value, 1)


def print_report(results: Results, summary: dict[str, Any], say: Callable[[str], None]) -> None:
    """Print the tables, then the BENCH_JSON line."""
    ran = {path for _, path in results.runs}
    paths = [p for p in ("mirror", *PEERS) if any(f"{p}{s}" in ran for s in ("", *ELSEWHERE))]
    say("")
    if results.runs:
        _throughput(results, paths, say)
        _cost(results, paths, say)
        _debezium_input(results, say)
        _every_run(results, say)
    _freshness(results, say)
    _rss(results, say)
    say("BENCH_JSON " + json.dumps(summary, sort_keys=True))


def _cell(run: Run | None, show: Callable[[Run], str]) -> str:
    if run is None:
        return ""
    if run.not_run is not None:
        return "not run" if run.not_run.startswith("skipped") else "failed"
    if run.table_errors:
        return f"WRONG ({run.table_errors:,} keys)"
    return show(run)


def _rate(run: Run) -> str:
    return f"{run.figures['events_per_s']:,.0f}"


def _cpu(run: Run) -> str:
    return cpu_text(run.figures)


class Row(NamedTuple):
    """A row of the events/s and CPU tables."""

    workload: str
    worker: str
    """The path in the row's worker column."""
    label: str
    suffix: str | None
    """Of the paths on the row's database ("": PostgreSQL's); None for a row of the worker
    alone (no peer columns: cache off, two workers)."""

    def path(self, column: str) -> str | None:
        """The path in ``column`` (a path on PostgreSQL) of this row, if it has that column."""
        if column == "mirror":
            return self.worker
        return None if self.suffix is None else f"{column}{self.suffix}"

    def run(self, results: Results, column: str) -> Run | None:
        """The run in ``column`` of this row, if there is one."""
        path = self.path(column)
        return None if path is None else results.runs.get((self.workload, path))


def _rows(results: Results) -> list[Row]:
    """The rows of the events/s and CPU tables: each workload's, then its rows on MariaDB."""
    rows = []
    for name, workload in results.workloads.items():
        rows.append(Row(name, "mirror", workload.label, ""))
        if name == "steady":
            rows.append(
                Row(
                    name,
                    "mirror_uncached",
                    f"{workload.label}, the worker with its cache off",
                    None,
                )
            )
            rows.append(Row(name, "mirror_x2", f"{workload.label}, two workers in one group", None))
        for suffix, where in ELSEWHERE.items():
            rows.append(Row(name, f"mirror{suffix}", f"{workload.label}, on {where}", suffix))
    return [r for r in rows if any(r.run(results, c) for c in ("mirror", *PEERS))]


def _throughput(results: Results, paths: list[str], say: Callable[[str], None]) -> None:
    peers = [p for p in paths if p in PEERS]
    rows = _rows(results)
    # The worker elsewhere against itself on PostgreSQL: the column only when it has a cell.
    elsewhere = any(r.suffix for r in rows)
    say("Events/s, from the group ready to every applied offset at the end:")
    say("")
    head = [
        "workload",
        "worker",
        *(LABELS[p] for p in peers),
        *(f"worker / {LABELS[p]}" for p in peers),
        *(["worker / worker on PostgreSQL"] if elsewhere else []),
    ]
    say("| " + " | ".join(head) + " |")
    say("| --- |" + " ---: |" * (len(head) - 1))
    for row in rows:
        mine = row.run(results, "mirror")
        others = [row.run(results, p) for p in peers]
        cells = [row.label, _cell(mine, _rate), *(_cell(run, _rate) for run in others)]
        ratios = [ratio(mine, run) for run in others]
        if elsewhere:
            ratios.append(
                ratio(mine, results.runs.get((row.workload, "mirror"))) if row.suffix else None
            )
        cells += [f"**{r:.2f}**" if r is not None else "" for r in ratios]
        say("| " + " | ".join(cells) + " |")
    say("")


def _cost(results: Results, paths: list[str], say: Callable[[str], None]) -> None:
    say(f"CPU us/event over the same window, {PARTS_LABEL}:")
    say("")
    say("| workload | " + " | ".join(LABELS[p] for p in paths) + " |")
    say("| --- |" + " --- |" * len(paths))
    for row in _rows(results):
        cells = [_cell(row.run(results, p), _cpu) for p in paths]
        say(f"| {row.label} | " + " | ".join(cells) + " |")
    say("")


#: The columns of the Debezium-input table: the worker on changeType JSON, then on Debezium
#: change events, and Debezium's sink on those.
DEBEZIUM_INPUT = ("mirror", "mirror_dbz", "debezium_dbz")


def _debezium_input(results: Results, say: Callable[[str], None]) -> None:
    """The worker on Debezium change events beside itself on changeType JSON and beside
    Debezium's sink on the same records, per workload and database."""
    rows = [
        (name, suffix, workload.label + (f", on {ELSEWHERE[suffix]}" if suffix else ""))
        for name, workload in results.workloads.items()
        for suffix in ("", *ELSEWHERE)
        if (name, f"mirror_dbz{suffix}") in results.runs
        or (name, f"debezium_dbz{suffix}") in results.runs
    ]
    if not rows:
        return
    say("On Debezium change events, events/s (ratios of the worker on them) and CPU us/event:")
    say("")
    say(
        "| workload | worker, changeType | worker, Debezium | Debezium's sink, Debezium"
        " | worker Debezium / changeType | worker / Debezium's sink"
        f" | CPU us/event, {PARTS_LABEL}: worker changeType; worker Debezium; sink |"
    )
    say("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, suffix, label in rows:
        runs = [results.runs.get((name, f"{p}{suffix}")) for p in DEBEZIUM_INPUT]
        mine, dbz, sink = runs
        ratios = [ratio(dbz, mine), ratio(dbz, sink)]
        cells = [
            label,
            *(_cell(run, _rate) for run in runs),
            *(f"**{r:.2f}**" if r is not None else "" for r in ratios),
            "; ".join(_cell(run, _cpu) or "-" for run in runs),
        ]
        say("| " + " | ".join(cells) + " |")
    say("")


def _every_run(results: Results, say: Callable[[str], None]) -> None:
    say("Every run:")
    say("")
    say(
        f"| workload | path | events/s | seconds | CPU us/event ({PARTS_LABEL})"
        " | peak RSS (MB) | start-up (s) | final table |"
    )
    say("| --- | --- | ---: | ---: | --- | ---: | ---: | --- |")
    for (workload, path), run in results.runs.items():
        name = f"{workload} | {LABELS.get(path, path)}"
        if run.not_run is not None:
            say(f"| {name} | - | - | - | - | - | {run.not_run} |")
            continue
        f = run.figures
        cpu = _cpu(run) if "cpu_us_machine" in f else "-"
        rss = f"{f['peak_rss_mb']:.1f}" if "peak_rss_mb" in f else "-"
        start = f"{f['startup_s']:.2f}" if "startup_s" in f else "-"
        table = "-" if run.table_errors is None else "ok" if not run.table_errors else "WRONG"
        say(f"| {name} | {_rate(run)} | {f['seconds']:.2f} | {cpu} | {rss} | {start} | {table} |")
    say("")


def _freshness(results: Results, say: Callable[[str], None]) -> None:
    if not results.fresh:
        return
    paths = list(results.fresh)
    say("Freshness, produce call to row readable in SQL, p50 / p99 ms (markers every 100 ms):")
    say("")
    say("| rate | " + " | ".join(LABELS[p] for p in paths) + " |")
    say("| --- |" + " --- |" * len(paths))
    rates = sorted(
        {ph.rate for f in results.fresh.values() if f.result for ph in f.result.phases if ph.fixed}
    )
    for rate in rates:
        cells = []
        for path in paths:
            result = results.fresh[path].result
            phase = result.phase(rate) if result else None
            cells.append(
                ""
                if phase is None
                else f"{phase.percentile(0.5):,.0f} / {phase.percentile(0.99):,.0f}"
            )
        say(f"| {rate:,} events/s | " + " | ".join(cells) + " |")
    cells = []
    for path in paths:
        fresh = results.fresh[path]
        cells.append(sustained_text(fresh.result) if fresh.result else str(fresh.not_run))
    say("| highest rate sustained | " + " | ".join(cells) + " |")
    say("")
    say(
        f"Sustained: the median latency of a phase's last second of markers stays within"
        f" {BEHIND_MARGIN:.0f} s of the path's median at the lowest rate (a path 10 % slower"
        " than the rate gains a second of backlog in a 10-s step). Every phase:"
    )
    say("")
    say(
        "| path | rate | s | produced/s | markers seen | p50 / p99 ms | last second ms"
        " | path CPU us/event |"
    )
    say("| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    for path in paths:
        result = results.fresh[path].result
        for phase in result.phases if result else ():
            cut = " (cut short)" if phase.cut_short else ""
            p50, p99 = phase.percentile(0.5), phase.percentile(0.99)
            say(
                f"| {LABELS[path]} | {phase.rate:,} | {phase.seconds:.0f}"
                f" | {phase.achieved_rate:,.0f} | {len(phase.latencies_ms)}/{phase.markers}"
                f" | {p50:,.0f} / {p99:,.0f} | {phase.last_second_ms:,.0f}{cut}"
                f" | {phase.path_cpu_us:.0f} |"
            )
    say("")


def _rss(results: Results, say: Callable[[str], None]) -> None:
    peaks = [
        f"{run.figures['peak_rss_mb']:.1f} MB at {run.events:,} events"
        for (workload, path), run in results.runs.items()
        if path == "mirror" and run.not_run is None and workload != "initial"
    ]
    if peaks:
        say("Worker peak RSS: " + ", ".join(peaks))
        say("")
