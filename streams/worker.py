"""Build the Faust app of a worker from settings: the store, the SqlApplier and the agents."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import importlib
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import faust

from models.registry import Registry, default_registry
from models.store import SqlStore
from streams import __version__
from streams.apply.agents import (
    EntityAgents,
    register_agents,
    register_tombstone_purge,
    repartition_topic,
)
from streams.apply.sql_applier import SqlApplier
from streams.core.errors import MirrorError, SettingsError
from streams.faust_app import FAUST_OPTIONS, MirrorTransportApp
from streams.intake.faust_consumer import assignment_settled
from streams.intake.handoff import Handoff
from streams.intake.positioner import Positioner
from streams.kafka import aiokafka_fixes
from streams.kafka.topic_ids import TopicIds
from streams.ops import allocator, logs, metrics
from streams.ops.faust_recovery import recovery_watchdog
from streams.ops.freshness import Freshness
from streams.ops.preflight import (
    broker_problem,
    database_problem,
    faust_conf_problem,
    schema_problem,
    topic_partition_counts,
    web_port_problem,
)
from streams.ops.probes import LoopHeartbeat
from streams.ops.topic_watch import TopicWatch
from streams.ops.web import register_pages
from streams.settings import Settings
from tables.cache import EntityCache, changelog_topic, declare_caches
from tables.changelogs import read_changelogs, refill
from tables.local_store import check_table_files, lock_data_dir, writable_problem

log = logging.getLogger(__name__)

#: Seconds between refreshes of the lag and staleness gauges (also refreshed on each scrape).
FRESHNESS_INTERVAL = 1.0
#: How old the consumer's and producer's view of topics may get (partitions added show then).
METADATA_MAX_AGE_MS = 5_000


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


def build_mirror(settings: Settings, registry: Registry = default_registry) -> SqlApplier:
    """Build the SqlApplier (registry + SQL store) for ``settings``."""
    load_entities(settings, registry)
    return SqlApplier(
        registry,
        SqlStore.from_url(settings.database_url),
        group=settings.app_id,
        topic_prefix=settings.topic_prefix,
        timestamps_ahead=settings.max_timestamp_ahead,
    )


class MirrorApp(MirrorTransportApp):
    """A Faust app whose consumer hands mirrored topics over in batches
    (``streams.intake.faust_consumer``).

    It checks its broker and web port before starting, and never takes longer than
    SHUTDOWN_TIMEOUT to stop.
    """

    mirror_settings: Settings
    cached_topics: list[tuple[str, str]]
    """(source topic, changelog topic) of each cached entity read straight from its topic."""
    entity_agents: EntityAgents
    early_tasks: list[tuple[Callable[[], Awaitable[None]], float | None]]
    """What :meth:`run_early` registered."""
    caches: dict[str, EntityCache]
    topic_ids: TopicIds
    data_dir_lock: IO[bytes] | None = None
    """DATA_DIR's lock, held while the process lives."""
    serving: bool = False
    """Whether the web server has started: ``/ready`` from then on, until the app stops."""

    async def on_first_start(self) -> None:
        """Fail with one line, not a traceback, when the worker cannot work at all."""
        await super().on_first_start()
        settings = self.mirror_settings
        if (ignored := settings.ignored_variables_warning()) is not None:
            log.warning("%s", ignored)
        mirror = self.entity_agents.mirror
        problem = (
            faust_conf_problem(self.conf, settings)
            or web_port_problem(settings)
            or await database_problem(settings)
            or await schema_problem(mirror.store, list(mirror.registry))
            or await broker_problem(settings, self.cached_topics)
        )
        if not problem:
            try:
                await self.prepare_cached_tables()
            except MirrorError as exc:
                problem = str(exc)
            except Exception as exc:  # the broker's own errors (aiokafka) and the like
                problem = " ".join(f"cannot prepare the cached tables: {exc!r}".split())
        if problem:
            print(f"error: {problem}", file=sys.stderr, flush=True)
            # Nothing has started yet; exiting here spares Faust's shutdown traceback.
            os._exit(1)

    async def prepare_cached_tables(self) -> None:
        """Before Faust opens its table stores: lock DATA_DIR, make the changelogs that are
        missing, remove table files that do not belong to them (``tables.local_store``), and
        write again from the database each changelog that lost entities (``tables.changelogs``);
        one warning line per table saying what was done and why."""
        settings = self.mirror_settings
        data_dir = Path(settings.data_path)
        self.data_dir_lock = lock_data_dir(data_dir)
        if not self.caches:
            return
        logs = await read_changelogs(
            settings, {c.changelog: int(c.table.partitions) for c in self.caches.values()}
        )
        notes: dict[str, list[str]] = {}
        if settings.table_store == "rocksdb":
            tables = {c.table.name: logs[c.changelog] for c in self.caches.values()}
            removed = check_table_files(data_dir, Path(self.conf.tabledir), settings.app_id, tables)
            for name, why in removed.items():
                notes.setdefault(name, []).append(
                    f"its files in DATA_DIR were removed, as {why}; Faust recovers it from the "
                    "changelog"
                )
        mirror = self.entity_agents.mirror
        for name, cache in sorted(self.caches.items()):
            done = await refill(
                mirror.store, cache.spec, mirror.group, logs[cache.changelog], cache.writer
            )
            if done is not None:
                why, count = done
                notes.setdefault(name, []).append(
                    f"the changelog was written again from {cache.spec.table.name} "
                    f"({count} entries), as {why}"
                )
        for name, parts in sorted(notes.items()):
            changelog = self.caches[name].changelog
            log.warning("cached table %s (%s): %s", name, changelog, "; ".join(parts))

    def run_early(self, task: Callable[[], Awaitable[None]], every: float | None = None) -> None:
        """Run ``task`` from the app's start: once, or every ``every`` seconds.

        Faust starts its tasks, timers and web server only once the first table recovery is
        over (``App.on_started``); the SQL mirror, its commits and the pages (which answer 503
        for what still recovers) must not wait for it.
        """
        self.early_tasks.append((task, every))

    async def on_started(self) -> None:
        for task, every in self.early_tasks:
            self.add_future(task() if every is None else self._every(every, task))
        await self.on_started_init_web_server()  # Faust's own call later finds it started
        self.serving = True
        await super().on_started()

    async def _every(self, interval: float, task: Callable[[], Awaitable[None]]) -> None:
        name = getattr(task, "__qualname__", repr(task))
        while not self.should_stop:
            await self.sleep(interval)
            if self.should_stop:
                return
            try:
                await task()
            except Exception:  # a timer goes on, as Faust's do
                log.exception("%s failed; again in %.1f s", name, interval)

    async def on_mirror_revoked(self, revoked: set[Any]) -> None:
        """Let batches in flight finish and commit what is applied, before partitions move."""
        await self.entity_agents.on_revoked(revoked)

    async def on_stop(self) -> None:
        """Stop within SHUTDOWN_TIMEOUT, whatever a batch in flight is waiting for."""
        arm_exit_deadline(self.mirror_settings.shutdown_timeout)
        await super().on_stop()
        await self.entity_agents.dead_letters.close()
        await self.entity_agents.forward_producer.close()
        await self.topic_ids.close()
        for cache in self.caches.values():
            await cache.writer.close()


class MirrorWorker(faust.Worker):
    """Faust's worker, logging at LOG_LEVEL in LOG_FORMAT from its first line.

    LOG_LEVEL wins over Faust's ``-l``: the level is one setting, read with all the others, and
    ``faust -A streams.app worker -l info`` (the worker contract since 0.1.0) keeps working
    with whatever LOG_LEVEL says. A ``-l`` that differs is named in one warning line; Faust's
    ``-l warn`` is its default and cannot be told from no ``-l`` at all.
    """

    def __init__(
        self,
        app: MirrorApp,
        *services: Any,
        loglevel: str | int | None = None,
        logging_config: dict[str, Any] | None = None,
        redirect_stdouts_level: str | int | None = None,
        **kwargs: Any,
    ) -> None:
        settings = app.mirror_settings
        level = settings.log_level
        if logs.level_number(loglevel) not in (None, logging.WARNING, logs.level_number(level)):
            log.warning(
                "-l %s is ignored: LOG_LEVEL=%s sets the worker's log level",
                str(loglevel).lower(),
                level,
            )
        # What Faust writes to stdout and stderr once started goes to the log at this level:
        # never below LOG_LEVEL, or an "error: ..." line would be filtered out.
        redirected = max(
            logs.level_number(redirect_stdouts_level or app.conf.worker_redirect_stdouts_level)
            or logging.WARNING,
            logs.level_number(level) or logging.INFO,
        )
        json_lines = settings.log_format == "json"
        if json_lines:
            # Nothing but JSON on stderr: the worker's own notes ("-INT-") are not log records.
            kwargs["quiet"] = True
        super().__init__(
            app,
            *services,
            loglevel=level,
            logging_config=logging_config or logs.logging_config(settings.log_format, level),
            redirect_stdouts_level=redirected,
            **kwargs,
        )
        if json_lines or not _is_terminal(self.stdout):
            # Faust's progress spinner (at LOG_LEVEL warning and above) is for a terminal:
            # elsewhere it writes escape codes to stdout, and it sets the root logger to DEBUG
            # for itself. Without it the root logger stays at LOG_LEVEL, and "Ready" is logged.
            self.spinner = None


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def arm_exit_deadline(seconds: float) -> None:
    """Exit the process ``seconds`` from now unless it has ended by then.

    A batch can be stuck where cancelling does not reach (a thread waiting on the database);
    the process exits anyway, as after a crash: nothing uncommitted is lost, it is read again.
    """

    def expire() -> None:
        message = (
            f"warning: the worker did not stop within SHUTDOWN_TIMEOUT ({seconds:.0f} s); "
            "exiting now (what was not committed is read again at the next start)"
        )
        print(message, file=sys.stderr, flush=True)
        os._exit(0)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


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


def tune_garbage_collector() -> None:
    """Collect cyclic garbage in larger steps than CPython's default, and never rescan start-up.

    A batch allocates tens of thousands of short-lived objects (records, decisions, rows), so
    the default first threshold (700 allocations) ran the collector hundreds of times a batch,
    each older-generation pass scanning everything alive, Faust's objects and the batches in
    flight included: about a third of the worker's time (``./run bench``: 26,389 events/s with
    the defaults, 33,906 with these thresholds, 34,868 with them and the freeze). Objects of the
    hot path are freed by reference counting; the collector is only for cycles.
    """
    gc.set_threshold(50_000, 20, 100)
    gc.freeze()  # what exists now (modules, the app) is never scanned again


def source_partition_counts(settings: Settings, topics: list[str]) -> dict[str, int | None]:
    """Return the partition counts of ``topics`` ({} when the brokers do not answer: the
    start-up check then says so in one line)."""
    if not topics:
        return {}

    def ask() -> dict[str, int | None]:
        return asyncio.run(topic_partition_counts(settings, topics))

    # A thread of its own: the app may be built inside a running event loop (tests).
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        try:
            return pool.submit(ask).result()
        except MirrorError:
            return {}


def ensure_data_dir(path: str) -> str:
    """Create DATA_DIR if it does not exist yet and check the worker can write in it (Faust
    would crash on a missing one, RocksDB with a traceback on a read-only one)."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise SettingsError(f"DATA_DIR: cannot create {path!r}: {exc.strerror}") from None
    problem = writable_problem(Path(path))
    if problem is not None:
        raise SettingsError(
            f"DATA_DIR: {problem}; give the worker's user write access to it, or set DATA_DIR "
            "to a directory it can write"
        )
    return path


def _spec_of(mirror: SqlApplier, topic: str, settings: Settings) -> Any:
    """Return the entity applied from ``topic`` (its source or its repartition topic)."""
    for spec in mirror.registry:
        if topic in (mirror.source_topic(spec), repartition_topic(mirror, spec, settings)):
            return spec
    return None


def build_app(settings: Settings, mirror: SqlApplier | None = None) -> faust.App:
    """Create the Faust app with one agent per declared entity."""
    # First: it refuses an aiokafka its patches were not written for, before anything starts.
    aiokafka_fixes.install()  # records whose header keys are not UTF-8 are read, not fatal
    mirror = mirror or build_mirror(settings)
    tune_garbage_collector()
    allocator.tune()  # fetch buffers' memory kept for the next fetch, not faulted in again
    metrics.BUILD.info({"version": __version__})
    extra: dict[str, Any] = {}
    credentials = broker_credentials(settings)
    if credentials is not None:
        extra["broker_credentials"] = credentials
    app = MirrorApp(
        settings.app_id,
        # Every setting Faust would otherwise take from its own variables (FAUST_OPTIONS: none
        # of its Settings' variables; faust/types/_env.py's only give these defaults).
        **FAUST_OPTIONS,
        datadir=ensure_data_dir(settings.data_path),
        broker=settings.kafka_broker,
        store=f"{settings.table_store}://",
        autodiscover=False,
        web_enabled=True,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        web_transport="tcp://",
        canonical_url=settings.advertised_url,
        table_standby_replicas=settings.standby_replicas,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replicas,
        consumer_auto_offset_reset="earliest",
        # Raw bytes in, our own decoding: Faust's generic codecs add cost per event.
        key_serializer="raw",
        value_serializer="raw",
        # A killed worker's partitions move on after this long (Kafka's minimum is 6 s).
        # Partitions added to a topic are seen within seconds (aiokafka's default is 5 min).
        consumer_metadata_max_age_ms=METADATA_MAX_AGE_MS,
        producer_metadata_max_age_ms=METADATA_MAX_AGE_MS,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 5),
        # LOG_LEVEL and LOG_FORMAT from the worker's first line (streams/ops/logs.py).
        Worker=MirrorWorker,
        **extra,
    )
    app.mirror_settings = settings
    app.early_tasks = []
    app.topic_ids = TopicIds(settings.broker_hosts, settings.kafka_client_options())
    pairs = {
        spec.kind: (mirror.source_topic(spec), changelog_topic(settings.app_id, spec.kind))
        for spec in mirror.registry
        if spec.cached and not settings.repartitioned(spec)
    }
    counts = source_partition_counts(settings, [source for source, _ in pairs.values()])
    caches = declare_caches(
        app,
        mirror.registry,
        settings,
        {kind: n for kind, (source, _) in pairs.items() if (n := counts.get(source)) is not None},
    )
    app.caches = caches
    app.cached_topics = list(pairs.values())
    # A partition's backlog waiting for its agent, above which it is not fetched.
    app.handoff = Handoff(high_water=settings.batch_size // 2)
    agents = register_agents(app, mirror, settings, app.handoff, caches)
    app.entity_agents = agents
    positioner = Positioner(
        app,
        app.handoff,
        mirror,
        cached_topics={
            topic
            for topic in app.handoff.feeds
            if (spec := _spec_of(mirror, topic, settings)) is not None and spec.cached
        },
        on_positioned=agents.applied.positioned,
        kafka_offset_topics=agents.kafka_offset_topics,
        topic_ids=app.topic_ids,
    )
    app.handoff.listen(on_jump=positioner.check_jump, on_refused=positioner.refused)
    app.run_early(positioner.run)

    async def commit_applied() -> None:
        # Also while tables recover: the assignment is settled, and the mirror goes on.
        if assignment_settled(app):
            await agents.commit_applied()

    app.run_early(commit_applied, every=float(app.conf.broker_commit_interval))

    if caches:
        app.run_early(recovery_watchdog(app, settings.recovery_stall_timeout), every=1.0)
    watch = TopicWatch(app, settings, mirror, app.handoff, caches, app.topic_ids)
    app.run_early(watch.run)
    register_tombstone_purge(app, mirror, settings)
    kinds = {
        topic: spec.kind
        for topic in app.handoff.feeds
        if (spec := _spec_of(mirror, topic, settings)) is not None
    }
    freshness = Freshness(app, agents, kinds)
    # Every second too, not only on scrape: the lower bound of a partition whose oldest
    # record is not fetched yet counts from when it was first seen behind.
    app.run_early(freshness.run, every=FRESHNESS_INTERVAL)
    heartbeat = LoopHeartbeat()
    app.run_early(heartbeat.run)
    register_pages(
        app,
        mirror,
        caches,
        settings.api_token,
        freshness.refresh,
        heartbeat=heartbeat,
        serving=lambda: app.serving,
        kinds=kinds,
        version=__version__,
    )
    return app
