"""Build the Faust app of a worker from settings: the store, the Mirror and the agents."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import faust
from faust.transport.drivers.aiokafka import Consumer as AiokafkaConsumer

from models.registry import Registry, default_registry
from models.store import SqlStore
from streams.agents import register_agents, register_tombstone_purge
from streams.errors import SettingsError
from streams.logs import use_json_logs
from streams.mirror import Mirror
from streams.preflight import broker_problem, database_problem, web_port_problem
from streams.settings import Settings
from streams.web import register_pages
from tables.cache import declare_caches
from tables.watchdog import register_recovery_watchdog


def load_entities(settings: Settings, registry: Registry = default_registry) -> Registry:
    """Import the configured entity modules so that their models register."""
    for module in settings.entity_modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise SettingsError(f"ENTITY_MODULES: cannot import {module!r}: {exc}") from None
        except Exception as exc:  # the module's own code failed: say which, in one line
            detail = " ".join(str(exc).split()) or "(no message)"
            raise SettingsError(
                f"ENTITY_MODULES: importing {module!r} failed: {type(exc).__name__}: {detail}"
            ) from None
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


class AppliedOffsetsConsumer(AiokafkaConsumer):
    """Faust's aiokafka consumer, leaving every offset commit to ``AppliedOffsets``.

    Faust commits from its acked-offset bookkeeping, which runs ahead of what is applied once
    records are delivered out of order around a rebalance (the agents acknowledge records they
    drop and read again) and crawls behind after a seek. The agents commit the offsets they have
    applied instead (streams/agents.py), so Kafka's committed offsets never pass an unapplied
    record.
    """

    def _new_offset(self, tp: Any) -> int | None:
        return None


class MirrorApp(faust.App):
    """A Faust app that checks its broker and web port before starting."""

    mirror_settings: Settings
    #: Source topics of cached entities, checked to have TOPIC_PARTITIONS partitions.
    cached_topics: list[str]

    def _new_transport(self) -> Any:
        transport: Any = super()._new_transport()
        transport.Consumer = AppliedOffsetsConsumer  # this app's transport only
        return transport

    async def on_first_start(self) -> None:
        """Fail with one line, not a traceback, when the worker cannot work at all."""
        await super().on_first_start()
        if self.mirror_settings.log_format == "json":
            use_json_logs()
        problem = (
            web_port_problem(self.mirror_settings)
            or await database_problem(self.mirror_settings)
            or await broker_problem(self.mirror_settings, self.cached_topics)
        )
        if problem:
            print(f"error: {problem}", file=sys.stderr, flush=True)
            # Nothing has started yet; exiting here spares Faust's shutdown traceback.
            os._exit(1)


def broker_credentials(settings: Settings) -> Any:
    """Return Faust's credentials for the KAFKA_SECURITY_PROTOCOL, or None for PLAINTEXT."""
    protocol = settings.kafka_security_protocol
    if protocol == "SSL":
        return faust.SSLCredentials(settings.ssl_context())
    if protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=settings.ssl_context() if protocol == "SASL_SSL" else None,
        )
    return None


def build_app(settings: Settings, mirror: Mirror | None = None) -> faust.App:
    """Create the Faust app with one agent per declared entity."""
    mirror = mirror or build_mirror(settings)
    extra: dict[str, Any] = {"datadir": settings.data_dir} if settings.data_dir else {}
    credentials = broker_credentials(settings)
    if credentials is not None:
        extra["broker_credentials"] = credentials
    app = MirrorApp(
        settings.app_id,
        broker=settings.kafka_broker,
        store="memory://",
        autodiscover=False,
        web_enabled=True,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        canonical_url=settings.advertised_url,
        table_standby_replicas=settings.standby_replicas,
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
    app.mirror_settings = settings
    caches = declare_caches(app, mirror.registry, settings)
    app.cached_topics = [
        mirror.source_topic(cache.spec)
        for cache in caches.values()
        if not (cache.spec.repartition or cache.spec.kind in settings.repartition)
    ]
    register_agents(app, mirror, settings, caches)
    register_tombstone_purge(app, mirror, settings)
    register_pages(app, mirror, caches, settings.api_token)
    if caches:
        register_recovery_watchdog(app, settings.recovery_stall_timeout)
    return app
