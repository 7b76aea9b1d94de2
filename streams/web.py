"""HTTP views of a worker on WEB_PORT: ``/health``, ``/ready`` and ``/metrics``."""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams import api, metrics
from streams.mirror import Mirror


def authorized(request: Request, token: str) -> bool:
    """Tell whether ``request`` carries ``Authorization: Bearer <token>`` (or none is set)."""
    if not token:
        return True
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def register_pages(app: faust.App, mirror: Mirror, api_token: str = "") -> None:
    """Add the operational pages to ``app``'s web server."""

    def unauthorized(view: View) -> Response:
        return view.json(
            {"error": "unauthorized: send Authorization: Bearer <API_TOKEN>"}, status=401
        )

    @app.page("/health")
    class Health(View):
        """Liveness: the process serves HTTP."""

        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok"})

    @app.page("/ready")
    class Ready(View):
        """Readiness: partitions assigned and no rebalance in progress."""

        async def get(self, request: Request) -> Response:
            if not authorized(request, api_token):
                return unauthorized(self)
            assigned = sorted(f"{tp.topic}[{tp.partition}]" for tp in app.consumer.assignment())
            ready = bool(assigned) and not app.rebalancing
            body: dict[str, Any] = {"ready": ready, "assigned": assigned}
            return self.json(body, status=200 if ready else 503)

    @app.page("/entities/{kind}")
    class Entities(View):
        """A page of one kind's rows from the SQL store."""

        async def get(self, request: Request, kind: str) -> Response:
            if not authorized(request, api_token):
                return unauthorized(self)
            query = dict(request.query)
            status, body = await asyncio.to_thread(
                api.list_entities, mirror.registry, mirror.store, kind, query
            )
            return self.json(body, status=status)

    @app.page("/entities/{kind}/{key}")
    class Entity(View):
        """One entity by key."""

        async def get(self, request: Request, kind: str, key: str) -> Response:
            if not authorized(request, api_token):
                return unauthorized(self)
            status, body = await asyncio.to_thread(
                api.get_entity, mirror.registry, mirror.store, kind, key
            )
            return self.json(body, status=status)

    @app.page("/metrics")
    class Metrics(View):
        """Prometheus metrics, consumer lag refreshed on each scrape."""

        async def get(self, request: Request) -> Response:
            if not authorized(request, api_token):
                return unauthorized(self)
            for tp in app.consumer.assignment():
                position = mirror.positions.get((tp.topic, tp.partition))
                if position is None:
                    continue
                highwater = app.consumer.highwater(tp)
                if highwater is not None and highwater >= 0:
                    metrics.LAG.labels(tp.topic, str(tp.partition)).set(
                        max(0, highwater - position)
                    )
            body = generate_latest(metrics.registry)
            # aiohttp takes the charset apart from the content type.
            content_type = CONTENT_TYPE_LATEST.split(";", 1)[0] + "; version=0.0.4"
            return self.bytes(body, content_type=content_type)
