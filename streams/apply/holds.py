"""Partitions held a while, and partitions read again.

A batch that failed for good, or a record the broker will not take (a dead letter or a
forwarded record too large), holds its partition: it is not read for a while, then positioned
again at its stored offset and read anew. A batch that did not follow on from the noted
offsets (a bug) has its partitions read again from there at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Iterable, Sequence

from streams.core.positions import Gap
from streams.core.records import Partition
from streams.intake.handoff import Handoff
from streams.ops import metrics

log = logging.getLogger(__name__)

#: How long the partitions of a batch that failed for good are held before they are read again.
FAILED_HOLD_SECONDS = 60.0
#: Why a partition is held (``mirror_held_partitions{reason}``).
DEAD_LETTER = "dead_letter"
FAILED = "failed"
FORWARD = "forward"


class HoldBackoff:
    """How long a partition is held for a record the broker will not take: 5 s, doubling each
    time it is held again up to 60 s, and 5 s again once a batch of it has gone through."""

    def __init__(self) -> None:
        self._last: dict[Hashable, float] = {}

    def next(self, key: Hashable) -> float:
        """Return how long to hold ``key`` now (and remember it)."""
        delay = min(max(5.0, self._last.get(key, 0.0) * 2), 60.0)
        self._last[key] = delay
        return delay

    def passed(self, keys: Iterable[Hashable]) -> None:
        """Start over for ``keys``, whose records went through (nothing to do when none was
        ever held: the usual case, on every batch)."""
        if self._last:
            for key in keys:
                self._last.pop(key, None)


def say_failed(
    doing: str,
    count: int,
    kind: str,
    tps: Iterable[Partition],
    exc: BaseException,
    *,
    bug: bool = False,
) -> None:
    """Say in one line that a batch failed for good and its partitions are held (with the
    traceback when it is a bug of ours, not an error we raise on purpose); count it."""
    log.error(
        "%s %d %s records of %s failed and a retry will not fix it: %s; holding "
        "these partitions for %.0f s, then reading them again",
        doing,
        count,
        kind,
        ", ".join(f"{t}[{p}]" for t, p in sorted(tps)),
        exc if not bug else f"{type(exc).__name__}: {exc}",
        FAILED_HOLD_SECONDS,
        exc_info=exc if bug else None,
    )
    metrics.BATCH_FAILURES.labels(kind).inc()


def read_again(handoff: Handoff, gaps: Sequence[Gap]) -> None:
    """Say that batches did not follow on from the noted offsets (a bug: one error line each,
    ``mirror_offset_gaps_total``) and read their partitions again from there."""
    from aiokafka import TopicPartition  # what the consumer's calls take

    for gap in gaps:
        log.error(
            "%s; nothing of it was applied and the partition is read again from there. This is "
            "a bug: please report it with this line",
            gap,
            extra={"topic": gap.topic, "partition": gap.partition},
        )
        metrics.OFFSET_GAPS.labels(gap.topic, str(gap.partition)).inc()
    handoff.forget([TopicPartition(g.topic, g.partition) for g in gaps])


def hold(handoff: Handoff, key: Partition, reason: str, seconds: float) -> None:
    """Stop reading ``key`` for ``seconds``; it is positioned again after, and read anew."""
    from aiokafka import TopicPartition

    tp = TopicPartition(*key)
    handoff.forget([tp])
    handoff.hold(tp, reason, until=time.monotonic() + seconds)
