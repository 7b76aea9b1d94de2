"""The version guard: stale and duplicate events are skipped, deletes leave tombstones.

The property tests replay the same events in any order, any batching and with duplicates
through ``route``, ``resolve`` and an in-memory model of the store, and always reach the state
that the newest event of each key decides. What is newest, and what each event says, the
oracles work out from the test's own description of the events (``Event``), never through
the code under test (``route``, the records' versions).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from models.planet import Planet
from models.registry import build_spec
from streams.core.decisions import Delete, Outcome, Upsert
from streams.core.guard import ZERO_VERSION, Current, Plan, resolve
from streams.core.records import SourceRecord, Version
from streams.core.routing import route

PLANET = build_spec(Planet)


def rec(
    key: str,
    ts: int,
    *,
    name: str | None = None,
    delete: bool = False,
    partition: int = 0,
    offset: int | None = None,
    tombstone: bool = False,
) -> SourceRecord:
    if tombstone:
        value = None
    elif delete:
        value = json.dumps({"planetUuid": key, "changeType": "DELETED"}).encode()
    else:
        value = json.dumps({"planetUuid": key, "planetName": name or f"{key}@{ts}"}).encode()
    return SourceRecord(
        "planet-changed", partition, ts if offset is None else offset, ts, key.encode(), value
    )


@dataclass
class MemoryStore:
    """What the SQL store does with a plan, in dictionaries."""

    rows: dict[Any, tuple[Version, str]] = field(default_factory=dict)
    tombstones: dict[Any, Version] = field(default_factory=dict)

    def current(self) -> dict[Any, Current]:
        keys = set(self.rows) | set(self.tombstones)
        return {
            k: Current(
                row=self.rows[k][0] if k in self.rows else None, tombstone=self.tombstones.get(k)
            )
            for k in keys
        }

    def apply(self, plan: Plan) -> None:
        for key, upsert in plan.upserts.items():
            self.rows[key] = (upsert.version, str(upsert.row["name"]))
            if key in plan.clear_tombstones:
                del self.tombstones[key]
        for key, delete in plan.deletes.items():
            assert delete.version is not None
            self.rows.pop(key, None)
            self.tombstones[key] = delete.version

    def run(self, records: list[SourceRecord]) -> Plan:
        plan = resolve([route(r, PLANET) for r in records], self.current())
        self.apply(plan)
        return plan

    def names(self) -> dict[Any, str]:
        return {k: name for k, (_, name) in self.rows.items()}


def outcomes(plan: Plan) -> list[Outcome]:
    return [outcome for _, outcome in plan.outcomes]


def test_an_older_update_does_not_overwrite_a_newer_one() -> None:
    store = MemoryStore()
    store.run([rec("a", 20, name="new")])
    plan = store.run([rec("a", 10, name="old")])
    assert outcomes(plan) == [Outcome.SKIPPED]
    assert store.names() == {"a": "new"}


def test_within_a_batch_the_newest_version_wins_whatever_the_order() -> None:
    store = MemoryStore()
    plan = store.run([rec("a", 30, name="newest"), rec("a", 10, name="old"), rec("a", 20)])
    assert outcomes(plan) == [Outcome.APPLIED, Outcome.SKIPPED, Outcome.SKIPPED]
    assert store.names() == {"a": "newest"}


def test_a_duplicate_is_skipped() -> None:
    store = MemoryStore()
    store.run([rec("a", 10)])
    assert outcomes(store.run([rec("a", 10)])) == [Outcome.SKIPPED]


def test_a_delete_leaves_a_tombstone_that_blocks_older_events() -> None:
    store = MemoryStore()
    store.run([rec("a", 10), rec("a", 20, delete=True)])
    plan = store.run([rec("a", 15, name="late")])
    assert outcomes(plan) == [Outcome.SKIPPED]
    assert store.names() == {}
    assert store.tombstones == {"a": (20, 0, 20)}


def test_a_newer_create_after_a_delete_recreates_and_clears_the_tombstone() -> None:
    store = MemoryStore()
    store.run([rec("a", 10), rec("a", 20, delete=True)])
    plan = store.run([rec("a", 30, name="back")])
    assert outcomes(plan) == [Outcome.APPLIED]
    assert plan.clear_tombstones == {"a"}
    assert store.names() == {"a": "back"} and store.tombstones == {}


def test_deleting_an_absent_entity_applies_and_leaves_a_tombstone() -> None:
    store = MemoryStore()
    assert outcomes(store.run([rec("ghost", 5, delete=True)])) == [Outcome.APPLIED]
    assert store.tombstones == {"ghost": (5, 0, 5)}
    assert outcomes(store.run([rec("ghost", 4)])) == [Outcome.SKIPPED]


def test_ties_on_timestamp_are_broken_by_partition_then_offset() -> None:
    store = MemoryStore()
    store.run([rec("a", 10, name="p1", partition=1, offset=5)])
    assert outcomes(store.run([rec("a", 10, name="p0", partition=0, offset=99)])) == [
        Outcome.SKIPPED
    ]
    assert outcomes(store.run([rec("a", 10, name="p1b", partition=1, offset=6)])) == [
        Outcome.APPLIED
    ]
    assert store.names() == {"a": "p1b"}


def test_rejections_pass_through_with_their_outcome() -> None:
    bad = SourceRecord("planet-changed", 0, 1, 1, None, b"nope")
    plan = resolve([route(bad, PLANET)], {})
    assert outcomes(plan) == [Outcome.REJECTED]
    assert not plan.upserts and not plan.deletes


def test_a_versionless_tombstone_deletes_whatever_is_there() -> None:
    decision = Delete(key="a", record=rec("a", 1, tombstone=True), version=None)
    plan = resolve([decision], {"a": Current(row=(50, 0, 0))})
    assert plan.deletes["a"].version == (50, 0, 0)
    assert outcomes(plan) == [Outcome.APPLIED]
    plan = resolve([decision], {})
    assert plan.deletes["a"].version == ZERO_VERSION


@dataclass(frozen=True)
class Event:
    """One event as the test made it: what the oracles read instead of the routed record."""

    key: str
    kind: str
    """``update``, ``delete`` (a DELETED event) or ``tombstone`` (a null value)."""
    ts: int
    partition: int
    offset: int
    name: str

    @property
    def position(self) -> Version:
        """Where it was produced: (timestamp, partition, offset)."""
        return (self.ts, self.partition, self.offset)

    @property
    def deletes(self) -> bool:
        return self.kind in ("delete", "tombstone")

    def record(self) -> SourceRecord:
        """Return the Kafka record that carries this event."""
        return rec(
            self.key,
            self.ts,
            name=self.name,
            delete=self.kind == "delete",
            tombstone=self.kind == "tombstone",
            partition=self.partition,
            offset=self.offset,
        )


def _final_by_newest(events: list[Event]) -> dict[str, str]:
    """The greatest (timestamp, partition, offset) of each key decides its state."""
    newest: dict[str, Event] = {}
    for event in events:
        if event.key not in newest or event.position > newest[event.key].position:
            newest[event.key] = event
    return {key: event.name for key, event in newest.items() if not event.deletes}


events = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d"]),
        st.sampled_from(["create", "update", "delete", "tombstone"]),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(events=events, data=st.data())
def test_any_order_batching_and_duplication_ends_in_the_same_state(
    events: list[tuple[str, str]], data: st.DataObject
) -> None:
    made = [
        Event(
            key, "update" if kind in ("create", "update") else kind, ts, ts % 3, ts, f"{key}@{ts}"
        )
        for ts, (key, kind) in enumerate(events, start=1)
    ]
    expected = _final_by_newest(made)
    in_order = data.draw(st.permutations(made))
    duplicates = data.draw(st.lists(st.sampled_from(made), max_size=10))
    delivered = [*in_order, *duplicates]
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(delivered) - 1)), max_size=6)))
    store = MemoryStore()
    total: list[Outcome] = []
    for start, end in zip([0, *cuts], [*cuts, len(delivered)], strict=True):
        total += outcomes(store.run([event.record() for event in delivered[start:end]]))
    assert store.names() == expected
    assert len(total) == len(delivered)
    # Exactly the events newer than every earlier delivery of their key apply, as one by one.
    newest: dict[str, Version] = {}
    applies = []
    for event in delivered:
        applies.append(event.key not in newest or event.position > newest[event.key])
        if applies[-1]:
            newest[event.key] = event.position
    assert [outcome == Outcome.APPLIED for outcome in total] == applies
    # A duplicate, delivered after its first copy, is never newer than it: always skipped.
    assert total[len(in_order) :] == [Outcome.SKIPPED] * len(duplicates)


def test_a_later_event_of_the_same_partition_applies_whatever_its_timestamp() -> None:
    # A producer whose clock is 2 s behind updates right after a create from another host.
    store = MemoryStore()
    store.run([rec("a", 10_000, name="created", partition=1, offset=7)])
    plan = store.run([rec("a", 8_000, name="updated", partition=1, offset=8)])
    assert outcomes(plan) == [Outcome.APPLIED]
    assert store.names() == {"a": "updated"}
    # Its version keeps the partition's order: the create's timestamp, its own offset.
    assert store.rows["a"][0] == (10_000, 1, 8)
    # Through another partition, timestamps still decide.
    assert outcomes(store.run([rec("a", 9_000, name="other", partition=2, offset=3)])) == [
        Outcome.SKIPPED
    ]
    # A delete later in the partition applies too, and its tombstone keeps the order.
    store.run([rec("a", 1_000, delete=True, partition=1, offset=9)])
    assert store.names() == {} and store.tombstones == {"a": (10_000, 1, 9)}


def test_a_record_stamped_in_the_future_holds_its_entity_only_in_other_partitions() -> None:
    store = MemoryStore()
    store.run([rec("a", 3_600_000, name="ahead", partition=0, offset=1)])
    assert outcomes(store.run([rec("a", 5, name="later", partition=0, offset=2)])) == [
        Outcome.APPLIED
    ]
    assert store.names() == {"a": "later"}


def test_a_clock_bounds_how_far_ahead_a_version_goes() -> None:
    from streams.core.routing import Clock

    ahead = rec("a", 3_600_000, name="ahead", partition=0, offset=1)
    decision = route(ahead, PLANET, clock=Clock(ahead_limit=60_000))
    assert isinstance(decision, Upsert) and decision.version == (60_000, 0, 1)
    tombstone = route(rec("a", 3_600_000, tombstone=True), PLANET, clock=Clock(60_000))
    assert isinstance(tombstone, Delete) and tombstone.version == (60_000, 0, 3_600_000)


def _partition_order_oracle(events: list[Event]) -> dict[str, str]:
    """The ordering of docs/guarantees.md, without the guard's code: each event's timestamp
    counts as the largest of its key's in its partition up to it; the greatest version wins."""
    lifted: dict[tuple[str, int], int] = {}
    newest: dict[str, tuple[Version, Event]] = {}
    for event in sorted(events, key=lambda e: (e.partition, e.offset)):
        stamp = max(event.ts, lifted.get((event.key, event.partition), event.ts))
        lifted[(event.key, event.partition)] = stamp
        version = (stamp, event.partition, event.offset)
        if event.key not in newest or version > newest[event.key][0]:
            newest[event.key] = (version, event)
    return {key: event.name for key, (_, event) in newest.items() if not event.deletes}


skewed = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from(["update", "delete", "tombstone"]),
        st.integers(0, 2),  # partition
        st.integers(1, 50),  # timestamp: producers' clocks disagree
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=400, deadline=None)
@given(events=skewed, data=st.data())
def test_partitions_in_any_interleaving_and_batching_end_as_partition_order_says(
    events: list[tuple[str, str, int, int]], data: st.DataObject
) -> None:
    offsets = [0, 0, 0]
    by_partition: list[list[Event]] = [[], [], []]
    for key, kind, partition, ts in events:
        offsets[partition] += 1
        offset = offsets[partition]
        name = f"{key}-{partition}-{offset}"
        by_partition[partition].append(Event(key, kind, ts, partition, offset, name))
    made = [event for part in by_partition for event in part]
    # Deliver the partitions interleaved at random, each in its own order.
    pending = [list(part) for part in by_partition]
    delivered = []
    while any(pending):
        choice = data.draw(st.sampled_from([i for i, p in enumerate(pending) if p]))
        delivered.append(pending[choice].pop(0).record())
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(delivered) - 1)), max_size=6)))
    batched, one_by_one = MemoryStore(), MemoryStore()
    total: list[Outcome] = []
    for start, end in zip([0, *cuts], [*cuts, len(delivered)], strict=True):
        total += outcomes(batched.run(delivered[start:end]))
    alone = [o for r in delivered for o in outcomes(one_by_one.run([r]))]
    assert batched.names() == one_by_one.names() == _partition_order_oracle(made)
    assert total == alone
