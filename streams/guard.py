"""The version guard (pure): which writes of a batch apply, given the stored versions.

Applying a batch is equivalent to applying its events one by one in consumption order under
one rule: an event applies only if its version is newer than the entity's current version,
which is the version of its row or of its tombstone (a deleted entity's last version). Only
the last applied write per key reaches the database. Because the outcome depends on versions
and not on arrival order, any interleaving or replay of the same events ends in the same state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from streams.routing import Decision, Delete, EntityKey, Outcome, Rejection, Upsert, Version

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
    each key (its row's or its tombstone's) and which keys have a tombstone."""

    newest: Mapping[EntityKey, Version]
    tombstoned: frozenset[EntityKey] | set[EntityKey]

    @classmethod
    def of(cls, current: Mapping[EntityKey, Current]) -> StoredVersions:
        """Build from one :class:`Current` per key."""
        newest = {k: v for k, c in current.items() if (v := c.version) is not None}
        return cls(newest, {k for k, c in current.items() if c.tombstone is not None})


@dataclass(slots=True)
class Plan:
    """The writes that carry a batch out, and every decision's outcome in input order."""

    upserts: dict[EntityKey, Upsert] = field(default_factory=dict)
    deletes: dict[EntityKey, Delete] = field(default_factory=dict)
    """Deletes with their effective (never None) version; each leaves a tombstone."""
    clear_tombstones: set[EntityKey] = field(default_factory=set)
    """Keys recreated by a newer write, whose older tombstone is now obsolete."""
    outcomes: list[tuple[Decision, Outcome]] = field(default_factory=list)


def resolve(
    decisions: Iterable[Decision], current: Mapping[EntityKey, Current] | StoredVersions
) -> Plan:
    """Decide which decisions apply (newer than the state) and which are skipped (stale)."""
    stored = current if isinstance(current, StoredVersions) else StoredVersions.of(current)
    newest = stored.newest
    plan = Plan()
    versions: dict[EntityKey, Version | None] = {}
    last: dict[EntityKey, Upsert | Delete] = {}
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
            plan.outcomes.append((decision, Outcome.SKIPPED))
            continue
        versions[key] = version
        last[key] = decision
        plan.outcomes.append((decision, Outcome.APPLIED))
    for key, write in last.items():
        if isinstance(write, Upsert):
            plan.upserts[key] = write
            if key in stored.tombstoned:
                plan.clear_tombstones.add(key)
        else:
            plan.deletes[key] = write
    return plan
