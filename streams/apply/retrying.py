"""A batch's step retried while its errors are passing: the back-pressure of a failing
dependency (the database or the broker unreachable) holds the batch, nothing is dropped."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from streams.core.backoff import Backoff
from streams.core.errors import MirrorError, StoreConflict
from streams.ops import metrics

log = logging.getLogger(__name__)

T = TypeVar("T")


async def retrying(what: str, attempt: Callable[[], Awaitable[T]]) -> T:
    """Await ``attempt()`` until it succeeds, with backoff while its errors are retriable.

    A retriable error (the database or the broker unreachable) holds the batch: the
    back-pressure a failing dependency should cause. Any other error is raised to the caller.
    """
    backoff = Backoff()
    tries = 0
    while True:
        tries += 1
        try:
            return await attempt()
        except MirrorError as exc:
            if not exc.retriable:
                raise
            delay = backoff.next()
            log.warning("%s failed (attempt %d), retrying in %.1fs: %s", what, tries, delay, exc)
            metrics.BATCH_RETRIES.labels(what.split(" ", 1)[0]).inc()
            if isinstance(exc, StoreConflict):
                metrics.STORE_CONFLICTS.inc()
        await asyncio.sleep(delay)
