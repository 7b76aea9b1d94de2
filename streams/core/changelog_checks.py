"""Whether a cached table's copies still belong to its changelog (pure).

A cached table is derived state with three copies: the rows in the database (the truth), the
changelog topic, and each worker's local table files under DATA_DIR (Faust's RocksDB store,
which remembers the changelog offset it holds). A Kafka reset, a changelog deleted and made
again, or a DATA_DIR reused under another APP_ID leaves copies that belong to another log:
Faust then stops with ``ConsistencyError`` (a local offset past the changelog's end), or keeps
entries the changelog no longer has, and reads answer 404 for entities the database has.

These functions say, from facts read at start, which copy to rebuild and why: a value (a
reason, or None), so the caller does the files and the writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ChangelogLog:
    """What the broker says of one changelog topic now."""

    topic: str
    topic_id: str | None
    """Kafka's id of the topic (KIP-516), new each time it is created; None: the broker gives
    none (then offsets are all there is to compare)."""
    ends: Mapping[int, int] = field(default_factory=dict)
    """End offset (next offset to be written) per partition."""

    @property
    def never_written(self) -> bool:
        """Tell whether no record was ever written to it (offsets never go back to 0)."""
        return not any(self.ends.values())


@dataclass(frozen=True, slots=True)
class StoreIdentity:
    """What a DATA_DIR's table files were built from: the app, and each changelog's id."""

    app_id: str
    changelogs: Mapping[str, str | None] = field(default_factory=dict)
    """Topic id per changelog topic (None: not known when recorded)."""

    def as_json(self) -> dict[str, Any]:
        """Return the identity as JSON-ready values."""
        return {"app_id": self.app_id, "changelogs": dict(sorted(self.changelogs.items()))}

    @classmethod
    def from_json(cls, data: Any) -> StoreIdentity | None:
        """Read an identity written by :meth:`as_json`; None when it is not one."""
        if not isinstance(data, dict) or not isinstance(data.get("app_id"), str):
            return None
        changelogs = data.get("changelogs")
        if not isinstance(changelogs, dict) or not all(
            isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in changelogs.items()
        ):
            return None
        return cls(data["app_id"], changelogs)


def local_mismatch(
    recorded: StoreIdentity | None,
    app_id: str,
    log: ChangelogLog,
    offsets: Mapping[int, int | None],
) -> str | None:
    """Return why local table files (persisted changelog offset per partition) do not belong
    to ``log`` under ``app_id``, or None when they do (Faust can recover from them)."""
    if not offsets:
        return None
    if recorded is None:
        return "DATA_DIR has no record of the APP_ID and changelog they were built from"
    if recorded.app_id != app_id:
        return f"they were built under APP_ID {recorded.app_id!r}"
    if log.topic not in recorded.changelogs:
        return "they were not built from this changelog"
    was = recorded.changelogs[log.topic]
    if was is not None and log.topic_id is not None and was != log.topic_id:
        return (
            f"the changelog was made again since they were built (topic id {was}, now "
            f"{log.topic_id})"
        )
    for partition, offset in sorted(offsets.items()):
        if partition not in log.ends:
            return f"partition {partition} is not one of the changelog's {len(log.ends)}"
        if offset is not None and offset >= log.ends[partition]:
            return (
                f"partition {partition} holds offset {offset} but the changelog's ends at "
                f"{log.ends[partition]}"
            )
    return None


def refill_reason(recorded_id: str | None, log: ChangelogLog, has_rows: bool) -> str | None:
    """Return why the changelog must be written again from the database's rows, or None.

    ``recorded_id`` is the id of the changelog the rows were last written to (recorded in the
    database); a first run of this check (nothing recorded) trusts a changelog that has been
    written to, as the workers kept it.
    """
    if not has_rows:
        return None
    if recorded_id is not None and log.topic_id is not None and recorded_id != log.topic_id:
        return (
            f"the table's rows were written to another log of that name (topic id "
            f"{recorded_id}, now {log.topic_id})"
        )
    if log.never_written and (recorded_id is None or log.topic_id is None):
        return "it is empty and the table is not"
    return None
