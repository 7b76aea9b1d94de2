"""HTTP views of a worker on WEB_PORT: ``/health``, ``/ready`` and ``/metrics`` (and, from
``tables.views``, the entity pages)."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams import metrics
from streams.mirror import Mirror
from tables.cache import EntityCache
from tables.views import register_entity_views


def authorized(request: Request, token: str) -> bool:
    """Tell whether ``request`` carries ``Authorization: Bearer <token>`` (or none is set)."""
    if not token:
        return True
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def register_pages(
    app: faust.App,
    mirror: Mirror,
    caches: Mapping[str, EntityCache],
    api_token: str = "",
) -> None:
    """Add the operational pages and the entity pages to ``app``'s web server."""

    def denied(request: Request) -> Response | None:
        if authorized(request, api_token):
            return None
        return app.web.json(
            {"error": "unauthorized: send Authorization: Bearer <API_TOKEN>"}, status=401
        )

    register_entity_views(app, mirror, caches, denied)

    @app.page("/health")
    class Health(View):
        """Liveness: the process serves HTTP."""

        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok"})

    @app.page("/ready")
    class Ready(View):
        """Readiness: partitions assigned, no rebalance in progress, cached tables recovered."""

        async def get(self, request: Request) -> Response:
            denial = denied(request)
            if denial is not None:
                return denial
            assigned = sorted(f"{tp.topic}[{tp.partition}]" for tp in app.consumer.assignment())
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
        """Prometheus metrics, consumer lag refreshed on each scrape."""

        async def get(self, request: Request) -> Response:
            denial = denied(request)
            if denial is not None:
                return denial
            for tp in app.consumer.assignment():
                position = mirror.positions.get((tp.topic, tp.partition))
                if position is None:
                    continue
                highwater = app.consumer.highwater(tp)
                if highwater is not None and highwater >= 0:
                    metrics.LAG.labels(tp.topic, str(tp.partition)).set(
                        max(0, highwater - position)
                    )
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
