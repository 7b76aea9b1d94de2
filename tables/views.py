"""HTTP views over the mirrored entities: ``/entities/{kind}`` and ``/entities/{kind}/{key}``.

A read of a cached kind is answered by the worker that owns the key's changelog partition,
from its table; any other worker forwards the request there (Faust's router says where, as
``@app.table_route`` does). We forward ourselves instead of through ``table_route`` because
Faust's forwarder turns an unreachable owner (a worker just killed, before the group notices)
into a 500 traceback and can bounce a request between workers whose assignments disagree
mid-rebalance: here both are a 503 with a JSON error and ``Retry-After``, which a client retries.
Kinds whose cache is off, every list, and a key the owner's copy does not hold (absent, or not
known to it) are read from the SQL store, so a miss never answers 404 for an entity the
database has; while it is down they answer 503 with ``Retry-After`` too. A composite key is
one percent-encoded path segment per key column (``/entities/order_line/o-7/2``), split from
the path as sent, so that ``%2F`` inside a segment stays part of it (``tables.api``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import faust
from faust.web import Request, Response, View
from yarl import URL

from models.registry import Registry
from models.store import SqlStore
from streams.core.errors import StoreUnavailableError
from streams.core.keys import path_segments
from streams.ops import metrics
from tables import api
from tables.cache import EntityCache, cache_key

#: Marks a request a worker forwarded, so that it is never forwarded twice.
ROUTED_HEADER = "X-Mirror-Routed-By"
FORWARD_TIMEOUT = 10.0

log = logging.getLogger(__name__)


def owner_of(app: faust.App, cache: EntityCache, key: Any) -> URL | None:
    """Return the URL of the worker owning ``key``'s cache partition, None while unknown."""
    try:
        return URL(str(app.router.key_store(cache.table.name, cache_key(key))))
    except KeyError:  # no assignment yet, or the partition is unassigned mid-rebalance
        return None


def same_worker(url: URL, canonical: URL) -> bool:
    """Tell whether ``url`` names the worker whose canonical URL is ``canonical``."""
    return (url.host, url.port) == (canonical.host, canonical.port)


def register_entity_views(
    app: faust.App,
    registry: Registry,
    store: SqlStore,
    caches: Mapping[str, EntityCache],
) -> None:
    """Add the entity pages to ``app``'s web server (streams/ops/web.py guards them with the
    token)."""
    canonical = URL(str(app.conf.canonical_url))

    def unavailable(view: View, message: str) -> Response:
        return view.json({"error": message}, status=503, headers={"Retry-After": "1"})

    async def from_store(view: View, read: Callable[..., api.Reply], *args: Any) -> Response:
        """Answer from the SQL store; while it cannot be reached, 503 (retry), not a 500."""
        try:
            status, body = await asyncio.to_thread(read, registry, store, *args)
        except StoreUnavailableError as exc:
            log.warning("answered 503: the database is unavailable: %s", exc)
            return unavailable(view, "the database is unavailable; retry")
        return view.json(body, status=status)

    async def forward(view: View, request: Request, owner: URL, kind: str) -> Response:
        headers = {ROUTED_HEADER: str(canonical)}
        if "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        # The path as sent (still encoded): a ``%2F`` inside a key segment stays one segment.
        target = owner.with_path(request.rel_url.raw_path, encoded=True).with_query(
            request.url.query
        )
        try:
            async with app.http_client.get(
                target, headers=headers, timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT)
            ) as response:
                body = await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            metrics.ROUTED.labels(kind, "unreachable").inc()
            return unavailable(
                view, f"the worker owning this key ({owner}) did not answer: {exc!r}; retry"
            )
        metrics.ROUTED.labels(kind, "forwarded").inc()
        return view.bytes(body, content_type="application/json", status=status)

    @app.page("/entities/{kind}")
    class Entities(View):
        """A page of one kind's rows from the SQL store."""

        async def get(self, request: Request, kind: str) -> Response:
            return await from_store(self, api.list_entities, kind, dict(request.query))

    @app.page("/entities/{kind}/{key}")
    class Entity(View):
        """One entity by key: from the owner's cache, or from SQL when the kind is not cached."""

        async def get(self, request: Request, kind: str, key: str) -> Response:
            return await read_entity(self, request, kind, [key])

    @app.page("/entities/{kind}/{key}/{rest:.+}")
    class CompositeEntity(View):
        """One entity by a composite key: a path segment per key column, in key order."""

        async def get(self, request: Request, kind: str, key: str, rest: str) -> Response:
            # Split the path as sent (``%2F`` inside a segment is part of it), then decode.
            raw = request.rel_url.raw_path.split("/", 3)[3]
            try:
                segments = path_segments(raw)
            except UnicodeDecodeError:
                return self.json({"error": f"malformed {kind} key: not UTF-8"}, status=400)
            return await read_entity(self, request, kind, segments)

    async def read_entity(view: View, request: Request, kind: str, segments: list[str]) -> Response:
        """Answer a read of one entity by its key's path segments."""
        cache = caches.get(kind)
        query = dict(request.query)
        key: Any = segments if len(segments) > 1 else segments[0]
        if cache is None:
            return await from_store(view, api.get_entity, kind, key, query)
        target = api.entity_target(registry, kind, key)
        if not isinstance(target, api.Target):
            status, body = target
            return view.json(body, status=status)
        with_deleted = api.include_deleted(query)
        if not isinstance(with_deleted, bool):
            status, body = with_deleted
            return view.json(body, status=status)
        owner = owner_of(app, cache, target.key)
        if owner is None or (app.rebalancing and not app.in_recovery):
            return unavailable(view, "workers are rebalancing; retry")
        if not same_worker(owner, canonical):
            if ROUTED_HEADER in request.headers:
                # The sender thinks we own it and we think not: assignments in flux.
                return unavailable(view, "workers disagree on who owns this key; retry")
            return await forward(view, request, owner, kind)
        if cache.recovering(target.key):
            return unavailable(view, f"this {kind}'s cache partition is recovering; retry")
        cached = cache.get(target.key) if cache.holds(target.key) else None
        if cached is None:
            # Not in this worker's copy: absent, or not known to it (a partition added since
            # the entry was written, a copy given up on a full disk): the database says.
            metrics.ROUTED.labels(kind, "database").inc()
            return await from_store(view, api.get_entity, kind, key, query)
        metrics.ROUTED.labels(kind, "local").inc()
        status, body = api.entity_reply(target, cached, with_deleted=with_deleted)
        return view.json(body, status=status)
