"""The figures a reader would rather see than read, drawn as PNGs for BENCHMARKS.md.

* ``progress-<workload>.png``: each path's applied events over time (the polled progress
  the clock reads), one line per path, from its group ready;
* ``freshness.png``: per fixed rate, the distribution (CDF) of each path's marker latencies;
* ``freshness-timeline.png``: per fixed rate, each marker's latency against when it was
  produced (a pause, a warm-up, a growing backlog show up here);
* ``freshness-ladder.png``: per path, the median latency of each phase's last second
  against its rate: where it bends up, the path falls behind.

matplotlib is optional (the ``bench`` extra): without it nothing is drawn and the bench
says so in one line; the tables hold every figure anyway.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.freshness import Phase, Result
from bench.scenarios import Results

COLOURS = {
    "mirror": "tab:blue",
    "quix": "tab:orange",
    "debezium": "tab:green",
    "mirror_uncached": "tab:cyan",
    "mirror_x2": "tab:purple",
    # On MariaDB (--databases): darker shades of the same paths' colours.
    "mirror_mariadb": "navy",
    "debezium_mariadb": "darkgreen",
}
NAMES = {
    "mirror": "worker",
    "quix": "Quix Streams",
    "debezium": "Debezium JDBC sink",
    "mirror_uncached": "worker, cache off",
    "mirror_x2": "two workers",
    "mirror_mariadb": "worker on MariaDB",
    "debezium_mariadb": "Debezium JDBC sink on MariaDB",
}


def draw_all(results: Results, folder: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Draw every figure into ``folder``; return the BENCH_JSON entry saying what was drawn."""
    if importlib.util.find_spec("matplotlib") is None:
        say("plots: not drawn, matplotlib is not installed (pip install -e '.[bench]')")
        return {"plots_not_drawn": "matplotlib is not installed"}
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    folder.mkdir(parents=True, exist_ok=True)
    drawn = [*_progress(results, folder), *_freshness(results, folder)]
    say(f"plots: {', '.join(str(folder / name) for name in drawn)}")
    return {"plots": drawn}


def _progress(results: Results, folder: Path) -> list[str]:
    import matplotlib.pyplot as plt

    drawn = []
    for name, workload in results.workloads.items():
        runs = [r for (w, p), r in results.runs.items() if w == name and r.progress and p in NAMES]
        if not runs:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        for run in runs:
            xs = [t for t, _ in run.progress]
            ys = [n for _, n in run.progress]
            ax.plot(xs, ys, label=NAMES[run.path], color=COLOURS[run.path])
        ax.set_title(workload.label)
        _label(ax, "seconds since the group was ready", "events applied (durable progress)")
        drawn.append(f"progress-{name}.png")
        _save(fig, folder / drawn[-1])
    return drawn


def _freshness(results: Results, folder: Path) -> list[str]:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    fresh = {p: f.result for p, f in results.fresh.items() if f.result is not None}
    if not fresh:
        return []
    rates = sorted({ph.rate for r in fresh.values() for ph in r.phases if ph.fixed})

    def cdf(ax: Any, path: str, phase: Phase) -> None:
        xs = sorted(phase.latencies_ms)
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        ax.step(xs, ys, where="post", label=NAMES[path], color=COLOURS[path])

    for ax in _rate_panels(fresh, rates, cdf, folder / "freshness.png"):
        ax.set_xscale("log")
        _label(ax, "produce call to row readable in SQL (ms)", "share of markers")
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))

    def timeline(ax: Any, path: str, phase: Phase) -> None:
        ax.plot(phase.produced_s, phase.latencies_ms, label=NAMES[path], color=COLOURS[path])

    for ax in _rate_panels(fresh, rates, timeline, folder / "freshness-timeline.png"):
        ax.set_yscale("log")
        _label(ax, "produced at (seconds into the phase)", "marker latency (ms)")

    fig, ax = plt.subplots(figsize=(7, 4))
    for path, result in fresh.items():
        seen = [ph for ph in result.phases if ph.last_second_ms != float("inf")]
        xs = [ph.rate for ph in seen]
        ys = [ph.last_second_ms for ph in seen]
        ax.plot(xs, ys, marker="o", label=NAMES[path], color=COLOURS[path])
    ax.set_yscale("log")
    _label(ax, "paced rate (events/s)", "median latency of the phase's last second (ms)")
    _save(fig, folder / "freshness-ladder.png")
    return ["freshness.png", "freshness-timeline.png", "freshness-ladder.png"]


def _rate_panels(
    fresh: dict[str, Result],
    rates: list[int],
    draw: Callable[[Any, str, Phase], None],
    path: Path,
) -> Iterator[Any]:
    """One panel per fixed rate, each path drawn on it; yields each panel to label, then saves."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rates), figsize=(5 * len(rates), 4), squeeze=False)
    for ax, rate in zip(axes[0], rates, strict=True):
        for name, result in fresh.items():
            phase = result.phase(rate)
            if phase is not None and phase.latencies_ms:
                draw(ax, name, phase)
        ax.set_title(f"{rate:,} events/s")
        yield ax
    _save(fig, path)


def _label(ax: Any, x: str, y: str) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_scale() == "log":  # 10, 20, 50, 100, ... in plain numbers
            axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.set_minor_formatter(NullFormatter())
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.10g}"))
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(alpha=0.3, which="both")
    ax.legend()


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
