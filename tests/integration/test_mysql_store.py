"""The traps of MySQL and MariaDB, each against the real MariaDB server (models/store/mysql.py).

Each test fails without the handling it names. The database of each test is created with
MariaDB's least helpful defaults (``latin1``, a case- and accent-insensitive collation), so
what the store gets right it gets right by itself.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import BigInteger, MetaData, String, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from models.base import MirroredEntity
from models.planet import Planet
from models.registry import Registry, build_spec, default_registry
from models.store import SqlStore
from models.store.mysql import SQL_MODE
from streams.apply.sql_applier import SqlApplier
from streams.core.decisions import ChangeType, Outcome, Rejection, RejectReason, Upsert
from streams.core.errors import StoreConflict, StoreError, UnfitTable
from streams.core.guard import Plan
from streams.core.records import SourceRecord

PLANET = build_spec(Planet)


@pytest.fixture
def maria(mariadb_server_url: str) -> Iterator[str]:
    """URL of a fresh database whose defaults merge keys: latin1, case-insensitive."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(mariadb_server_url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE DATABASE {name} CHARACTER SET latin1 COLLATE latin1_swedish_ci"))
    yield make_url(mariadb_server_url).set(database=name).render_as_string(hide_password=False)
    with admin.begin() as conn:
        conn.execute(text(f"DROP DATABASE {name}"))
    admin.dispose()


@pytest.fixture
def mirror(maria: str) -> Iterator[SqlApplier]:
    store = SqlStore.from_url(maria)
    store.create_tables(list(default_registry))
    yield SqlApplier(default_registry, store, group="test")
    store.dispose()


_offsets = iter(range(1_000_000))


def rec(event: dict[str, Any] | None, key: bytes | None = None) -> SourceRecord:
    offset = next(_offsets)
    value = None if event is None else json.dumps(event).encode()
    return SourceRecord("planet-changed", 0, offset, 1_000 + offset, key, value)


def planet(uuid_: str, name: str) -> SourceRecord:
    return rec({"planetUuid": uuid_, "planetName": name, "changeType": "CREATED"})


def upsert(key: str, row: dict[str, Any], version: tuple[int, int, int]) -> Upsert:
    """A write as a batch's plan holds it (the tests that write plans skip the routing)."""
    return Upsert(key, row, ChangeType.CREATED, rec(None), version)


def names(mirror: SqlApplier) -> dict[Any, Any]:
    return {k: v["name"] for k, v in mirror.store.rows(PLANET).items()}


def test_keys_that_differ_in_case_accent_or_trailing_space_are_rows_of_their_own(
    mirror: SqlApplier,
) -> None:
    keys = ["ABC", "abc", "abc ", "e", "é", "ß", "ss"]
    mirror.apply(PLANET, [planet(k, f"name of {k!r}") for k in keys])
    assert names(mirror) == {k: f"name of {k!r}" for k in keys}
    # Deletes and their tombstones are per key too: deleting one leaves its look-alikes.
    mirror.apply(PLANET, [rec({"planetUuid": "abc", "changeType": "DELETED"})])
    mirror.apply(PLANET, [planet("ABC", "again")])
    assert set(names(mirror)) == set(keys) - {"abc"}
    assert names(mirror)["ABC"] == "again"


MERGING_KEYS = "ENGINE=InnoDB CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"


def make_planet_table(url: str, options: str, key_collation: str = "") -> None:
    """Create the planet's table by hand, as an older deployment or a DBA might have."""
    collate = f" COLLATE {key_collation}" if key_collation else ""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                f"CREATE TABLE servicea_planet (uuid VARCHAR(64){collate} PRIMARY KEY, "
                "name VARCHAR(255) NOT NULL, mirror_version BIGINT NOT NULL, "
                "mirror_partition INTEGER NOT NULL, mirror_offset BIGINT NOT NULL) " + options
            )
        )
    engine.dispose()


def test_a_table_whose_key_collation_merges_keys_is_refused_at_start(maria: str) -> None:
    make_planet_table(maria, MERGING_KEYS)
    store = SqlStore.from_url(maria)
    try:
        with pytest.raises(UnfitTable, match=r"servicea_planet\.uuid .*utf8mb4_general_ci"):
            store.create_tables([PLANET])
    finally:
        store.dispose()


@pytest.mark.parametrize(
    ("engine_clause", "match"),
    [("ENGINE=MyISAM", "MyISAM engine"), ("ENGINE=InnoDB CHARACTER SET latin1", "latin1")],
    ids=["myisam", "latin1"],
)
def test_a_table_that_cannot_keep_the_guarantees_is_refused_at_start(
    maria: str, engine_clause: str, match: str
) -> None:
    make_planet_table(maria, engine_clause, key_collation="utf8mb4_nopad_bin")
    store = SqlStore.from_url(maria)
    try:
        with pytest.raises(UnfitTable, match=match):
            store.create_tables([PLANET])
    finally:
        store.dispose()


def test_four_byte_characters_quotes_backslashes_and_nul_round_trip(mirror: SqlApplier) -> None:
    awkward = '🪐 it\'s a "planet" \\ with\nnewline\r\x1a and NUL \x00 inside'
    spec = PLANET
    with mirror.store.transaction("write") as tx:
        plan = Plan()
        plan.upserts["k🪐"] = upsert("k🪐", {"uuid": "k🪐", "name": awkward}, (1, 0, 1))
        refused, _ = tx.write(spec, plan)
    assert refused == []
    assert names(mirror) == {"k🪐": awkward}


def test_strict_mode_refuses_a_value_that_does_not_fit_instead_of_altering_it(
    mirror: SqlApplier, mariadb_server_url: str
) -> None:
    # The server's own default is not relied on: with it lenient, the worker's connections are
    # still strict (a too-long name would otherwise be stored cut to 255 characters).
    admin = create_engine(mariadb_server_url)
    with admin.begin() as conn:
        was = conn.execute(text("SELECT @@GLOBAL.sql_mode")).scalar_one()
        conn.execute(text("SET GLOBAL sql_mode = ''"))
    try:
        mirror.store.dispose()  # new connections, under the lenient default
        with mirror.store.engine.connect() as conn:
            assert conn.execute(text("SELECT @@SESSION.sql_mode")).scalar_one() == SQL_MODE
        with mirror.store.transaction("write") as tx:
            plan = Plan()
            too_long = "x" * 256
            plan.upserts["long"] = upsert("long", {"uuid": "long", "name": too_long}, (1, 0, 1))
            plan.upserts["fine"] = upsert("fine", {"uuid": "fine", "name": "ok"}, (1, 0, 2))
            refused, _ = tx.write(PLANET, plan)
        assert [r.write.key for r in refused] == ["long"]
        assert "too long" in refused[0].message.lower()
        assert names(mirror) == {"fine": "ok"}
    finally:
        with admin.begin() as conn:
            conn.execute(text("SET GLOBAL sql_mode = :mode"), {"mode": was})
        admin.dispose()


@pytest.mark.parametrize(
    ("stored", "incoming", "wins"),
    [
        ((5, 0, 3), (5, 0, 4), True),  # newer by offset only
        ((5, 0, 9), (5, 1, 0), True),  # newer by partition, with a lower offset
        ((5, 1, 0), (5, 0, 9), False),  # older by partition, with a higher offset
        ((5, 2, 2), (6, 0, 0), True),  # newer by version, lower partition and offset
        ((6, 0, 0), (5, 9, 9), False),  # older by version, higher partition and offset
        ((5, 1, 1), (5, 1, 1), False),  # the same version: nothing to do
    ],
)
def test_the_version_guard_holds_although_mysql_assigns_left_to_right(
    mirror: SqlApplier,
    stored: tuple[int, int, int],
    incoming: tuple[int, int, int],
    wins: bool,
) -> None:
    def write(name: str, version: tuple[int, int, int]) -> None:
        with mirror.store.transaction("write") as tx:
            plan = Plan()
            plan.upserts["p"] = upsert("p", {"uuid": "p", "name": name}, version)
            assert tx.write(PLANET, plan)[0] == []

    write("stored", stored)
    write("incoming", incoming)
    row = mirror.store.get(PLANET, "p")
    assert row is not None
    expected = incoming if wins else stored
    assert row["name"] == ("incoming" if wins else "stored")
    assert (row["mirror_version"], row["mirror_partition"], row["mirror_offset"]) == expected


def test_ddl_inside_a_batch_is_refused_instead_of_committing_the_batch_halfway(
    mirror: SqlApplier,
) -> None:
    with pytest.raises(StoreError, match="commit"), mirror.store.transaction("write") as tx:
        plan = Plan()
        plan.upserts["p"] = upsert("p", {"uuid": "p", "name": "half"}, (1, 0, 1))
        tx.write(PLANET, plan)
        tx.conn.execute(text("CREATE TABLE stray (id INTEGER PRIMARY KEY)"))
    assert names(mirror) == {}


class DeadlockBase(DeclarativeBase):
    metadata = MetaData()


class Moon(MirroredEntity, DeadlockBase):
    """Two entities, so two batches lock in opposite orders."""

    __tablename__ = "servicea_moon"
    __topic__ = "moon-changed"
    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    mass: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)


default_registry.unregister(Moon)


def test_a_deadlock_between_two_batches_is_a_passing_failure(maria: str) -> None:
    registry = Registry()
    moon = registry.register(Moon)
    store = SqlStore.from_url(maria)
    store.create_tables([moon])
    both_wrote = threading.Barrier(2, timeout=30)
    errors: list[BaseException] = []

    def batch(first: str, second: str) -> None:
        try:
            with store.transaction("write") as tx:
                for n, key in enumerate((first, second)):
                    plan = Plan()
                    plan.upserts[key] = upsert(key, {"code": key, "mass": 1}, (1, 0, n))
                    tx.write(moon, plan)
                    if n == 0:
                        both_wrote.wait()
        except BaseException as exc:
            errors.append(exc)

    try:
        with store.transaction("seed") as tx:
            plan = Plan()
            for key in ("a", "b"):
                plan.upserts[key] = upsert(key, {"code": key, "mass": 0}, (0, 0, 0))
            tx.write(moon, plan)
        threads = [
            threading.Thread(target=batch, args=("a", "b")),
            threading.Thread(target=batch, args=("b", "a")),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        (error,) = errors  # one of the two was chosen as the deadlock's victim
        assert isinstance(error, StoreConflict) and error.retriable
        assert "deadlock" in str(error).lower()
    finally:
        store.dispose()


def test_a_poison_event_and_a_refused_row_are_dead_letters_on_mariadb(mirror: SqlApplier) -> None:
    result = mirror.apply(
        PLANET,
        [
            planet("ok", "fine"),
            rec({"planetUuid": "long", "planetName": "x" * 300, "changeType": "CREATED"}),
            rec({"planetUuid": "nul", "planetName": "a\x00b"}),
        ],
    )
    reasons = [
        r.decision.reason if isinstance(r.decision, Rejection) else r.outcome
        for r in result.results
    ]
    # Checked before SQL the same way on every database (NUL too, although MariaDB could hold
    # it: an event is judged the same whichever database it goes to).
    assert reasons == [Outcome.APPLIED, RejectReason.INVALID_ROW, RejectReason.INVALID_ROW]
    assert names(mirror) == {"ok": "fine"}
