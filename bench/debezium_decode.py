"""The worker's per-event cost of routing Debezium change events against changeType JSON, on the
same rows: a ``timeit`` of ``route_batch`` over 10,000 records of each.

    .venv/bin/python -m bench.debezium_decode

The rows are the bench's planets (twelve fields, of which the models keep the uuid key and the
name); the Debezium formats are declared on a model of the same two columns, fed the same rows
as a source table of twelve columns would give them. Prints microseconds per event and the
ratio to changeType JSON.
"""

from __future__ import annotations

import random
import timeit
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from sqlalchemy import MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bench.debezium_input import SOURCE, VALUE_SCHEMA, source_row
from bench.workload import planet_body
from models.base import MirroredEntity
from models.planet import Planet
from models.registry import EntitySpec, build_spec, default_registry
from streams.core.records import SourceRecord
from streams.core.routing import route_batch

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


def values() -> dict[str, tuple[EntitySpec, list[bytes]]]:
    """Return each format's entity and the 10,000 values of the same rows in it, the Debezium
    ones as ``bench/debezium_input.py`` writes them for the bench (the ``source`` block and
    envelope of the PostgreSQL connector 3.x)."""
    rng = random.Random(7)
    bodies = [planet_body(rng, str(uuid.UUID(int=n)), n) for n in range(COUNT)]
    for n, body in enumerate(bodies):
        body["changeType"] = "CREATED" if n % 2 == 0 else "UPDATED"
    rows = [source_row(body) for body in bodies]  # jsonb columns as JSON text

    def event(n: int, row: dict[str, Any]) -> dict[str, Any]:
        source = {**SOURCE, "txId": n, "lsn": 24_023_128 + 8 * n}
        return {
            "before": None,
            "after": row,
            "source": source,
            "transaction": None,
            "op": "c" if n % 2 == 0 else "u",
            "ts_ms": SOURCE["ts_ms"],
            "ts_us": SOURCE["ts_us"],
            "ts_ns": SOURCE["ts_ns"],
        }

    specs = {m: build_spec(m) for m in (Planet, EnvelopePlanet, LsnPlanet, FlatPlanet)}
    for model in (EnvelopePlanet, LsnPlanet, FlatPlanet):
        default_registry.unregister(model)
    payloads = [orjson.dumps(event(n, row)) for n, row in enumerate(rows)]
    head = b'{"schema":' + orjson.dumps(VALUE_SCHEMA) + b',"payload":'
    return {
        "changeType JSON": (specs[Planet], [orjson.dumps(body) for body in bodies]),
        "debezium": (specs[EnvelopePlanet], payloads),
        "debezium, LSN versions": (specs[LsnPlanet], payloads),
        "debezium with schema": (specs[EnvelopePlanet], [head + p + b"}" for p in payloads]),
        "debezium-flat": (
            specs[FlatPlanet],
            [orjson.dumps({**row, "__deleted": "false", "__op": "c"}) for row in rows],
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
