"""The events the bench produces: the steady mix over a fixed key space, or an initial load.

The steady mix is what an owning service publishes once its entities exist: about 20 %
CREATED, 60 % UPDATED, 10 % without changeType, 10 % DELETED, over ``entities`` keys; values
of about 450 bytes, twelve fields of which ``Planet`` keeps two. An initial load is a
CREATED of a new entity per event (every key new): what a mirror meets on its first day.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from bench.measure import Event

Kind = Literal["steady", "initial"]


@dataclass(frozen=True, slots=True)
class Workload:
    """One topic's worth of events, named for the table rows of the report."""

    name: str
    """Key of the workload in BENCH_JSON (``warmup``, ``steady``, ``initial``, ``long``)."""
    label: str
    """What the report's rows call it."""
    events: int
    entities: int
    """Key space of the steady mix; for an initial load, equal to ``events``."""
    seed: int
    kind: Kind = "steady"

    def generate(self) -> Iterator[Event]:
        """Yield the workload's events in produced order (the same every run)."""
        if self.kind == "initial":
            return iter_initial_load(self.events, self.seed)
        return iter_events(self.events, self.entities, self.seed)


def planet_body(rng: random.Random, key: str, i: int) -> dict[str, Any]:
    """One planet's full event value, twelve fields, without its changeType."""
    return {
        "planetUuid": key,
        "planetName": f"Planet {i} of system {rng.randrange(1000)}",
        "massKg": rng.random() * 1e25,
        "radiusKm": rng.random() * 70_000,
        "orbitalPeriodDays": rng.random() * 10_000,
        "discoveredBy": rng.choice(["Kepler", "TESS", "Hubble", "JWST", "ground survey"]),
        "discoveredAt": "2026-11-29T04:21:00Z",
        "habitable": rng.random() < 0.1,
        "moons": rng.randrange(80),
        "atmosphere": {"n2": 0.78, "o2": 0.21, "ar": 0.0093},
        "tags": ["rocky", "inner", "survey-7"],
        "updatedBy": "service-a",
    }


def new_key(rng: random.Random) -> str:
    """A random entity uuid, reproducible from ``rng``."""
    return str(uuid.UUID(int=rng.getrandbits(128)))


def iter_events(count: int, entities: int, seed: int) -> Iterator[Event]:
    """Yield the steady mix: about 20 % CREATED, 60 % UPDATED, 10 % none, 10 % DELETED."""
    rng = random.Random(seed)
    keys = [new_key(rng) for _ in range(entities)]
    for i in range(count):
        key = keys[rng.randrange(entities)]
        roll = rng.random()
        body = planet_body(rng, key, i)
        if roll < 0.2:
            body["changeType"] = "CREATED"
        elif roll < 0.8:
            body["changeType"] = "UPDATED"
        elif roll >= 0.9:
            body = {"planetUuid": key, "changeType": "DELETED", "updatedBy": "service-a"}
        yield Event(key, json.dumps(body).encode())


def make_events(count: int, entities: int, seed: int) -> list[Event]:
    """Return the steady mix as a list (see :func:`iter_events`)."""
    return list(iter_events(count, entities, seed))


def iter_initial_load(count: int, seed: int) -> Iterator[Event]:
    """Yield ``count`` CREATED events, each of an entity no event before it named."""
    rng = random.Random(seed)
    for i in range(count):
        key = new_key(rng)
        body = planet_body(rng, key, i)
        body["changeType"] = "CREATED"
        yield Event(key, json.dumps(body).encode())


def marker_event(rng: random.Random, marker_id: int) -> Event:
    """A CREATED of a new entity whose name carries ``marker_id``: its row shows it applied."""
    key = new_key(rng)
    body = planet_body(rng, key, marker_id)
    body["planetName"] = f"marker {marker_id}"
    body["changeType"] = "CREATED"
    return Event(key, json.dumps(body).encode())
