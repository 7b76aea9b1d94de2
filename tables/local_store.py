"""This worker's table files under DATA_DIR, checked against the broker before Faust opens them.

Faust's RocksDB store keeps one database per table partition, each holding the changelog
offset it is at; a recovery reads the changelog on from there. Files kept across a Kafka reset,
a changelog made again, or reused under another APP_ID belong to another log: Faust stops with
``ConsistencyError`` (``tables/faust_store.py``, workaround 12), and a supervisor restarts it
into the same error. The files are derived state, so files that do not match the changelog
(``streams.core.changelog_checks.local_mismatch``) are removed and Faust recovers the table
from the changelog. What they were built from is recorded beside them (:data:`IDENTITY_FILE`).

One worker per DATA_DIR: the directory is locked for the life of the process, so a second
worker on it stops with one line instead of RocksDB's lock error.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from streams.core.changelog_checks import ChangelogLog, StoreIdentity, local_mismatch
from streams.core.errors import SettingsError
from tables.faust_store import persisted_offset, table_files

#: Beside the table files: the APP_ID and changelog topic ids they were built from.
IDENTITY_FILE = "entity-mirror-tables.json"
#: Held (``flock``) by the worker using the DATA_DIR.
LOCK_FILE = ".entity-mirror.lock"


def writable_problem(path: Path) -> str | None:
    """Return why the worker cannot write files in ``path`` and what is under it, or None.

    Faust's stores create files in the table directory and in each partition's directory;
    a read-only one fails deep inside RocksDB with a traceback.
    """
    candidates = [path, path / "v1", path / "v1" / "tables"]
    tables = path / "v1" / "tables"
    if tables.is_dir():
        candidates += sorted(p for p in tables.iterdir() if p.is_dir())
    for directory in candidates:
        if not directory.is_dir():
            continue
        probe = directory / f".write-probe-{os.getpid()}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            return f"cannot write in {str(directory)!r}: {exc.strerror or exc}"
    return None


def lock_data_dir(path: Path) -> IO[bytes]:
    """Lock DATA_DIR for this process (until it exits); SettingsError if another holds it."""
    try:
        handle = (path / LOCK_FILE).open("a+b")
    except OSError as exc:
        raise SettingsError(f"DATA_DIR: cannot write in {str(path)!r}: {exc.strerror}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise SettingsError(
            f"DATA_DIR {str(path)!r} is in use by another worker; give each worker a DATA_DIR "
            "of its own"
        ) from None
    return handle


def read_identity(path: Path) -> StoreIdentity | None:
    """Return what the table files in DATA_DIR ``path`` were built from (None: not recorded)."""
    try:
        data = json.loads((path / IDENTITY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return StoreIdentity.from_json(data)


def write_identity(path: Path, identity: StoreIdentity) -> None:
    """Record ``identity`` beside the table files (replacing the file whole)."""
    target = path / IDENTITY_FILE
    partial = target.with_name(target.name + ".new")
    partial.write_text(json.dumps(identity.as_json(), indent=2) + "\n")
    os.replace(partial, target)


def check_table_files(
    data_dir: Path,
    tabledir: Path,
    app_id: str,
    tables: Mapping[str, ChangelogLog],
) -> dict[str, str]:
    """Remove the files of each table (by name) that do not belong to its changelog; record
    what the files are built from now; return why each removed table's files were removed."""
    recorded = read_identity(data_dir)
    removed: dict[str, str] = {}
    for name, log in sorted(tables.items()):
        files = table_files(tabledir, name)
        offsets: dict[int, int | None] = {}
        unreadable = None
        for partition, file in sorted(files.items()):
            try:
                offsets[partition] = persisted_offset(file)
            except Exception as exc:  # RocksDB's own errors: a damaged or foreign file
                detail = " ".join(str(exc).split())
                unreadable = f"partition {partition} cannot be read ({detail})"
        reason = unreadable or local_mismatch(recorded, app_id, log, offsets)
        if reason is not None:
            for file in files.values():
                with contextlib.suppress(FileNotFoundError):
                    shutil.rmtree(file)
            removed[name] = reason
    write_identity(
        data_dir, StoreIdentity(app_id, {log.topic: log.topic_id for log in tables.values()})
    )
    return removed
