"""Build the Faust app of a worker from settings: the store, the Mirror and the agents."""

from __future__ import annotations

import importlib
from typing import Any

import faust

from models.registry import Registry, default_registry
from models.store import SqlStore
from streams.agents import register_agents, register_tombstone_purge
from streams.errors import SettingsError
from streams.mirror import Mirror
from streams.settings import Settings


def load_entities(settings: Settings, registry: Registry = default_registry) -> Registry:
    """Import the configured entity modules so that their models register."""
    for module in settings.entity_modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise SettingsError(f"ENTITY_MODULES: cannot import {module!r}: {exc}") from None
    if not len(registry):
        raise SettingsError(
            f"ENTITY_MODULES {','.join(settings.entity_modules)!r} declare no entity "
            "(a MirroredEntity subclass with __topic__)"
        )
    return registry


def build_mirror(settings: Settings, registry: Registry = default_registry) -> Mirror:
    """Build the Mirror (registry + SQL store) for ``settings``."""
    load_entities(settings, registry)
    return Mirror(
        registry,
        SqlStore.from_url(settings.database_url),
        group=settings.app_id,
        topic_prefix=settings.topic_prefix,
    )


def build_app(settings: Settings, mirror: Mirror | None = None) -> faust.App:
    """Create the Faust app with one agent per declared entity."""
    mirror = mirror or build_mirror(settings)
    extra: dict[str, Any] = {"datadir": settings.data_dir} if settings.data_dir else {}
    app = faust.App(
        settings.app_id,
        broker=settings.kafka_broker,
        store="memory://",
        autodiscover=False,
        web_enabled=True,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        canonical_url=f"http://{settings.web_host}:{settings.web_port}",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replicas,
        consumer_auto_offset_reset="earliest",
        # Raw bytes in, our own decoding: Faust's generic codecs add cost per event.
        key_serializer="raw",
        value_serializer="raw",
        # A killed worker's partitions move on after this long (Kafka's minimum is 6 s).
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 5),
        **extra,
    )
    register_agents(app, mirror, settings)
    register_tombstone_purge(app, mirror, settings)
    return app
