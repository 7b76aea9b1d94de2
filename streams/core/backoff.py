"""How long to wait before trying again: one rule for every retry of the worker.

From ``first`` seconds, doubling up to ``ceiling``, each wait spread by a random factor within
``jitter`` (0.2: from 80 to 120 % of the nominal wait), so that workers waiting on the same
recovering database or broker do not all try again at the same moment (AWS Architecture Blog,
"Exponential Backoff And Jitter"; aiokafka and the Kafka clients add jitter to their retries
the same way, ``retry.backoff.jitter``). Pure: the caller sleeps.
"""

from __future__ import annotations

import random
from collections.abc import Callable

#: The first wait after a failure, seconds.
FIRST_WAIT = 0.5
#: The longest wait, seconds.
LONGEST_WAIT = 30.0
#: How far each wait is spread around its nominal value (a fraction of it).
JITTER = 0.2


class Backoff:
    """The waits between the attempts of one retried operation."""

    def __init__(
        self,
        first: float = FIRST_WAIT,
        ceiling: float = LONGEST_WAIT,
        jitter: float = JITTER,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.first = first
        self.ceiling = ceiling
        self.jitter = jitter
        self._draw = draw
        self._nominal = 0.0
        """The nominal wait of the last failure (0: none since the last success)."""

    def next(self) -> float:
        """Return how long to wait after a failure (and remember it)."""
        self._nominal = min(max(self.first, self._nominal * 2), self.ceiling)
        return self._spread(self._nominal)

    def longest(self) -> float:
        """Return a wait at the ceiling (a failure no retry fixes soon), and stay there."""
        self._nominal = self.ceiling
        return self._spread(self._nominal)

    def reset(self) -> None:
        """Start again from the first wait (the operation went through)."""
        self._nominal = 0.0

    def _spread(self, nominal: float) -> float:
        return nominal * (1.0 + self.jitter * (2.0 * self._draw() - 1.0))
