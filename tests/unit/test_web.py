"""streams/ops/web.py: the API_TOKEN check (the scheme in any case, the token exactly), and
the partitions /partitions reports."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import TopicPartition
from faust.exceptions import ConsumerNotStarted

from streams.ops.web import assigned_partitions, authorized, partitions_report

TOKEN = "s3cret-Token"


@pytest.mark.parametrize(
    "header", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER {TOKEN}", f"Bearer  {TOKEN}"]
)
def test_the_scheme_is_case_insensitive(header: str) -> None:
    assert authorized({"Authorization": header}, TOKEN)


@pytest.mark.parametrize(
    "header",
    [
        f"Bearer {TOKEN.lower()}",  # the token itself is exact
        f"Bearer {TOKEN}x",
        f"Basic {TOKEN}",
        TOKEN,
        f"Bearer{TOKEN}",
        "Bearer ",
        "",
    ],
)
def test_the_token_is_compared_exactly(header: str) -> None:
    assert not authorized({"Authorization": header}, TOKEN)
    assert not authorized({}, TOKEN)


def test_no_token_set_lets_every_request_through() -> None:
    assert authorized({}, "")


class _NotStartedConsumer:
    def assignment(self) -> set[Any]:
        raise ConsumerNotStarted("Consumer thread not yet started")


class _Consumer:
    def assignment(self) -> set[Any]:
        return {TopicPartition("planet-changed", 1), TopicPartition("planet-changed", 0)}


def test_ready_has_no_partitions_before_the_consumer_thread_starts() -> None:
    # Asked that early, /ready answered 500 (Faust's ConsumerNotStarted), not 503.
    assert assigned_partitions(_NotStartedConsumer()) == []
    assert assigned_partitions(_Consumer()) == ["planet-changed[0]", "planet-changed[1]"]


class _App:
    """What partitions_report reads of a Faust app."""

    def __init__(self, rebalancing: bool = False, in_recovery: bool = False) -> None:
        self.consumer = _Consumer()
        self.rebalancing = rebalancing
        self.in_recovery = in_recovery


def test_partitions_shows_what_the_old_ready_did_per_entity_too() -> None:
    kinds = {"planet-changed": "planet", "moon-changed": "moon"}
    report = partitions_report(_App(), {}, kinds)
    assert report == {
        "settled": True,
        "assigned": ["planet-changed[0]", "planet-changed[1]"],
        "rebalancing": False,
        "tables_recovering": False,
        "recovery_remaining": None,
        "tables": [],
        "entities": {
            "moon": {"assigned": []},
            "planet": {"assigned": ["planet-changed[0]", "planet-changed[1]"]},
        },
    }
    assert not partitions_report(_App(rebalancing=True), {}, kinds)["settled"]
    no_partitions = _App()
    no_partitions.consumer = _NotStartedConsumer()  # type: ignore[assignment]
    assert not partitions_report(no_partitions, {}, kinds)["settled"]
