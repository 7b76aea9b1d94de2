"""HTTP views of a worker on WEB_PORT: ``/health``, ``/ready`` and ``/metrics`` (and, from
``tables.views``, the entity pages), and the API_TOKEN guard over every route of the server."""

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
from tables.cache import EntityCache
from tables.views import register_entity_views

#: Paths served without the token: liveness probes carry no credentials.
OPEN_PATHS = frozenset({"/health"})


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


def register_pages(
    app: faust.App,
    mirror: SqlApplier,
    caches: Mapping[str, EntityCache],
    api_token: str = "",
    refresh: Callable[[], None] = lambda: None,
) -> None:
    """Add the operational pages and the entity pages to ``app``'s web server, every one
    but ``/health`` behind ``api_token`` when it is set; ``refresh`` sets the gauges that
    are computed when read (lag, staleness) before each scrape."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequestWarning) for f in server_log.filters):
        server_log.addFilter(MalformedRequestWarning())
    if api_token:
        web_app: aiohttp_web.Application = app.web.web_app  # type: ignore[attr-defined]
        web_app.middlewares.append(token_guard(api_token))
    register_entity_views(app, mirror.registry, mirror.store, caches)

    @app.page("/health")
    class Health(View):
        """Liveness: the process serves HTTP."""

        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok"})

    @app.page("/ready")
    class Ready(View):
        """Readiness: partitions assigned, no rebalance in progress, cached tables recovered."""

        async def get(self, request: Request) -> Response:
            assigned = assigned_partitions(app.consumer)
            recovering = bool(app.in_recovery)
            ready = bool(assigned) and not app.rebalancing and not recovering
            body: dict[str, Any] = {
                "ready": ready,
                "assigned": assigned,
                "rebalancing": bool(app.rebalancing),
                "tables_recovering": recovering,
                "tables": sorted(cache.changelog for cache in caches.values()),
            }
            return self.json(body, status=200 if ready else 503)

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
