"""What changes under a running worker, noticed within seconds: topics created again, or given
more partitions.

Every few seconds the worker reads the ids and partition counts of its mirrored topics and of
its cached tables' changelogs (one metadata request):

- A mirrored topic whose id changed was deleted and created again: its assigned partitions
  are positioned again, and the positioner drops the offsets stored for the old log
  (``streams.intake.positioner.Positioner.check_logs``).
- A cached entity's source topic with more partitions than its changelog: the changelog is
  given as many, and, once every worker has seen the change and places entries by the new
  count, the entries whose key moved are rebuilt from the database (``tables.changelogs``); then
  the group rebalances, so that each owner reads them. The new partitions themselves are
  picked up by the consumer's next metadata refresh (``consumer_metadata_max_age_ms``, 5 s
  here) and a rebalance.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from streams.apply.sql_applier import SqlApplier
from streams.intake.faust_consumer import request_rejoin
from streams.intake.handoff import Handoff
from streams.kafka.topic_ids import TopicFacts, TopicIds
from streams.ops import metrics
from streams.settings import Settings
from tables.cache import EntityCache
from tables.changelogs import grow_changelog, rebuild_moved

log = logging.getLogger(__name__)

#: Seconds between two looks.
WATCH_SECONDS = 5.0
#: Seconds between growing a changelog and rebuilding its moved entries: every worker's watch
#: has seen the new count by then, and places each entry by its key's hash.
REBUILD_DELAY = 3 * WATCH_SECONDS


class TopicWatch:
    """Notices recreated topics and added partitions while the worker runs."""

    def __init__(
        self,
        app: Any,
        settings: Settings,
        mirror: SqlApplier,
        handoff: Handoff,
        caches: Mapping[str, EntityCache],
        topic_ids: TopicIds,
    ) -> None:
        self.app = app
        self.settings = settings
        self.mirror = mirror
        self.handoff = handoff
        self.caches = caches
        self.topic_ids = topic_ids
        self.ids: dict[str, str | None] = {}
        """Each watched topic's id when last seen."""
        self.rebuilds: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Look now, then every WATCH_SECONDS, until the app stops."""
        while not self.app.should_stop:
            try:
                await self.look()
            except Exception as exc:  # the next look tries again; nothing waits on this one
                log.warning("could not read the mirrored topics' ids and partitions: %r", exc)
            await asyncio.sleep(WATCH_SECONDS)

    async def look(self) -> None:
        """Read the topics' ids and partition counts once, and act on what changed."""
        mirrored = sorted(self.handoff.feeds)
        changelogs = sorted(cache.changelog for cache in self.caches.values())
        facts = await self.topic_ids.facts(mirrored + changelogs)
        for topic in mirrored:
            fact = facts.get(topic)
            if fact is not None:
                self._check_id(topic, fact)
        for cache in self.caches.values():
            source = facts.get(self.mirror.source_topic(cache.spec))
            changelog = facts.get(cache.changelog)
            if source is None or changelog is None:
                continue
            if source.partitions > changelog.partitions:
                await self._grow(cache, changelog.partitions, source.partitions)
            elif changelog.partitions != (cache.partitions or cache.table.partitions):
                self._follow(cache, changelog.partitions)  # another worker grew it

    def _check_id(self, topic: str, fact: TopicFacts) -> None:
        seen = self.ids.get(topic)
        self.ids[topic] = fact.topic_id
        if seen is None or fact.topic_id is None or seen == fact.topic_id:
            return
        mine = [tp for tp in self.app.consumer.assignment() if tp.topic == topic]
        log.warning(
            "%s was deleted and created again while this worker read it (its id is %s, was "
            "%s): positioning its %d partitions here again",
            topic,
            fact.topic_id,
            seen,
            len(mine),
            extra={"topic": topic},
        )
        self.handoff.forget(mine)

    @staticmethod
    def _follow(cache: EntityCache, partitions: int) -> None:
        """Place entries, and read them, by the changelog's count now."""
        cache.partitions = partitions
        cache.writer.forget(cache.changelog)

    async def _grow(self, cache: EntityCache, old: int, new: int) -> None:
        """Give the changelog the source's count; if this worker did, rebuild moved entries."""
        source = self.mirror.source_topic(cache.spec)
        grown = await grow_changelog(self.settings, cache.changelog, new)
        self._follow(cache, new)
        if not grown:
            return
        log.warning(
            "%s has %d partitions now: gave its cached table's changelog %s as many (it had "
            "%d); the entries whose keys moved are rebuilt from the database in %.0f s",
            source,
            new,
            cache.changelog,
            old,
            REBUILD_DELAY,
        )
        task = asyncio.ensure_future(self._rebuild(cache, old, new))
        self.rebuilds.add(task)
        task.add_done_callback(self.rebuilds.discard)

    async def _rebuild(self, cache: EntityCache, old: int, new: int) -> None:
        await asyncio.sleep(REBUILD_DELAY)
        try:
            moved = await rebuild_moved(
                self.mirror.store, cache.spec, cache.writer, cache.changelog, old, new
            )
        except Exception as exc:  # reads of the keys not rebuilt are answered from SQL
            log.error(
                "rebuilding the %s cache after its changelog grew failed: %r; reads of the keys "
                "it did not reach are answered from the database until they change",
                cache.spec.kind,
                exc,
            )
            return
        metrics.CACHE_REBUILT.labels(cache.spec.kind).inc(moved)
        log.info(
            "rebuilt %d %s cache entries whose keys moved to other partitions of %s; "
            "rebalancing so that each owner reads them",
            moved,
            cache.spec.kind,
            cache.changelog,
        )
        await request_rejoin(self.app.consumer)
