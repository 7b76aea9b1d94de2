"""Arbitrary bytes and arbitrary JSON through the core: never an exception, one outcome each."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from models.planet import Planet
from models.registry import build_spec
from streams.core.decisions import Delete, Rejection, Upsert
from streams.core.guard import resolve
from streams.core.records import SourceRecord
from streams.core.routing import route

PLANET = build_spec(Planet)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
planet_like = st.fixed_dictionaries(
    {},
    optional={
        "planetUuid": json_values,
        "planetName": json_values,
        "changeType": st.sampled_from(["CREATED", "UPDATED", "DELETED", "X", ""]) | json_values,
    },
)


def records(values: list[bytes | None]) -> list[SourceRecord]:
    return [
        SourceRecord("planet-changed", i % 3, i, 1_000 + i, b"k", v) for i, v in enumerate(values)
    ]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200) | st.none(), max_size=20))
def test_arbitrary_bytes_never_raise_and_get_one_outcome_each(values: list[bytes | None]) -> None:
    for loads in (json.loads, orjson.loads):
        decisions = [route(r, PLANET, loads) for r in records(values)]
        assert all(isinstance(d, Upsert | Delete | Rejection) for d in decisions)
        plan = resolve(decisions, {})
        assert [id(d.record) for d, _ in plan.outcomes] == [id(d.record) for d in decisions]


@settings(max_examples=200, deadline=None)
@given(st.lists(planet_like | json_values, max_size=20))
def test_arbitrary_json_never_raises_and_gets_one_outcome_each(events: list[Any]) -> None:
    values = [json.dumps(e).encode() for e in events]
    decisions = [route(r, PLANET, orjson.loads) for r in records(values)]
    plan = resolve(decisions, {})
    assert len(plan.outcomes) == len(decisions)
    for decision in decisions:
        if isinstance(decision, Upsert):
            assert PLANET.prepare_row(decision.row) == decision.row  # the table takes it as is
