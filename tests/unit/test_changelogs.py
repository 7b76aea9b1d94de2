"""Writing a changelog again from the database (SQLite; the changelog writer recorded).

The same on PostgreSQL and the real broker: tests/integration/test_table_store.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from models.registry import default_registry
from models.store import SqlStore
from streams.core.changelog_checks import ChangelogLog
from tables.cache import Entry
from tables.changelogs import refill
from tests.support import mirrored_planets

TOPIC = "mirror-planet-changelog"


class RecordedWriter:
    """Takes the changelog writer's place: records what would be written."""

    def __init__(self) -> None:
        self.written: list[tuple[str, list[Entry]]] = []

    async def write(self, topic: str, entries: Any) -> list[Any]:
        self.written.append((topic, list(entries)))
        return []


def planets(tmp_path: Path, count: int) -> SqlStore:
    return mirrored_planets(f"sqlite:///{tmp_path / 'refill.sqlite3'}", count, group="mirror")


async def test_a_changelog_made_again_gets_every_row_once_and_is_recorded(
    tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setattr("tables.changelogs.REFILL_PAGE", 7)
    store = planets(tmp_path, 20)
    spec = default_registry.by_kind("planet")
    assert spec is not None
    writer: Any = RecordedWriter()
    empty = ChangelogLog(TOPIC, "id-1", {0: 0, 1: 0})
    done = await refill(store, spec, "mirror", empty, writer)
    assert done == ("it is empty and the table is not", 20)
    assert [len(entries) for _, entries in writer.written] == [7, 7, 6]  # a page at a time
    entries = [entry for _, page in writer.written for entry in page]
    assert [orjson.loads(e.value or b"") for e in entries] == [
        {"uuid": f"p{i:02d}", "name": f"n{i}"} for i in range(20)
    ]
    assert {e.key for e in entries} == {f"p{i:02d}".encode() for i in range(20)}
    # Recorded: the same log is not written again, another log of that name is.
    written = ChangelogLog(TOPIC, "id-1", {0: 12, 1: 8})
    assert await refill(store, spec, "mirror", written, writer) is None
    again = await refill(store, spec, "mirror", ChangelogLog(TOPIC, "id-2", {0: 0}), writer)
    assert again is not None and again[1] == 20 and "topic id id-1, now id-2" in again[0]
    store.dispose()


async def test_an_empty_table_writes_nothing_but_records_the_log(tmp_path: Path) -> None:
    store = planets(tmp_path, 0)
    spec = default_registry.by_kind("planet")
    assert spec is not None
    writer: Any = RecordedWriter()
    assert await refill(store, spec, "mirror", ChangelogLog(TOPIC, "id-1", {0: 0}), writer) is None
    assert writer.written == []
    with store.transaction("read") as tx:
        assert tx.changelog_id("mirror", TOPIC) == "id-1"
        assert tx.changelog_id("other-group", TOPIC) is None
    store.dispose()
