"""Peer: Quix Streams 3.28 with its stock PostgreSQLSink, configured as fairly as its docs allow.

Run by the bench as its own process (``python -m bench.peers.quix ...``), so its memory
and its time are its own. The sink upserts on the primary key but cannot delete, so an
event whose changeType is DELETED becomes a soft delete (``deleted = true``, name ``''``);
the live rows are those not deleted. Its delivery is at-least-once: the sink writes a
checkpoint's rows, then the offsets are committed.

Settings, and why (BENCHMARKS.md records them):

* ``commit_every`` = the worker's BATCH_SIZE (5,000): a checkpoint (every sink batch written,
  one transaction per partition, then offsets committed) per 5,000 events, like the
  worker's one transaction per 5,000-event batch;
* ``commit_interval=0.2`` (default 5 s): a partial checkpoint within 0.2 s, so rows of a
  slow trickle are written as soon as the worker's (its ``BATCH_WAIT`` is 0.2 s), as issue
  22 measured it;
* ``consumer_poll_timeout=0.1`` (default 1 s): an idle poll does not delay a checkpoint;
* ``schema_auto_update=False``, ``include_metadata=False``: the table is created beforehand
  with the worker's column types; otherwise every batch also runs ``CREATE TABLE IF NOT
  EXISTS``, a primary-key lookup and an ``ALTER TABLE`` per column, and writes two more
  columns (``__key``, ``timestamp``);
* every row carries every column: the sink takes a batch's column list from its first row
  and drops ``None`` values, so a row without ``name`` would blank the names of its batch.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.launch import Launch, Process, group_offsets
from bench.measure import Event
from bench.peers import PeerSkipped

LABEL = "Quix Streams 3.28, stock PostgreSQLSink"
#: Quix reads the worker's JSON values as they are: it shares the worker's topic.
ENCODING = "json"
TABLE = "quix_planet"
LIVE_ROWS_SQL = f"SELECT uuid, name FROM {TABLE} WHERE NOT deleted"
ROOT = Path(__file__).resolve().parents[2]


def available() -> None:
    """Raise PeerSkipped unless quixstreams is installed (not imported: it runs apart)."""
    if importlib.util.find_spec("quixstreams") is None:
        raise PeerSkipped("quixstreams is not installed: pip install -e '.[bench]'")


def encode_event(event: Event) -> Event:
    """The worker's record as it is."""
    return event


def launch(bootstrap: str, db_url: str, topic: str, workdir: Path, batch: int, name: str) -> Launch:
    """Create the empty table and say how to run the Quix app on ``topic`` as group ``name``."""
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                f"CREATE TABLE {TABLE} (uuid varchar(64) PRIMARY KEY, name varchar(255),"
                " deleted boolean NOT NULL)"
            )
        )
    engine.dispose()
    group = name
    command = [sys.executable, "-m", "bench.peers.quix", bootstrap, topic, group, db_url]
    state = workdir / f"{group}-state"
    command += [str(batch), str(state)]
    process = Process(command, workdir / f"{group}.log")
    cleanup = (lambda: shutil.rmtree(state, ignore_errors=True),)
    return Launch([process], ROOT, group, group_offsets(group, topic), cleanup=cleanup)


def to_row(value: dict[str, Any]) -> dict[str, Any]:
    """One event as the sink's row; DELETED becomes a soft delete (the sink cannot delete)."""
    if value.get("changeType") == "DELETED":
        return {"uuid": value["planetUuid"], "name": "", "deleted": True}
    return {"uuid": value["planetUuid"], "name": value["planetName"], "deleted": False}


def main(argv: list[str] | None = None) -> None:
    """The Quix Streams application itself: topic -> row -> PostgreSQLSink."""
    from quixstreams import Application
    from quixstreams.sinks.community.postgresql import PostgreSQLSink

    parser = argparse.ArgumentParser(prog="python -m bench.peers.quix")
    for name in ("bootstrap", "topic", "group", "db_url", "batch", "state_dir"):
        parser.add_argument(name)
    args = parser.parse_args(argv)
    url = make_url(args.db_url)
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_every=int(args.batch),
        commit_interval=0.2,
        consumer_poll_timeout=0.1,
        state_dir=args.state_dir,
        auto_create_topics=False,
    )
    sink = PostgreSQLSink(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        dbname=url.database or "postgres",
        user=url.username or "",
        password=url.password or "",
        table_name=TABLE,
        schema_auto_update=False,
        primary_key_columns="uuid",
        upsert_on_primary_key=True,
        include_metadata=False,
    )
    topic = app.topic(args.topic, key_deserializer="str", value_deserializer="json")
    app.dataframe(topic).apply(to_row).sink(sink)
    app.run()


if __name__ == "__main__":
    main()
