"""The one way the tests wait: poll a condition against a generous deadline.

No test sleeps a fixed time to wait for something. A wait names what it awaits; when the
deadline passes it fails saying what, and the last value it saw, so a slow machine shows up as
a clear timeout and a wrong value as that value. A wait that watches worker processes fails
at once, with the exit status and the log's tail, when one of them exits.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeVar, overload

T = TypeVar("T")

DEADLINE = 180.0
"""Seconds a wait allows unless told otherwise: generous, for a loaded machine."""

EVERY = 0.2
"""Seconds between two polls."""


class Watched(Protocol):
    """What a wait watches besides its condition: a process that must not exit meanwhile."""

    def assert_alive(self) -> None:
        """Fail, naming the exit status, if the process has exited."""

    def tail(self, lines: int = 40) -> str:
        """Return the last lines of the process's log."""


@overload
async def eventually(
    probe: Callable[[], Awaitable[T]],
    until: Callable[[T], object] = ...,
    *,
    what: str,
    timeout: float = ...,
    every: float = ...,
    alive: Iterable[Watched] = ...,
    ignoring: tuple[type[BaseException], ...] = ...,
) -> T: ...


@overload
async def eventually(
    probe: Callable[[], T],
    until: Callable[[T], object] = ...,
    *,
    what: str,
    timeout: float = ...,
    every: float = ...,
    alive: Iterable[Watched] = ...,
    ignoring: tuple[type[BaseException], ...] = ...,
) -> T: ...


async def eventually(
    probe: Callable[[], Any],
    until: Callable[[Any], object] = bool,
    *,
    what: str,
    timeout: float = DEADLINE,
    every: float = EVERY,
    alive: Iterable[Watched] = (),
    ignoring: tuple[type[BaseException], ...] = (),
) -> Any:
    """Poll ``probe`` (sync or async) until ``until`` holds for its value; return that value.

    Each round first checks that every process in ``alive`` still runs. An exception of a
    type in ``ignoring`` counts as "not yet" (a server not listening yet). When ``timeout``
    seconds pass, fail with an AssertionError naming ``what`` and the last value seen.
    """
    watched = list(alive)
    deadline = time.monotonic() + timeout
    last: object = "(nothing yet)"
    while True:
        for process in watched:
            process.assert_alive()
        try:
            value = probe()
            if inspect.isawaitable(value):
                value = await value
        except ignoring as error:
            last = f"{type(error).__name__}: {error}"
        else:
            if until(value):
                return value
            last = value
        if time.monotonic() >= deadline:
            shown = repr(last)
            if len(shown) > 2000:
                shown = shown[:2000] + "..."
            tail = f"\nlog tail:\n{watched[0].tail()}" if watched else ""
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what}; last seen: {shown}{tail}"
            )
        await asyncio.sleep(every)


async def watched_pause(seconds: float, *, alive: Iterable[Watched]) -> None:
    """Let ``seconds`` pass (a duration the test means: chaos, an outage; not a wait for a
    condition), failing at once if one of ``alive`` exits meanwhile."""
    watched = list(alive)
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        for process in watched:
            process.assert_alive()
        await asyncio.sleep(min(0.1, max(0.0, until - time.monotonic())))
