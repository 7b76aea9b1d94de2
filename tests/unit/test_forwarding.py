"""The forwarder's size check: a record the repartition topic cannot take holds its partition
from that record on; the other partitions, and the records before it, go on."""

from __future__ import annotations

import asyncio

import models.planet  # noqa: F401  (registers the planet)
from models.registry import default_registry
from streams.apply.applied_offsets import AppliedOffsets
from streams.apply.forwarder import Forwarder
from streams.apply.holds import FORWARD
from streams.core.records import SourceRecord
from streams.intake.handoff import Handoff
from streams.kafka.producers import OwnProducer, passing_failure
from streams.settings import Settings


def record(partition: int, offset: int, size: int = 10) -> SourceRecord:
    return SourceRecord("planets", partition, offset, 0, b"k", b"x" * size)


def forwarder(limits: list[int]) -> tuple[Forwarder, Handoff]:
    handoff = Handoff(high_water=100)
    reads = iter(limits)

    async def read_limit() -> int:
        return next(reads)

    spec = default_registry.by_kind("planet")
    assert spec is not None
    producer = OwnProducer(Settings(), "test", dict)
    return Forwarder(spec, "target", producer, handoff, AppliedOffsets(), read_limit), handoff


def test_a_record_too_large_holds_its_partition_from_it() -> None:
    fwd, handoff = forwarder([4096])
    batch = [record(0, 0), record(1, 0), record(0, 1, 10_000), record(1, 1), record(0, 2)]
    kept = asyncio.run(fwd._fitting(batch))
    assert [(r.partition, r.offset) for r in kept] == [(0, 0), (1, 0), (1, 1)]
    assert {tp: list(reasons) for tp, reasons in handoff.held.items()} == {
        ("planets", 0): [FORWARD]
    }


def test_the_limit_is_read_again_when_a_record_exceeds_it() -> None:
    # The target's limit was raised meanwhile: the record is sent, nothing is held.
    fwd, handoff = forwarder([50_000])
    fwd.limit = 4096
    batch = [record(0, 0), record(0, 1, 10_000)]
    assert asyncio.run(fwd._fitting(batch)) == batch
    assert fwd.limit == 50_000
    assert not handoff.held


def test_records_within_the_limit_are_not_checked_against_the_broker() -> None:
    fwd, _ = forwarder([])  # reading the limit again would fail: none left
    fwd.limit = 4096
    batch = [record(0, i) for i in range(100)]
    assert asyncio.run(fwd._fitting(batch)) == batch


def test_a_timeout_is_back_pressure_and_a_size_refusal_is_not() -> None:
    from aiokafka.errors import (
        KafkaConnectionError,
        KafkaTimeoutError,
        MessageSizeTooLargeError,
        TopicAuthorizationFailedError,
    )

    assert passing_failure(KafkaTimeoutError())  # aiokafka calls it not retriable
    assert passing_failure(KafkaConnectionError())
    assert not passing_failure(MessageSizeTooLargeError())
    assert not passing_failure(TopicAuthorizationFailedError())


P0, P1 = ("planets", 0), ("planets", 1)


def test_a_batch_finishing_after_its_partitions_were_revoked_notes_nothing() -> None:
    # Another worker owns the partition now; an offset noted here would be committed (moving
    # the group's offset back) if the partition came back before the stale entry was dropped.
    applied = AppliedOffsets()
    applied.positioned(("planets", 0), 0)
    applied.positioned(("planets", 1), 5)
    applied.note([record(0, 0), record(0, 1), record(1, 5)], {P0: 0, P1: 5})
    assert applied.next == {P0: 2, P1: 6}
    applied.forget([P0])
    assert applied.note([record(0, 2), record(0, 3)], {P0: 2}) == []  # late: revoked meanwhile
    assert P0 not in applied.next
    applied.positioned(P0, 40)  # assigned here again
    applied.note([record(0, 40), record(0, 41)], {P0: 40})
    assert applied.next[P0] == 42
    assert applied.due([P0]) == {P0: 42}


def test_a_batch_that_does_not_follow_on_from_the_noted_offset_notes_nothing() -> None:
    # A batch lost on its way (records 2..9 never applied) must not be stepped over.
    applied = AppliedOffsets()
    applied.positioned(P0, 0)
    applied.positioned(P1, 0)
    applied.note([record(0, 0), record(0, 1)], {P0: 0})
    gaps = applied.note([record(0, 10), record(0, 11), record(1, 0)], {P0: 10, P1: 0})
    assert [(g.topic, g.partition, g.continues, g.stored) for g in gaps] == [("planets", 0, 10, 2)]
    assert applied.next == {P0: 2, P1: 1}


def test_a_partition_held_again_after_its_records_went_through_starts_at_5_s() -> None:
    from streams.apply.holds import HoldBackoff

    backoff = HoldBackoff()
    assert [backoff.next(("planets", 0)) for _ in range(6)] == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]
    backoff.passed(iter([("planets", 0)]))
    assert backoff.next(("planets", 0)) == 5.0
