"""Old code against new: the worker of this checkout and of another revision, alternating.

``./run bench --against REV [--rounds N]`` fills the steady-state topic once, then runs the
worker of each side on it in turn (a fresh database and group each run), ``N`` rounds of
``new, old``, and prints each side's median events/s and CPU per event and their ratio. A
change that only moves code (issue 23's rooms) must show no loss beyond the spread of the rounds.
The other revision is checked out once into ``.cache/bench/against-<commit>`` (a git worktree)
and runs on this venv, so both sides use the same dependencies.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.paths import MIRROR, ROOT, WorkerPath
from bench.scenarios import Bench, Run
from bench.workload import Workload

#: The figures compared, with their labels.
FIGURES = (
    ("events_per_s", "events/s"),
    ("cpu_us_machine", "machine CPU us/event"),
    ("cpu_us_path", "worker CPU us/event"),
    ("cpu_us_database", "database CPU us/event"),
)
#: Where the other revisions are checked out.
CHECKOUTS = ROOT / ".cache" / "bench"


def checkout(revision: str) -> Path:
    """Return a checkout of ``revision`` (made once, a detached git worktree)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{revision}^{{commit}}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    target = CHECKOUTS / f"against-{commit[:12]}"
    if not (target / "streams" / "app.py").is_file():
        subprocess.run(["git", "worktree", "prune"], cwd=ROOT, check=True)
        subprocess.run(
            ["git", "worktree", "add", "--force", "--detach", str(target), commit],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    return target


def paths(args: argparse.Namespace, old: Path) -> list[WorkerPath]:
    """The runs in their order: ``new_1, old_1, new_2, old_2, ...``."""
    base = dataclasses.replace(MIRROR, partitions=args.partitions)
    runs = []
    for round_ in range(1, args.rounds + 1):
        runs.append(dataclasses.replace(base, name=f"new_{round_}", label=f"new, round {round_}"))
        runs.append(
            dataclasses.replace(
                base, name=f"old_{round_}", label=f"old, round {round_}", checkout=old
            )
        )
    return runs


def run(
    bench: Bench, workload: Workload, args: argparse.Namespace, say: Callable[[str], None]
) -> int:
    """Run the rounds on ``workload`` and print the comparison; 1 if a run failed."""
    old = checkout(args.against)
    say(f"old: {args.against} checked out in {old}")
    bench.workload(workload, paths(args, old))
    runs = [r for (w, _), r in bench.results.runs.items() if w == workload.name]
    failed = [r for r in runs if not r.ok]
    for line in summary(runs, args.against):
        say(line)
    return 1 if failed else 0


def summary(runs: Sequence[Run], revision: str) -> list[str]:
    """Each side's rates, medians and the ratio of new to old."""
    medians: dict[str, dict[str, float]] = {}
    lines = []
    for side, name in (("new", "this checkout"), ("old", revision)):
        done = [r.figures for r in runs if r.path.startswith(f"{side}_") and r.ok]
        if not done:
            return [f"no run of the {side} side finished"]
        medians[side] = {
            key: statistics.median(f[key] for f in done)
            for key, _ in FIGURES
            if all(key in f for f in done)
        }
        rates = ", ".join(f"{f['events_per_s']:,.0f}" for f in done)
        lines.append(f"{side} ({name}): {rates} events/s")
    new, old = medians["new"], medians["old"]
    for key, label in FIGURES:
        if key in new and key in old:
            lines.append(
                f"median {label}: new {new[key]:,.1f}, old {old[key]:,.1f}, "
                f"new / old {new[key] / old[key]:.3f}"
            )
    return lines
