"""HTTP views of a worker on WEB_PORT: the probes ``/health`` and ``/ready``, ``/partitions``
and ``/metrics`` (and, from ``tables.views``, the entity pages), and the API_TOKEN guard over
every route of the server but the probes."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Mapping
from typing import Any

import faust
from aiohttp import web as aiohttp_web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.typedefs import Handler, Middleware
from faust.exceptions import ConsumerNotStarted
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.apply.sql_applier import SqlApplier
from streams.ops import metrics
from streams.ops.probes import LoopHeartbeat, readiness
from tables.cache import EntityCache
from tables.faust_store import recovering_partitions, recovery_remaining
from tables.views import register_entity_views

#: Paths served without the token: Kubernetes' probes carry no credentials, and these say
#: nothing but healthy or not, ready or not, and the version.
OPEN_PATHS = frozenset({"/health", "/ready"})


def authorized(headers: Mapping[str, str], token: str) -> bool:
    """Tell whether ``headers`` carry ``Authorization: Bearer <token>`` (or none is set).

    The scheme is case-insensitive (RFC 9110, section 11.1: ``bearer`` is ``Bearer``); the
    token is compared exactly, in constant time.
    """
    if not token:
        return True
    scheme, _, credentials = headers.get("Authorization", "").partition(" ")
    given = credentials.strip(" ").encode("utf-8", "surrogateescape")
    matches = hmac.compare_digest(given, token.encode())
    return scheme.lower() == "bearer" and matches


def token_guard(token: str) -> Middleware:
    """Return an aiohttp middleware answering 401 to any request without the token.

    A middleware, not a check per view: it covers every route of the server, Faust's own
    pages (``/``, ``/router/``, ``/table/``) included, and any route added later.
    """

    @aiohttp_web.middleware
    async def require_token(
        request: aiohttp_web.Request, handler: Handler
    ) -> aiohttp_web.StreamResponse:
        if request.path in OPEN_PATHS or authorized(request.headers, token):
            return await handler(request)
        return aiohttp_web.json_response(
            {"error": "unauthorized: send Authorization: Bearer <API_TOKEN>"},
            status=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    return require_token


class MalformedRequestWarning(logging.Filter):
    """Log a request aiohttp cannot parse (it answers 400) as one warning, not an error with a
    traceback: an over-long URL or a scanner's garbage is the client's fault, not ours."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite aiohttp's record of a :class:`BadHttpMessage`; pass every other record."""
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, BadHttpMessage):
            detail = " ".join(exc.message.split())
            record.msg = "refused a malformed HTTP request with %d: %s"
            record.args = (exc.code, detail if len(detail) <= 200 else detail[:200] + "...")
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True


def assigned_partitions(consumer: Any) -> list[str]:
    """Return the consumer's partitions as ``topic[partition]``, none before its thread has
    started (Faust raises ConsumerNotStarted then, which /ready answered with a 500)."""
    try:
        assignment = consumer.assignment()
    except ConsumerNotStarted:
        return []
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in assignment)


def partitions_report(
    app: Any, caches: Mapping[str, EntityCache], kinds: Mapping[str, str]
) -> dict[str, Any]:
    """Return what ``GET /partitions`` shows: this worker's partitions, rebalance and table
    recovery, overall and per entity (``kinds``: each topic an entity is applied from).

    ``settled`` is what ``/ready`` meant before it became a readiness probe: partitions held,
    no rebalance, no recovery; a worker serves reads whatever it says.
    """
    assigned = assigned_partitions(app.consumer)
    rebalancing, recovering = bool(app.rebalancing), bool(app.in_recovery)
    entities: dict[str, dict[str, Any]] = {}
    for kind in sorted({*kinds.values(), *caches}):
        topics = {topic for topic, of in kinds.items() if of == kind}
        entry: dict[str, Any] = {
            "assigned": [tp for tp in assigned if tp.rsplit("[", 1)[0] in topics]
        }
        cache = caches.get(kind)
        if cache is not None:
            busy = recovering_partitions(app, cache.changelog)
            entry["changelog"] = cache.changelog
            entry["recovering"] = [f"{cache.changelog}[{p}]" for p in sorted(busy)]
        entities[kind] = entry
    return {
        "settled": bool(assigned) and not rebalancing and not recovering,
        "assigned": assigned,
        "rebalancing": rebalancing,
        "tables_recovering": recovering,
        "recovery_remaining": recovery_remaining(app),
        "tables": sorted(cache.changelog for cache in caches.values()),
        "entities": entities,
    }


def register_pages(
    app: faust.App,
    mirror: SqlApplier,
    caches: Mapping[str, EntityCache],
    api_token: str = "",
    refresh: Callable[[], None] = lambda: None,
    *,
    heartbeat: LoopHeartbeat,
    serving: Callable[[], bool],
    kinds: Mapping[str, str],
    version: str,
) -> None:
    """Add the operational pages and the entity pages to ``app``'s web server, every one
    but the probes behind ``api_token`` when it is set.

    ``refresh`` sets the gauges that are computed when read (lag, staleness) before each
    scrape; ``heartbeat`` is the event loop's, for ``/health``; ``serving`` tells whether the
    worker has started serving its API (its web server up), for ``/ready``; ``kinds`` names
    the entity each mirrored topic is applied to, for ``/partitions``; ``version`` is the
    package's, shown by ``/health`` (given: ``streams`` imports this package, not the reverse).
    """
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequestWarning) for f in server_log.filters):
        server_log.addFilter(MalformedRequestWarning())
    if api_token:
        web_app: aiohttp_web.Application = app.web.web_app  # type: ignore[attr-defined]
        web_app.middlewares.append(token_guard(api_token))
    register_entity_views(app, mirror.registry, mirror.store, caches)

    @app.page("/health")
    class Health(View):
        """Liveness: the process is healthy, its event loop turning (streams/ops/probes.py)."""

        async def get(self, request: Request) -> Response:
            answer = heartbeat.liveness()
            body = {"status": "ok" if answer.ok else "stuck", "version": version}
            if not answer.ok:
                body["stuck"] = answer.reason
            return self.json(body, status=answer.status)

    @app.page("/ready")
    class Ready(View):
        """Readiness: the worker serves its HTTP API, whatever partitions it holds."""

        async def get(self, request: Request) -> Response:
            answer = readiness(serving(), stopping=app.should_stop)
            body: dict[str, Any] = {"ready": answer.ok}
            if not answer.ok:
                body["reason"] = answer.reason
            return self.json(body, status=answer.status)

    @app.page("/partitions")
    class Partitions(View):
        """This worker's partitions, rebalance and table recovery (what /ready said before)."""

        async def get(self, request: Request) -> Response:
            return self.json(partitions_report(app, caches, kinds))

    @app.page("/metrics")
    class Metrics(View):
        """Prometheus metrics, lag, staleness and cache entries refreshed on each scrape."""

        async def get(self, request: Request) -> Response:
            refresh()
            for kind, cache in caches.items():
                metrics.CACHE_ENTRIES.labels(kind).set(cache.size())
            metrics.HELD.clear()
            handoff = getattr(app, "handoff", None)
            for tp, reasons in handoff.held.items() if handoff is not None else ():
                for reason in reasons:
                    metrics.HELD.labels(tp[0], str(tp[1]), reason).set(1)
            body = generate_latest(metrics.registry)
            # aiohttp takes the charset apart from the content type.
            content_type = CONTENT_TYPE_LATEST.split(";", 1)[0] + "; version=0.0.4"
            return self.bytes(body, content_type=content_type)
