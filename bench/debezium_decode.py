"""The worker's per-event cost of routing Debezium change events against changeType JSON, on the
same rows: a ``timeit`` of ``route_batch`` over 10,000 records of each.

    .venv/bin/python -m bench.debezium_decode

The rows are the bench's planets (twelve fields, of which the models keep the uuid key and the
name); the Debezium formats are declared on a model of the same two columns, fed the same rows
as a source table of twelve columns would give them. Prints microseconds per event and the
ratio to changeType JSON.
"""

from __future__ import annotations

import json
import random
import timeit
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from sqlalchemy import MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bench.workload import planet_body
from models.base import MirroredEntity
from models.planet import Planet
from models.registry import EntitySpec, build_spec, default_registry
from streams.core.records import SourceRecord
from streams.core.routing import route_batch
from tests.debezium_events import SOURCE, compact

COUNT = 10_000


class _Base(DeclarativeBase):
    metadata = MetaData()


class _Columns:
    uuid: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)


class EnvelopePlanet(_Columns, MirroredEntity, _Base):
    """Planets as Debezium change events."""

    __tablename__ = "bench_dbz_planet"
    __topic__ = "bench.public.planet"
    __input_format__ = "debezium"


class LsnPlanet(_Columns, MirroredEntity, _Base):
    """The same, versioned by the LSN."""

    __tablename__ = "bench_dbz_lsn_planet"
    __topic__ = "bench.lsn.planet"
    __input_format__ = "debezium"
    __version_from__ = "source.lsn"


class FlatPlanet(_Columns, MirroredEntity, _Base):
    """Planets as ExtractNewRecordState rows."""

    __tablename__ = "bench_flat_planet"
    __topic__ = "bench.flat.planet"
    __input_format__ = "debezium-flat"


ROW_SCHEMA = [
    {"type": "string", "optional": False, "field": "uuid"},
    {"type": "string", "optional": False, "field": "name"},
    {"type": "double", "optional": True, "field": "massKg"},
    {"type": "double", "optional": True, "field": "radiusKm"},
    {"type": "double", "optional": True, "field": "orbitalPeriodDays"},
    {"type": "string", "optional": True, "field": "discoveredBy"},
    {
        "type": "string",
        "optional": True,
        "name": "io.debezium.time.ZonedTimestamp",
        "field": "discoveredAt",
    },
    {"type": "boolean", "optional": True, "field": "habitable"},
    {"type": "int32", "optional": True, "field": "moons"},
    {"type": "string", "optional": True, "name": "io.debezium.data.Json", "field": "atmosphere"},
    {"type": "string", "optional": True, "name": "io.debezium.data.Json", "field": "tags"},
    {"type": "string", "optional": True, "field": "updatedBy"},
]


def _schema() -> dict[str, Any]:
    row = {
        "type": "struct",
        "fields": ROW_SCHEMA,
        "optional": True,
        "name": "bench.public.planet.Value",
    }
    source = {
        "type": "struct",
        "fields": [{"type": "string", "optional": False, "field": k} for k in SOURCE],
        "optional": False,
        "name": "io.debezium.connector.postgresql.Source",
        "field": "source",
    }
    return {
        "type": "struct",
        "fields": [
            {**row, "field": "before"},
            {**row, "field": "after"},
            source,
            {"type": "string", "optional": False, "field": "op"},
            {"type": "int64", "optional": True, "field": "ts_ms"},
        ],
        "optional": False,
        "name": "bench.public.planet.Envelope",
        "version": 2,
    }


def values() -> dict[str, tuple[EntitySpec, list[bytes]]]:
    """Return each format's entity and the 10,000 values of the same rows in it."""
    rng = random.Random(7)
    rows = []
    for n in range(COUNT):
        body = planet_body(rng, str(uuid.UUID(int=n)), n)
        body["uuid"] = body.pop("planetUuid")
        body["name"] = body.pop("planetName")
        rows.append(body)
    # What the source table gives Debezium: jsonb columns as JSON text.
    source_rows = [
        {**r, "atmosphere": json.dumps(r["atmosphere"]), "tags": json.dumps(r["tags"])}
        for r in rows
    ]
    schema = _schema()

    def event(n: int, row: dict[str, Any]) -> dict[str, Any]:
        op = "c" if n % 2 == 0 else "u"
        source = {**SOURCE, "lsn": 24023128 + n}
        return {"before": None, "after": row, "source": source, "op": op, "ts_ms": 1}

    specs = {m: build_spec(m) for m in (Planet, EnvelopePlanet, LsnPlanet, FlatPlanet)}
    for model in (EnvelopePlanet, LsnPlanet, FlatPlanet):
        default_registry.unregister(model)
    change_type = [
        compact(
            {
                "planetUuid": r["uuid"],
                "planetName": r["name"],
                **{k: v for k, v in r.items() if k not in ("uuid", "name")},
                "changeType": "CREATED" if n % 2 == 0 else "UPDATED",
            }
        )
        for n, r in enumerate(rows)
    ]
    return {
        "changeType JSON": (specs[Planet], change_type),
        "debezium": (
            specs[EnvelopePlanet],
            [compact(event(n, r)) for n, r in enumerate(source_rows)],
        ),
        "debezium, LSN versions": (
            specs[LsnPlanet],
            [compact(event(n, r)) for n, r in enumerate(source_rows)],
        ),
        "debezium with schema": (
            specs[EnvelopePlanet],
            [
                compact({"schema": schema, "payload": event(n, r)})
                for n, r in enumerate(source_rows)
            ],
        ),
        "debezium-flat": (
            specs[FlatPlanet],
            [compact({**r, "__deleted": "false", "__op": "c"}) for r in source_rows],
        ),
    }


def measure(repeat: int = 15) -> dict[str, float]:
    """Return the best microseconds per event of ``route_batch`` for each format, the formats
    timed in turn in each round (so a busy moment of the machine hits all of them)."""
    loads: Callable[[bytes], Any] = orjson.loads
    timers: dict[str, timeit.Timer] = {}
    for label, (spec, raw) in values().items():
        records = [
            SourceRecord(spec.topic, 0, n, 1_700_000_000_000 + n, raw[n][:8], raw[n])
            for n in range(COUNT)
        ]
        timers[label] = timeit.Timer(
            lambda spec=spec, records=records: route_batch(records, spec, loads)
        )
    best = dict.fromkeys(timers, float("inf"))
    for _ in range(repeat):
        for label, timer in timers.items():
            best[label] = min(best[label], timer.timeit(number=1))
    return {label: seconds / COUNT * 1e6 for label, seconds in best.items()}


def main() -> None:
    """Print the figures."""
    results = measure()
    base = results["changeType JSON"]
    for label, us in results.items():
        print(f"{label:28s} {us:6.2f} us/event  x{us / base:4.2f}")


if __name__ == "__main__":
    main()
