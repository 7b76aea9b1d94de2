"""Events for the moons of ``tests/models/declared_moons.py`` and what they must leave, one by one.

The oracle applies each event alone, in the order of its partition, under the rules
docs/guarantees.md and docs/entities.md state; it shares no code with the worker's batch fold
(``streams.core.guard.resolve``), which must reach the same rows and the same outcome of every
event however the events are batched.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

NULLABLE = ("size", "color")
FIELD_OF = {"name": "moonName", "size": "moonSize", "color": "moonColor"}


@dataclass(frozen=True)
class MoonEvent:
    """One record: its key, and its JSON value (None: a Kafka tombstone)."""

    key: str
    event: dict[str, Any] | None

    @property
    def value(self) -> bytes | None:
        return None if self.event is None else json.dumps(self.event).encode()


def moon_stream(count: int, keys: int, *, seed: int) -> list[MoonEvent]:
    """Return ``count`` events over ``keys`` moons: creates, full and partial updates (some
    with nulls, some lacking the name), deletes, tombstones, and some versions out of order."""
    rng = random.Random(seed)
    steps = [0] * keys
    events = []
    for n in range(count):
        k = rng.randrange(keys)
        steps[k] += 1
        key = f"moon-{k}"
        roll = rng.random()
        if roll < 0.03:
            events.append(MoonEvent(key, None))
            continue
        # Versions mostly rise; one event in five is older than the ones before it.
        version = steps[k] * 2 if rng.random() > 0.2 else max(1, steps[k] * 2 - rng.randrange(2, 7))
        event: dict[str, Any] = {"moonUuid": key, "moonVersion": version}
        if roll < 0.15:
            event["changeType"] = "DELETED"
        else:
            if roll < 0.35:
                event["changeType"] = "CREATED"
            elif roll < 0.45:
                event["changeType"] = "UPDATED"
            names = [c for c in ("name", *NULLABLE) if rng.random() < 0.6]
            if event.get("changeType") == "CREATED" or rng.random() < 0.3:
                names = ["name", *[c for c in NULLABLE if rng.random() < 0.7]]
            for column in names:
                event[FIELD_OF[column]] = _value(column, n, rng)
        events.append(MoonEvent(key, event))
    return events


def _value(column: str, n: int, rng: random.Random) -> Any:
    if column == "name":
        return None if rng.random() < 0.03 else f"name-{n}"
    if rng.random() < 0.15:
        return None  # present with null: sets NULL
    return n if column == "size" else f"color-{n}"


@dataclass
class MoonOracle:
    """The state and outcome counts of one moon entity, applied one event at a time."""

    soft_delete: bool
    partial_updates: bool
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    versions: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(
        default_factory=lambda: {"applied": 0, "skipped": 0, "rejected": 0}
    )

    def apply_all(self, events: list[MoonEvent]) -> None:
        for e in events:
            self.outcomes[self.apply(e)] += 1

    def apply(self, e: MoonEvent) -> str:
        key = e.key
        if e.event is None:  # a tombstone: deletes what is there, at its version
            self.versions.setdefault(key, 0)
            self._delete(key)
            return "applied"
        event = e.event
        change = event.get("changeType", "UPDATED")
        version = int(event["moonVersion"])
        carried = {c: event[f] for c, f in FIELD_OF.items() if f in event}
        partial = self.partial_updates and change == "UPDATED"
        if change != "DELETED":
            row = carried if partial else {c: carried.get(c) for c in FIELD_OF}
            if "name" in row and row["name"] is None:
                return "rejected"  # NOT NULL given null
            if not partial and "name" not in carried:
                return "rejected"  # a full write lacking the NOT NULL name
        if key in self.versions and version <= self.versions[key]:
            return "skipped"
        if change == "DELETED":
            self.versions[key] = version
            self._delete(key)
            return "applied"
        if partial and key in self.rows:
            self.rows[key].update(row)
        elif partial and "name" not in row:
            return "rejected"  # a patch of a moon the table does not have, lacking the name
        else:
            self.rows[key] = {c: row.get(c) for c in FIELD_OF}
        self.deleted.discard(key)
        self.versions[key] = version
        return "applied"

    def _delete(self, key: str) -> None:
        if self.soft_delete:
            if key in self.rows:
                self.deleted.add(key)
        else:
            self.rows.pop(key, None)

    def table(self) -> dict[str, tuple[Any, ...]]:
        """Return what the table must hold: key -> (name, size, color[, deleted])."""
        out = {}
        for key, row in self.rows.items():
            values = tuple(row[c] for c in FIELD_OF)
            out[key] = (*values, key in self.deleted) if self.soft_delete else values
        return out
