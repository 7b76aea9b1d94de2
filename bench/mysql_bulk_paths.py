"""The bulk write paths of MySQL/MariaDB, measured side by side (docs/mysql.md).

    URL='mysql+pymysql://mirror:mirror@127.0.0.1:33069/bulk?local_infile=1' \\
        .venv/bin/python bench/mysql_bulk_paths.py [load]

Upserts a batch of 5,000 planet rows (all new, then all updated) by each path, four rounds,
and prints the median wall time of the transaction and this process's CPU. ``load`` adds
LOAD DATA LOCAL INFILE into a temporary table (the server must allow ``local_infile``).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, text

from models.planet import Planet
from models.registry import build_spec
from models.store import SqlStore
from models.store import mysql as store_mysql
from models.store.postgres_copy import copy_text

SPEC = build_spec(Planet)
ROWS = 5_000
ROUNDS = 4
COLUMNS = ("uuid", "name", "mirror_version", "mirror_partition", "mirror_offset")
Values = list[tuple[Any, ...]]


def batch(version: int) -> Values:
    return [
        (f"key-{i:06d}-{'x' * 20}", f"planet {i} v{version}", version, 0, i) for i in range(ROWS)
    ]


def upsert_statement() -> Any:
    return store_mysql.row_upsert(SPEC.table, ("uuid",), SPEC.update_columns, COLUMNS)


def via_literals(conn: Connection, values: Values) -> None:
    """The store's path: one multi-row statement whose literals mysql_text writes."""
    store_mysql._insert_values(conn, upsert_statement(), COLUMNS, values, SPEC.column_kinds)


def via_executemany(conn: Connection, values: Values) -> None:
    """SQLAlchemy's executemany: PyMySQL escapes each value and rewrites to one statement."""
    conn.execute(upsert_statement(), [dict(zip(COLUMNS, v, strict=True)) for v in values])


def via_load_data(conn: Connection, values: Values) -> None:
    """LOAD DATA LOCAL INFILE (its default format is PostgreSQL's COPY text) into a temporary
    table, then the same guarded upsert from it."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    cursor.execute("CREATE TEMPORARY TABLE IF NOT EXISTS stage_p LIKE servicea_planet")
    body = copy_text(values, [SPEC.column_kinds.get(c) for c in COLUMNS])
    with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as f:
        f.write(body)
    try:
        cursor.execute(
            f"LOAD DATA LOCAL INFILE '{f.name}' INTO TABLE stage_p ({', '.join(COLUMNS)})"
        )
    finally:
        os.unlink(f.name)
    t = "servicea_planet."
    new = "(VALUES(mirror_version), VALUES(mirror_partition), VALUES(mirror_offset))"
    guard = f"{new} > ({t}mirror_version, {t}mirror_partition, {t}mirror_offset)"
    assigned = ("name", "mirror_offset", "mirror_partition", "mirror_version")
    sets = ", ".join(f"{c} = IF({guard}, VALUES({c}), {t}{c})" for c in assigned)
    picked = ", ".join(f"s.{c}" for c in COLUMNS)
    cursor.execute(
        f"INSERT INTO servicea_planet ({', '.join(COLUMNS)}) SELECT {picked} FROM stage_p AS s "
        f"ON DUPLICATE KEY UPDATE {sets}"
    )
    cursor.execute("DELETE FROM stage_p")
    cursor.close()


def main() -> None:
    store = SqlStore.from_url(os.environ["URL"])
    store.create_tables([SPEC])
    paths: dict[str, Callable[[Connection, Values], None]] = {
        "literals": via_literals,
        "executemany": via_executemany,
    }
    if "load" in sys.argv[1:]:
        paths["load_data"] = via_load_data
    timings: dict[tuple[str, str], list[tuple[float, float]]] = {}
    version = 0
    for _ in range(ROUNDS):
        for name, path in paths.items():
            with store.engine.begin() as conn:
                conn.execute(text("DELETE FROM servicea_planet"))
            for phase in ("insert", "update"):
                version += 1
                values = batch(version)
                wall, cpu = time.perf_counter(), time.process_time()
                with store.engine.begin() as conn:
                    path(conn, values)
                took = (time.perf_counter() - wall, time.process_time() - cpu)
                timings.setdefault((name, phase), []).append(took)
    for (name, phase), runs in timings.items():
        wall_ms = statistics.median(w for w, _ in runs) * 1000
        cpu_ms = statistics.median(c for _, c in runs) * 1000
        print(f"{name:12s} {phase:6s} wall {wall_ms:7.1f} ms  this process's CPU {cpu_ms:6.1f} ms")
    store.dispose()


if __name__ == "__main__":
    main()
