"""DATA_DIR's table files: removed when they do not belong to the changelog, kept otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest
from rocksdict import Options, Rdict

from streams.core.changelog_checks import ChangelogLog, StoreIdentity
from streams.core.errors import SettingsError
from tables.faust_store import OFFSET_KEY
from tables.local_store import (
    IDENTITY_FILE,
    check_table_files,
    lock_data_dir,
    read_identity,
    write_identity,
)

TOPIC = "mirror-planet-changelog"


def make_files(tabledir: Path, offsets: dict[int, int]) -> None:
    """Write planet partition files as Faust's RocksDB store does: entries and the offset."""
    tabledir.mkdir(parents=True, exist_ok=True)
    for partition, offset in offsets.items():
        db = Rdict(str(tabledir / f"planet-{partition}.db"), Options(raw_mode=True))
        db[b"some-key"] = b"{}"
        db[OFFSET_KEY] = str(offset).encode()
        db.close()


def test_matching_files_are_kept_and_the_identity_recorded(tmp_path: Path) -> None:
    tabledir = tmp_path / "v1" / "tables"
    make_files(tabledir, {0: 4, 1: 6})
    write_identity(tmp_path, StoreIdentity("mirror", {TOPIC: "id-1"}))
    log = ChangelogLog(TOPIC, "id-1", {0: 5, 1: 7})
    assert check_table_files(tmp_path, tabledir, "mirror", {"planet": log}) == {}
    assert sorted(p.name for p in tabledir.iterdir()) == ["planet-0.db", "planet-1.db"]
    assert read_identity(tmp_path) == StoreIdentity("mirror", {TOPIC: "id-1"})


@pytest.mark.parametrize(
    ("identity", "log", "reason"),
    [
        (None, ChangelogLog(TOPIC, "id-1", {0: 5, 1: 7}), "DATA_DIR has no record"),
        (
            StoreIdentity("mirror", {TOPIC: "id-1"}),
            ChangelogLog(TOPIC, "id-2", {0: 0, 1: 0}),
            "was made again",
        ),
        (
            StoreIdentity("old-app", {TOPIC: "id-1"}),
            ChangelogLog(TOPIC, "id-1", {0: 5, 1: 7}),
            "APP_ID 'old-app'",
        ),
    ],
)
def test_files_of_another_log_or_app_are_removed(
    tmp_path: Path, identity: StoreIdentity | None, log: ChangelogLog, reason: str
) -> None:
    tabledir = tmp_path / "v1" / "tables"
    make_files(tabledir, {0: 4, 1: 6})
    (tabledir / "moon-0.db").mkdir()  # another table's: left alone
    if identity is not None:
        write_identity(tmp_path, identity)
    removed = check_table_files(tmp_path, tabledir, "mirror", {"planet": log})
    assert list(removed) == ["planet"] and reason in removed["planet"], removed
    assert [p.name for p in tabledir.iterdir()] == ["moon-0.db"]
    assert read_identity(tmp_path) == StoreIdentity("mirror", {TOPIC: log.topic_id})


def test_an_unreadable_identity_is_no_identity(tmp_path: Path) -> None:
    (tmp_path / IDENTITY_FILE).write_text("{not json")
    assert read_identity(tmp_path) is None


def test_one_worker_per_data_dir(tmp_path: Path) -> None:
    held = lock_data_dir(tmp_path)
    try:
        with pytest.raises(SettingsError, match="is in use by another worker"):
            lock_data_dir(tmp_path)
    finally:
        held.close()
    lock_data_dir(tmp_path).close()  # free again once the holder is gone


def test_a_partition_file_rocksdb_cannot_read_is_removed(tmp_path: Path) -> None:
    tabledir = tmp_path / "v1" / "tables"
    make_files(tabledir, {0: 4})
    (tabledir / "planet-1.db").mkdir()  # no database in it
    write_identity(tmp_path, StoreIdentity("mirror", {TOPIC: "id-1"}))
    log = ChangelogLog(TOPIC, "id-1", {0: 5, 1: 7})
    removed = check_table_files(tmp_path, tabledir, "mirror", {"planet": log})
    assert removed["planet"].startswith("partition 1 cannot be read ("), removed
    assert "\n" not in removed["planet"]
    assert list(tabledir.iterdir()) == []
