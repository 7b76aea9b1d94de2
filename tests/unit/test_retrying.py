"""A batch's step retried while its errors are passing (streams/apply/retrying.py)."""

from __future__ import annotations

import pytest

from streams.apply.retrying import retrying
from streams.core.errors import StoreConflict, StoreError, StoreUnavailableError
from streams.ops import metrics


def counted(counter: object, *labels: str) -> float:
    child = counter.labels(*labels) if labels else counter  # type: ignore[attr-defined]
    return float(child._value.get())


async def test_a_conflict_is_retried_and_counted_apart_from_an_outage() -> None:
    failures: list[Exception] = [
        StoreConflict("write: (1213, 'Deadlock found when trying to get lock')"),
        StoreUnavailableError("write: (2013, 'Lost connection to server during query')"),
    ]

    async def attempt() -> str:
        if failures:
            raise failures.pop(0)
        return "applied"

    conflicts = counted(metrics.STORE_CONFLICTS)
    retries = counted(metrics.BATCH_RETRIES, "apply")
    assert await retrying("apply batch", attempt) == "applied"
    assert counted(metrics.STORE_CONFLICTS) == conflicts + 1
    assert counted(metrics.BATCH_RETRIES, "apply") == retries + 2


async def test_an_error_no_retry_fixes_is_raised_at_once() -> None:
    async def attempt() -> str:
        raise StoreError('write: database refused it: (1146, "Table doesn\'t exist")')

    with pytest.raises(StoreError, match="refused"):
        await retrying("apply batch", attempt)
