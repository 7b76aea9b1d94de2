"""The SQL store and the SqlApplier on SQLite and PostgreSQL: changeType x entity present/absent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from models.base import MirroredEntity
from models.planet import Planet
from models.registry import EntitySpec, Registry, build_spec, default_registry
from models.store import SqlStore
from models.store.schema import reads_back_as_written
from streams.apply.sql_applier import SqlApplier
from streams.core.decisions import Outcome, Rejection, RejectReason
from streams.core.records import SourceRecord

PLANET = build_spec(Planet)


@pytest.fixture
def mirror(db_url: str) -> Iterator[SqlApplier]:
    store = SqlStore.from_url(db_url)
    store.create_tables(list(default_registry))
    yield SqlApplier(default_registry, store, group="test")
    store.dispose()


_offsets = iter(range(1_000_000))


def rec(event: dict[str, Any] | None) -> SourceRecord:
    offset = next(_offsets)
    value = None if event is None else json.dumps(event).encode()
    return SourceRecord("planet-changed", 0, offset, 1_000 + offset, b"p1", value)


def rows(mirror: SqlApplier, spec: EntitySpec = PLANET) -> dict[Any, Any]:
    return {k: v["name"] for k, v in mirror.store.rows(spec).items()}


@pytest.mark.parametrize("present", [False, True], ids=["absent", "present"])
@pytest.mark.parametrize("change", ["CREATED", "UPDATED", None, "DELETED"])
def test_change_type_semantics(mirror: SqlApplier, change: str | None, present: bool) -> None:
    if present:
        mirror.apply(PLANET, [rec({"planetUuid": "p1", "planetName": "Old"})])
    event: dict[str, Any] = {"planetUuid": "p1", "planetName": "New"}
    if change is not None:
        event["changeType"] = change
    result = mirror.apply(PLANET, [rec(event)])
    assert [r.outcome for r in result.results] == [Outcome.APPLIED]
    expected = {} if change == "DELETED" else {"p1": "New"}
    assert rows(mirror) == expected


def test_unknown_change_type_leaves_the_row_and_the_batch_goes_on(mirror: SqlApplier) -> None:
    result = mirror.apply(
        PLANET,
        [
            rec({"planetUuid": "p1", "planetName": "A"}),
            rec({"planetUuid": "p1", "planetName": "B", "changeType": "MERGED"}),
            rec({"planetUuid": "p2", "planetName": "C", "changeType": "CREATED"}),
        ],
    )
    assert [r.outcome for r in result.results] == [
        Outcome.APPLIED,
        Outcome.REJECTED,
        Outcome.APPLIED,
    ]
    assert rows(mirror) == {"p1": "A", "p2": "C"}


def test_values_no_column_can_hold_are_rejected_before_any_sql(mirror: SqlApplier) -> None:
    result = mirror.apply(
        PLANET,
        [
            rec({"planetUuid": "ok1", "planetName": "A"}),
            rec({"planetUuid": "bad", "changeType": "CREATED"}),  # NOT NULL
            rec({"planetUuid": "nul", "planetName": "a\x00b"}),  # no NUL in text, anywhere
            rec({"planetUuid": "o\x00k", "planetName": "C"}),  # nor in a key
            rec({"planetUuid": "obj", "planetName": {"a": 1}}),  # not text
            rec({"planetUuid": "ok2", "planetName": "B"}),
        ],
    )
    reasons = [
        r.decision.reason if isinstance(r.decision, Rejection) else None for r in result.results
    ]
    assert reasons == [
        None,
        RejectReason.INVALID_ROW,
        RejectReason.INVALID_ROW,
        RejectReason.BAD_KEY,
        RejectReason.INVALID_ROW,
        None,
    ]
    assert rows(mirror) == {"ok1": "A", "ok2": "B"}


class CheckedBase(DeclarativeBase):
    metadata = MetaData()


class Asteroid(MirroredEntity, CheckedBase):
    """An entity whose table has a constraint only the database knows (a CHECK)."""

    __tablename__ = "test_asteroid"
    __topic__ = "asteroid-changed"
    __event_fields__ = {"code": "code", "mass": "mass"}
    __table_args__ = (CheckConstraint("mass >= 0", name="mass_not_negative"),)

    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    mass: Mapped[int] = mapped_column(Integer, nullable=False)


default_registry.unregister(Asteroid)  # declared for the test below only


def test_a_row_the_database_refuses_is_rejected_alone(db_url: str) -> None:
    registry = Registry()
    spec = registry.register(Asteroid)
    store = SqlStore.from_url(db_url)
    try:
        store.create_tables([spec])
        mirror = SqlApplier(registry, store, group="test")
        records = [
            SourceRecord("asteroid-changed", 0, i, 1_000 + i, None, json.dumps(event).encode())
            for i, event in enumerate(
                [{"code": "a", "mass": 1}, {"code": "b", "mass": -5}, {"code": "c", "mass": 3}]
            )
        ]
        result = mirror.apply(spec, records)
        reasons = [
            r.decision.reason if isinstance(r.decision, Rejection) else None for r in result.results
        ]
        assert reasons == [None, RejectReason.STORE_REFUSED, None]
        assert sorted(store.rows(spec)) == ["a", "c"]
    finally:
        store.dispose()


def test_a_table_changed_under_a_running_worker_refuses_rows_on_either_database(
    mirror: SqlApplier,
) -> None:
    # A column dropped while the worker runs: PostgreSQL says so with a ProgrammingError,
    # SQLite with the OperationalError it also uses for a busy database; both are the
    # table's refusal (dead letters with the database's message), not an outage to retry.
    from sqlalchemy import text

    with mirror.store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE servicea_planet DROP COLUMN name"))
    result = mirror.apply(PLANET, [rec({"planetUuid": "p1", "planetName": "Mars"})])
    (refused,) = result.results
    assert isinstance(refused.decision, Rejection)
    assert refused.decision.reason is RejectReason.STORE_REFUSED
    assert "name" in refused.decision.detail


def test_kafka_tombstone_deletes_by_record_key(mirror: SqlApplier) -> None:
    mirror.apply(PLANET, [rec({"planetUuid": "p1", "planetName": "A"}), rec(None)])
    assert rows(mirror) == {}


def test_a_large_batch_with_many_deletes_is_one_transaction(mirror: SqlApplier) -> None:
    creates = [rec({"planetUuid": f"k{i}", "planetName": f"n{i}"}) for i in range(1500)]
    deletes = [rec({"planetUuid": f"k{i}", "changeType": "DELETED"}) for i in range(0, 1500, 2)]
    mirror.apply(PLANET, creates)
    result = mirror.apply(PLANET, deletes)
    assert result.count(Outcome.APPLIED) == 750
    assert mirror.store.count(PLANET) == 750


def rec_at(
    event: dict[str, Any] | None, *, ts: int, partition: int = 0, offset: int
) -> SourceRecord:
    value = None if event is None else json.dumps(event).encode()
    return SourceRecord("planet-changed", partition, offset, ts, b"p1", value)


def test_an_older_event_never_overwrites_newer_state(mirror: SqlApplier) -> None:
    mirror.apply(PLANET, [rec_at({"planetUuid": "p1", "planetName": "new"}, ts=200, offset=5)])
    # Older through another partition (timestamps order partitions): skipped.
    result = mirror.apply(
        PLANET, [rec_at({"planetUuid": "p1", "planetName": "old"}, ts=100, partition=1, offset=6)]
    )
    assert [r.outcome for r in result.results] == [Outcome.SKIPPED]
    assert rows(mirror) == {"p1": "new"}
    row = mirror.store.rows(PLANET)["p1"]
    assert (row["mirror_version"], row["mirror_partition"], row["mirror_offset"]) == (200, 0, 5)
    # Later in the same partition, whatever its clock said: newer, and it keeps the order.
    later = mirror.apply(
        PLANET, [rec_at({"planetUuid": "p1", "planetName": "later"}, ts=100, offset=6)]
    )
    assert [r.outcome for r in later.results] == [Outcome.APPLIED]
    row = mirror.store.rows(PLANET)["p1"]
    assert (row["name"], row["mirror_version"], row["mirror_offset"]) == ("later", 200, 6)


def test_no_resurrection_but_a_newer_create_recreates(mirror: SqlApplier) -> None:
    mirror.apply(
        PLANET,
        [
            rec_at({"planetUuid": "p1", "planetName": "A"}, ts=100, offset=0),
            rec_at({"planetUuid": "p1", "changeType": "DELETED"}, ts=300, offset=1),
        ],
    )
    late = mirror.apply(
        PLANET,
        [
            rec_at(
                {"planetUuid": "p1", "planetName": "late", "changeType": "CREATED"},
                ts=200,
                partition=1,
                offset=2,
            )
        ],
    )
    assert [r.outcome for r in late.results] == [Outcome.SKIPPED]
    assert rows(mirror) == {}
    again = mirror.apply(
        PLANET,
        [
            rec_at(
                {"planetUuid": "p1", "planetName": "B", "changeType": "CREATED"}, ts=400, offset=3
            )
        ],
    )
    assert [r.outcome for r in again.results] == [Outcome.APPLIED]
    assert rows(mirror) == {"p1": "B"}


def test_a_replayed_batch_changes_nothing_and_is_not_counted_twice(mirror: SqlApplier) -> None:
    batch = [
        rec_at(
            {"planetUuid": f"k{i % 7}", "planetName": f"n{i}"},
            ts=1000 + i,
            offset=i,
            partition=i % 2,
        )
        for i in range(40)
    ] + [rec_at({"planetUuid": "k1", "changeType": "DELETED"}, ts=5000, offset=40)]
    first = mirror.apply(PLANET, batch)
    before = mirror.store.rows(PLANET)
    counts = mirror.store.outcome_counts("test")
    assert sum(counts.values()) == len(batch)
    replay = mirror.apply(PLANET, batch)
    assert all(r.replayed for r in replay.results)
    assert mirror.store.rows(PLANET) == before
    assert mirror.store.outcome_counts("test") == counts
    assert first.count(Outcome.APPLIED) == len(batch)
    assert mirror.store.stored_offsets("test") == {
        ("planet-changed", 0): 41,
        ("planet-changed", 1): 40,
    }


def test_a_record_delivered_twice_in_one_batch_is_applied_and_counted_once(
    mirror: SqlApplier,
) -> None:
    first = rec_at({"planetUuid": "d1", "planetName": "one"}, ts=1000, offset=0)
    second = rec_at({"planetUuid": "d1", "planetName": "two"}, ts=1001, offset=1)
    again = rec_at({"planetUuid": "d1", "planetName": "one"}, ts=1000, offset=0)  # a new copy
    result = mirror.apply(PLANET, [first, second, again], read_back=True)
    assert [(r.outcome, r.replayed) for r in result.results] == [
        (Outcome.APPLIED, False),
        (Outcome.APPLIED, False),
        (Outcome.SKIPPED, True),
    ]
    assert rows(mirror) == {"d1": "two"}
    assert sum(mirror.store.outcome_counts("test").values()) == 2
    assert {k: (v or {}).get("name") for k, (v, _) in result.states.items()} == {"d1": "two"}


def test_read_back_gives_the_rows_a_batch_changed_and_those_its_replays_name(
    mirror: SqlApplier,
) -> None:
    batch = [
        rec_at({"planetUuid": "r1", "planetName": "a"}, ts=1000, offset=0),
        rec_at({"planetUuid": "r2", "planetName": "b"}, ts=1001, offset=1),
        rec_at({"planetUuid": "r2", "changeType": "DELETED"}, ts=1002, offset=2),
        rec_at({"planetUuid": "r3", "changeType": "WEIRD"}, ts=1003, offset=3),
    ]
    first = mirror.apply(PLANET, batch, read_back=True)
    assert {k: ((v or {}).get("name"), r.offset) for k, (v, r) in first.states.items()} == {
        "r1": ("a", 0),
        "r2": (None, 2),
    }
    replay = mirror.apply(PLANET, batch, read_back=True)
    assert all(r.replayed for r in replay.results)
    # A replay still names its keys, read back as committed: a cache that missed them repairs.
    assert {k: (v or {}).get("name") for k, (v, _) in replay.states.items()} == {
        "r1": "a",
        "r2": None,
    }
    assert replay.states["r1"][0] == first.states["r1"][0]
    assert mirror.apply(PLANET, batch).states == {}  # nothing read without read_back
    stale = mirror.apply(
        PLANET,
        [rec_at({"planetUuid": "r1", "planetName": "old"}, ts=10, partition=1, offset=4)],
        read_back=True,
    )
    assert stale.states == {}  # a stale event changes nothing: the cache has the newer state


@pytest.mark.parametrize("count", [3, 150], ids=["values", "copy"])
def test_rows_taken_from_the_write_are_the_rows_the_table_holds(
    mirror: SqlApplier, count: int
) -> None:
    # Planet's columns are text: the cache takes a full upsert's row from the write itself.
    assert reads_back_as_written(PLANET.table)
    batch = [
        rec_at({"planetUuid": f"w{i}", "planetName": f"name é 中 \t {i}"}, ts=1000 + i, offset=i)
        for i in range(count)
    ]
    batch.append(rec_at({"planetUuid": "w0", "changeType": "DELETED"}, ts=5000, offset=count))
    batch.append(rec_at({"planetUuid": "w0", "planetName": "back"}, ts=5001, offset=count + 1))
    result = mirror.apply(PLANET, batch, read_back=True)
    table = mirror.store.rows(PLANET)
    assert {k: dict(row or {}) for k, (row, _) in result.states.items()} == {
        k: {"uuid": row["uuid"], "name": row["name"]} for k, row in table.items()
    }
    assert table["w0"]["name"] == "back"


def test_tombstones_are_purged_after_retention(mirror: SqlApplier) -> None:
    mirror.apply(PLANET, [rec_at({"planetUuid": "p1", "changeType": "DELETED"}, ts=1, offset=0)])
    assert mirror.store.purge_tombstones(PLANET, older_than_ms=0) == 0
    assert mirror.store.purge_tombstones(PLANET, older_than_ms=2**62) == 1


def test_a_refused_newest_event_does_not_hide_an_older_good_one(pg_url: str) -> None:
    # PostgreSQL only: SQLite stores NUL characters, so there is nothing it refuses here.
    store = SqlStore.from_url(pg_url)
    store.create_tables([PLANET])
    mirror = SqlApplier(default_registry, store, group="test")
    result = mirror.apply(
        PLANET,
        [
            rec_at({"planetUuid": "p1", "planetName": "good"}, ts=1, offset=0),
            rec_at({"planetUuid": "p1", "planetName": "a\x00b"}, ts=2, offset=1),
        ],
    )
    assert [r.outcome for r in result.results] == [Outcome.APPLIED, Outcome.REJECTED]
    assert rows(mirror) == {"p1": "good"}
    store.dispose()


def test_values_from_events_are_parameters_never_sql(mirror: SqlApplier) -> None:
    payload = "x'); DROP TABLE servicea_planet; --"
    quoted_key = "k' OR '1'='1"
    mirror.apply(
        PLANET,
        [
            rec({"planetUuid": quoted_key, "planetName": payload}),
            rec({"planetUuid": "other", "planetName": "o"}),
            rec({"planetUuid": quoted_key + "x", "changeType": "DELETED"}),
        ],
    )
    assert rows(mirror) == {quoted_key: payload, "other": "o"}


class Probe(MirroredEntity, CheckedBase):
    """An entity with a column of every kind the COPY encoding handles."""

    __tablename__ = "test_probe"
    __topic__ = "probe-changed"
    __event_fields__ = {
        "code": "code",
        "label": "label",
        "note": "note",
        "count": "count",
        "ratio": "ratio",
        "active": "active",
        "seen_at": "seenAt",
        "day": "day",
        "extra": "extra",
    }

    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    label: Mapped[str] = mapped_column(String(200), nullable=False)
    note: Mapped[str | None] = mapped_column(String(200), nullable=True)
    count: Mapped[int] = mapped_column(BigInteger, nullable=False)
    ratio: Mapped[float | None] = mapped_column(Float, nullable=True)
    active: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    day: Mapped[date | None] = mapped_column(Date, nullable=True)
    extra: Mapped[Any] = mapped_column(JSON, nullable=True)


default_registry.unregister(Probe)


def test_a_large_batch_of_every_column_kind_is_written_exactly(db_url: str) -> None:
    registry = Registry()
    spec = registry.register(Probe)
    store = SqlStore.from_url(db_url)
    try:
        store.create_tables([spec])
        mirror = SqlApplier(registry, store, group="test")
        events = [
            {
                "code": f"c{i}",
                "label": ["plain", "tab\there", "new\nline", "back\\slash", "cr\rx", "é ü 中"][
                    i % 6
                ]
                + str(i),
                "note": None if i % 3 == 0 else f"note {i}",
                "count": 2**40 + i,
                "ratio": None if i % 5 == 0 else i / 7,
                "active": [True, False, None][i % 3],
                "seenAt": "2026-12-01T10:00:00+00:00" if i % 2 else None,
                "day": "2026-12-02" if i % 4 else None,
                "extra": {"i": i, "text": "a\tb\\c\nd"} if i % 2 else None,
            }
            for i in range(120)  # past the COPY threshold
        ]
        records = [
            SourceRecord("probe-changed", 0, i, 1_000 + i, None, json.dumps(e).encode())
            for i, e in enumerate(events)
        ]
        result = mirror.apply(spec, records, read_back=True)
        assert result.count(Outcome.APPLIED) == 120
        rows = store.rows(spec)
        for i, event in enumerate(events):
            row = rows[f"c{i}"]
            assert row["label"] == event["label"]
            assert row["note"] == event["note"]
            assert row["count"] == event["count"]
            assert row["ratio"] == event["ratio"]
            assert row["active"] == event["active"]
            assert (row["seen_at"] is None) == (event["seenAt"] is None)
            if event["seenAt"]:
                assert row["seen_at"].replace(tzinfo=None) == datetime(2026, 12, 1, 10)
            assert row["day"] == (date(2026, 12, 2) if event["day"] else None)
            assert row["extra"] == event["extra"]
        # What the upsert returned for the cache is what the table holds.
        assert result.states["c7"][0] == {
            k: v for k, v in rows["c7"].items() if not k.startswith("mirror_")
        }
    finally:
        store.dispose()


def test_two_transactions_writing_one_key_at_once_never_resurrect_it(pg_url: str) -> None:
    """A delete and an older upsert of one key from two partitions, applied at the same time
    (two apply lanes or two workers, records not keyed by entity): the delete wins, always."""
    import threading

    registry = Registry()
    registry.register(Planet)
    store = SqlStore.from_url(pg_url)
    store.create_tables([PLANET])
    mirror = SqlApplier(registry, store, group="race")
    try:
        for round_ in range(60):
            keys = [f"r{round_}-{i}" for i in range(50)]
            base = 1_000_000 * (round_ + 1)
            upserts = [
                SourceRecord(
                    "planet-changed",
                    1,
                    round_ * 100 + i,
                    base + 10,  # older than the deletes
                    None,  # not keyed by entity: the key may be in any partition
                    json.dumps({"planetUuid": k, "planetName": "zombie"}).encode(),
                )
                for i, k in enumerate(keys)
            ]
            deletes = [
                SourceRecord(
                    "planet-changed",
                    0,
                    round_ * 100 + i,
                    base + 20,
                    None,
                    json.dumps({"planetUuid": k, "changeType": "DELETED"}).encode(),
                )
                for i, k in enumerate(keys)
            ]
            start = threading.Barrier(2)

            def apply(records: list[SourceRecord], start: threading.Barrier) -> None:
                start.wait()
                mirror.apply(PLANET, records)

            threads = [threading.Thread(target=apply, args=(b, start)) for b in (upserts, deletes)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            alive = set(store.rows(PLANET)) & set(keys)
            assert not alive, f"round {round_}: {len(alive)} keys came back after their delete"
    finally:
        store.dispose()


def planet_at(partition: int, offset: int, name: str) -> SourceRecord:
    event = {"planetUuid": f"p-{partition}", "planetName": name}
    return SourceRecord(
        "planet-changed", partition, offset, 1_000 + offset, None, json.dumps(event).encode()
    )


def test_a_batch_that_does_not_follow_on_from_the_stored_offset_commits_nothing(
    mirror: SqlApplier,
) -> None:
    from streams.core.errors import OffsetGap

    p0, p1 = ("planet-changed", 0), ("planet-changed", 1)
    mirror.apply(PLANET, [planet_at(0, o, f"n{o}") for o in range(5)], starts={p0: 0})
    counts = mirror.store.outcome_counts("test")
    # Records 5..9 of partition 0 never reached the database (a batch lost on its way): the
    # next batch, 10..14, must not store 15 over them. Partition 1's records go down with it.
    later = [planet_at(0, o, f"n{o}") for o in range(10, 15)] + [planet_at(1, 0, "q")]
    with pytest.raises(OffsetGap) as raised:
        mirror.apply(PLANET, later, starts={p0: 10, p1: 0})
    assert [(g.topic, g.partition, g.continues, g.stored) for g in raised.value.gaps] == [
        ("planet-changed", 0, 10, 5)
    ]
    assert mirror.store.stored_offsets("test") == {p0: 5}
    assert rows(mirror) == {"p-0": "n4"}
    assert mirror.store.outcome_counts("test") == counts
    # A batch that says nothing of where it starts is refused too.
    with pytest.raises(OffsetGap):
        mirror.apply(PLANET, [planet_at(1, 0, "q")], starts={})
    # Following on (replays below the stored offset included) it goes through.
    result = mirror.apply(
        PLANET,
        [planet_at(0, o, f"n{o}") for o in range(3, 8)] + [planet_at(1, 0, "q")],
        starts={p0: 3, p1: 0},
    )
    assert [r.replayed for r in result.results] == [True, True, False, False, False, False]
    assert mirror.store.stored_offsets("test") == {p0: 8, p1: 1}
    assert rows(mirror) == {"p-0": "n7", "p-1": "q"}


def test_a_connection_lost_mid_batch_is_a_passing_failure(server_db_url: str) -> None:
    # The server ends the batch's session between two writes (a restart, a failover): the
    # batch fails with an error a retry fixes, never one that holds its partitions for good.
    from sqlalchemy import create_engine, text

    from streams.core.decisions import ChangeType, Upsert
    from streams.core.errors import StoreUnavailableError
    from streams.core.guard import Plan

    mysql = server_db_url.startswith("mysql")
    whoami = "SELECT CONNECTION_ID()" if mysql else "SELECT pg_backend_pid()"
    store = SqlStore.from_url(server_db_url)
    admin = create_engine(server_db_url, isolation_level="AUTOCOMMIT")

    def plan(key: str) -> Plan:
        upsert = Upsert(key, {"uuid": key, "name": key}, ChangeType.CREATED, rec(None), (1, 0, 0))
        return Plan(upserts={key: upsert})

    try:
        store.create_tables([PLANET])
        with pytest.raises(StoreUnavailableError), store.transaction("apply") as tx:
            tx.write(PLANET, plan("a"))
            session = tx.conn.execute(text(whoami)).scalar_one()
            with admin.connect() as conn:
                end = f"KILL {session}" if mysql else f"SELECT pg_terminate_backend({session})"
                conn.execute(text(end))
            tx.write(PLANET, plan("b"))
        assert store.rows(PLANET) == {}  # nothing of the batch was committed
    finally:
        admin.dispose()
        store.dispose()
