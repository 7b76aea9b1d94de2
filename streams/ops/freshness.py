"""How far behind this worker's copy is, per assigned partition: lag and staleness gauges.

``mirror_consumer_lag_records`` and ``mirror_staleness_seconds`` are computed together, from the
same next offset to apply and high watermark, so they agree on "caught up": both are 0 or
neither is. The oldest unapplied record of a partition is the first record at or after its
next offset among what the worker holds (batches on their way, then feeds); reading it costs
one look per batch and per fetched run, never one per record (``streams.core.staleness``).
Partitions revoked from this worker lose their labels.
"""

from __future__ import annotations

import time
from typing import Any

from streams.apply.agents import EntityAgents
from streams.core.records import Partition, partition_of
from streams.core.staleness import Staleness, oldest_unapplied
from streams.ops import metrics


class Freshness:
    """Refreshes the lag and staleness gauges of the partitions assigned to this worker."""

    def __init__(self, app: Any, agents: EntityAgents, kinds: dict[str, str]) -> None:
        self.app = app
        self.agents = agents
        self.kinds = kinds
        """The entity kind of each mirrored topic (sources, repartition topics)."""
        self.staleness = Staleness()
        self._labelled: dict[Partition, str] = {}

    def refresh(self) -> None:
        """Set both gauges of every assigned partition; drop those of partitions gone."""
        consumer = self.app.consumer
        now = time.time()
        heads = self.agents.held_heads()
        read = self.app.handoff.positions
        assigned = set()
        for tp in consumer.assignment():
            key = partition_of(tp)
            assigned.add(key)
            position = self.agents.next_offset(key)
            highwater = consumer.highwater(tp)
            kind = self.kinds.get(tp.topic)
            if position is None or highwater is None or highwater < 0 or kind is None:
                continue  # not positioned or not fetched yet: nothing to say
            # Past a transaction's marker that ends the log, once every record is applied.
            position = read.read_to(key, position)
            head = oldest_unapplied(position, heads.get(key, ()))
            reading = self.staleness.read(key, position, highwater, head, now)
            partition = str(tp.partition)
            metrics.LAG.labels(tp.topic, partition).set(reading.lag)
            metrics.STALENESS.labels(kind, tp.topic, partition).set(reading.seconds)
            self._labelled[key] = kind
        gone = [key for key in self._labelled if key not in assigned]
        for key in gone:
            kind = self._labelled.pop(key)
            metrics.LAG.remove(key[0], str(key[1]))
            metrics.STALENESS.remove(kind, key[0], str(key[1]))
        self.staleness.forget(gone)

    async def run(self) -> None:
        """Refresh once (the app's timer calls this every second)."""
        self.refresh()
