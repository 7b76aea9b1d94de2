"""The consumer bridge's seek of other topics asks aiokafka only for what it has assigned."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition
from aiokafka.errors import IllegalStateError

from streams.faust_bridge import _seek_to_committed


class AssignedConsumer:
    """Stands in for aiokafka's consumer: raises, as it does, for partitions not assigned."""

    def __init__(self, assigned: set[TopicPartition]) -> None:
        self._assigned = assigned

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    async def seek_to_committed(self, *tps: TopicPartition) -> dict[TopicPartition, int]:
        if set(tps) - self._assigned:
            raise IllegalStateError(f"Partitions {set(tps) - self._assigned} are not assigned")
        return {tp: 7 for tp in tps}


def test_partitions_revoked_meanwhile_are_not_sought() -> None:
    # Faust's view of the assignment can lag behind aiokafka's during a rebalance; seeking a
    # partition aiokafka no longer has crashed the fetcher.
    kept, gone = TopicPartition("changelog", 0), TopicPartition("changelog", 1)
    consumer = AssignedConsumer({kept})
    assert asyncio.run(_seek_to_committed(consumer, [kept, gone])) == {kept: 7}
    assert asyncio.run(_seek_to_committed(consumer, [gone])) == {}
