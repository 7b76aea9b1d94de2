"""Peer: Debezium's JDBC sink on Debezium change events, read natively (``--inputs debezium``).

The same connector, Connect and database settings as ``bench/peers/debezium.py``, on the
topic of ``bench/debezium_input.py``: the change events as Debezium's PostgreSQL connector
writes them, keys and values in JsonConverter's schema envelope, a delete as ``op: d`` then a
tombstone. The sink reads the envelope itself (``after`` for ``c``/``u``, the record key for
``d``): no transform reshapes a record. Its own settings are the two
``*-native.properties`` files beside this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bench import debezium_input
from bench.launch import Launch
from bench.measure import Event
from bench.peers import debezium

LABEL = f"{debezium.LABEL}, Debezium input"
ENCODING = debezium_input.ENCODING
TABLE = debezium.TABLE
LIVE_ROWS_SQL = debezium.LIVE_ROWS_SQL
TEMPLATES = ("connect-standalone-native.properties", "debezium-jdbc-sink-native.properties")

available = debezium.available


def encode_event(event: Event) -> Sequence[Event]:
    """The records Debezium's PostgreSQL connector writes for ``event``."""
    return debezium_input.encode_event(event)


def launch(bootstrap: str, db_url: str, topic: str, workdir: Path, batch: int, name: str) -> Launch:
    """Create the empty table and say how to run Connect with connector ``name`` on ``topic``."""
    return debezium.launch(bootstrap, db_url, topic, workdir, batch, name, templates=TEMPLATES)
