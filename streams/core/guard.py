"""The version guard (pure): which writes of a batch apply, given the stored versions.

Applying a batch is equivalent to applying its events one by one in consumption order under
one rule: an event applies only if its version is newer than the entity's current version,
which is the version of its row or of its tombstone (a deleted entity's last version). One
write per key reaches the database: the last full write with the partial updates after it
merged in (a soft delete after a write adds its mark). Because the outcome depends on versions
and not on arrival order, any interleaving or replay of the same events ends in the same state.

**Partition order beats clocks.** A version ``(timestamp, partition, offset)`` compares by
timestamp first, and producers' clocks disagree. So an event that comes later in the same
partition as the entity's current version (a greater offset) is never older than it: it takes
the current version's timestamp (:func:`newer_in_partition`) and applies. Timestamps decide only
between events of one key that come through different partitions (a repartition topic, keys
that moved when partitions were added, redriven dead letters, records keyed otherwise), where
no order is given. The outcome is the same as if each event's timestamp were the largest of its
key's timestamps up to it in its partition: the event with the greatest such version wins, in
any interleaving of the partitions. A declared version field (``(version, 0, 0)``) is the
entity owner's own order, not a clock: it is never overridden.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from streams.core.decisions import Decision, Delete, Outcome, Rejection, RejectReason, Upsert
from streams.core.keys import key_text
from streams.core.records import EntityKey, Version

#: Version given to a versionless delete of an entity that has no state at all.
ZERO_VERSION: Version = (0, 0, 0)


class Current(NamedTuple):
    """What the store holds for one key: the live row's version and/or a tombstone's.

    A named tuple, not a dataclass: a batch reads thousands of them, and creating a named
    tuple costs less than half.
    """

    row: Version | None = None
    """Version of the live row, None when there is no row."""
    tombstone: Version | None = None
    """Version of the delete that left a tombstone, None when there is none."""

    @property
    def version(self) -> Version | None:
        """Return the newest version the store knows of, or None."""
        row, tombstone = self
        if tombstone is None:
            return row
        if row is None:
            return tombstone
        return max(row, tombstone)


NOTHING = Current()


@dataclass(frozen=True, slots=True)
class StoredVersions:
    """What the store holds for a batch's keys, as the store reads it: the newest version of
    each key (its row's or its tombstone's), which keys have a tombstone, and which have a row
    (read for entities taking partial updates: a patch applies only to a row that exists)."""

    newest: Mapping[EntityKey, Version]
    tombstoned: frozenset[EntityKey] | set[EntityKey]
    present: frozenset[EntityKey] | set[EntityKey] = frozenset()

    @classmethod
    def of(cls, current: Mapping[EntityKey, Current]) -> StoredVersions:
        """Build from one :class:`Current` per key."""
        newest = {k: v for k, c in current.items() if (v := c.version) is not None}
        return cls(
            newest,
            {k for k, c in current.items() if c.tombstone is not None},
            {k for k, c in current.items() if c.row is not None},
        )


@dataclass(slots=True)
class Plan:
    """The writes that carry a batch out, and every decision's outcome in input order.

    The store writes, in this order: the rows of ``recreated`` keys go, then ``upserts``
    (create or update), then ``patches`` (updates of existing rows), then ``deletes``. A key is
    in ``upserts`` or ``patches``, not both; with soft deletes it may also be in ``deletes``
    (written, then marked deleted by a newer event of the same batch).
    """

    upserts: dict[EntityKey, Upsert] = field(default_factory=dict)
    patches: dict[EntityKey, Upsert] = field(default_factory=dict)
    """Partial updates of rows the table has: only the columns they carry change."""
    deletes: dict[EntityKey, Delete] = field(default_factory=dict)
    """Deletes with their effective (never None) version; each leaves a tombstone."""
    recreated: set[EntityKey] = field(default_factory=set)
    """Keys deleted (hard) and created again within the batch: their old row goes first, so
    columns the new event does not name start from their defaults, as one by one."""
    clear_tombstones: set[EntityKey] = field(default_factory=set)
    """Keys recreated by a newer write, whose older tombstone is now obsolete."""
    outcomes: list[tuple[Decision, Outcome]] = field(default_factory=list)


def resolve(
    decisions: Iterable[Decision],
    current: Mapping[EntityKey, Current] | StoredVersions,
    *,
    soft_deletes: bool = False,
) -> Plan:
    """Decide which decisions apply (newer than the state) and which are skipped (stale).

    Per key, the writes a batch applies fold into what the store writes: the last full write,
    with the partial updates after it merged in (each patch counts, the later field wins).
    A partial update of an entity the table does not have (and the batch has not created)
    must give every NOT NULL column; otherwise it is rejected, as a create lacking one is.
    With ``soft_deletes`` a delete keeps the row, so a patch after it still has a row.
    """
    stored = current if isinstance(current, StoredVersions) else StoredVersions.of(current)
    newest = stored.newest
    present = stored.present
    plan = Plan()
    versions: dict[EntityKey, Version | None] = {}
    rows: dict[EntityKey, Upsert] = {}  # what each key's applied writes amount to so far
    gone: set[EntityKey] = set()  # keys whose row a hard delete of this batch removed
    deletes: dict[EntityKey, Delete] = {}
    for decision in decisions:
        if isinstance(decision, Rejection):
            plan.outcomes.append((decision, Outcome.REJECTED))
            continue
        key = decision.key
        now = versions[key] if key in versions else newest.get(key)
        version = decision.version
        if version is None:
            # A Kafka tombstone without a version of its own deletes what is there.
            version = now if now is not None else ZERO_VERSION
            decision = dataclasses.replace(decision, version=version)
        elif now is not None and version <= now:
            later = newer_in_partition(version, now)
            if later is None:
                plan.outcomes.append((decision, Outcome.SKIPPED))
                continue
            version = later
            decision = dataclasses.replace(decision, version=version)
        if isinstance(decision, Upsert):
            if decision.partial:
                before = rows.get(key)
                if before is not None:
                    decision = _merge(before, decision)
                elif decision.missing and (key in gone or key not in present):
                    rejection = Rejection(
                        RejectReason.INVALID_ROW,
                        f"a partial update of {key_text(key)!r}, which the table does not have, "
                        f"must give every NOT NULL column; it lacks {', '.join(decision.missing)}",
                        decision.record,
                    )
                    plan.outcomes.append((rejection, Outcome.REJECTED))
                    continue
            if key in gone:
                plan.recreated.add(key)
            rows[key] = decision
            deletes.pop(key, None)
        else:
            deletes[key] = decision
            if not soft_deletes:
                rows.pop(key, None)
                gone.add(key)
        versions[key] = version
        plan.outcomes.append((decision, Outcome.APPLIED))
    for key, write in rows.items():
        if write.partial and key in present and key not in gone:
            plan.patches[key] = write
        else:
            plan.upserts[key] = write
        if key in stored.tombstoned:
            plan.clear_tombstones.add(key)
    for key, removal in deletes.items():
        plan.deletes[key] = removal
        plan.recreated.discard(key)
    return plan


def newer_in_partition(version: Version, current: Version) -> Version | None:
    """Return the version an event not newer than ``current`` by its timestamp takes because it
    comes later in the same partition (its timestamp lifted to ``current``'s), or None.

    ``(timestamp, partition, offset)``: the same partition and a greater offset mean the event
    was produced after the current state's, whatever the producers' clocks said. A declared
    version field gives ``(version, 0, 0)``, whose offsets are equal: never lifted.
    """
    if version[1] == current[1] and version[2] > current[2]:
        return (current[0], version[1], version[2])
    return None


def _merge(before: Upsert, patch: Upsert) -> Upsert:
    """Return the write of ``before`` with ``patch`` applied over it (the patch's version)."""
    return dataclasses.replace(
        patch,
        row={**before.row, **patch.row},
        partial=before.partial,
        missing=tuple(c for c in before.missing if c not in patch.row),
    )
