"""Prometheus metrics of a worker, served at ``/metrics`` (prometheus_client's text format).

One registry per process; counters start at zero when the worker starts (durable totals of
outcomes are in the ``mirror_outcomes`` table). Each name says its unit (``_seconds``,
``_records``, ``_entries``, ``_partitions``; counters end in ``_total``), as Prometheus'
naming guide asks. The registry also holds the process' own metrics (``process_*``: memory,
CPU, open files; ``python_*``: the interpreter, its garbage collector) and
``mirror_build_info{version}``.
``deploy/prometheus/alerts.yml`` and ``deploy/grafana/dashboard.json`` use these names only
(``tests/unit/test_deploy_metrics.py``).

No ``*_created`` series: prometheus_client adds one to every counter and histogram by default
(the time its labels were first seen), which doubles the series and which nothing here reads.
``disable_created_metrics()`` switches them off: prometheus_client checks one flag of its
own at each collection, for every registry of the process (the variable
``PROMETHEUS_DISABLE_CREATED_SERIES`` sets that flag only when prometheus_client is first
imported, which may come before anything of ours runs).
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from streams.core.decisions import Outcome

disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream

registry = CollectorRegistry()
ProcessCollector(registry=registry)
PlatformCollector(registry=registry)
GCCollector(registry=registry)

BUILD = Info(
    "mirror_build",
    "The worker's version (streams.__version__, set by the composition root); always 1.",
    registry=registry,
)

EVENTS = Counter(
    "mirror_events",
    "Consumed records by entity, topic and outcome (applied, skipped, rejected).",
    ["entity", "topic", "outcome"],
    registry=registry,
)
REPLAYED = Counter(
    "mirror_replayed_records",
    "Records delivered again below the stored offset (already applied; no effect).",
    ["entity", "topic"],
    registry=registry,
)
BATCH_RECORDS = Histogram(
    "mirror_batch_records",
    "Records per applied batch.",
    ["entity"],
    buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000, 10000),
    registry=registry,
)
BATCH_SECONDS = Histogram(
    "mirror_batch_seconds",
    "Time from a batch being taken from its feed to its offsets being noted as applied: "
    "routing, dead letters, the SQL transaction and the cache's changelog write, with their "
    "retries and the waits between them (batches that fail for good are not observed).",
    ["entity"],
    registry=registry,
)
SQL_SECONDS = Histogram(
    "mirror_sql_transaction_seconds",
    "Time of one batch's SQL transaction (read versions, write, store offsets, commit).",
    ["entity"],
    registry=registry,
)
LAG = Gauge(
    "mirror_consumer_lag_records",
    "Records in the partition not yet applied (high watermark minus next offset to apply; "
    "refreshed every second and on each scrape).",
    ["topic", "partition"],
    registry=registry,
)
STALENESS = Gauge(
    "mirror_staleness_seconds",
    "Age of the partition's oldest record not yet applied (now minus its first timestamp; 0 "
    "when caught up, as mirror_consumer_lag_records). While that record is not fetched yet: a "
    "lower bound, the seconds since this worker first saw the partition behind without it. "
    "Refreshed every second and on each scrape.",
    ["entity", "topic", "partition"],
    registry=registry,
)
END_TO_END = Histogram(
    "mirror_end_to_end_delay_seconds",
    "Per applied batch: from the first timestamp of its oldest record (not a replay) to the "
    "commit of its SQL transaction. One observation per batch, not per record.",
    ["entity"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400),
    registry=registry,
)
CACHE_ENTRIES = Gauge(
    "mirror_cache_entries",
    "Entries this worker holds in the entity's cached table (refreshed on each scrape; "
    "RocksDB's estimate with TABLE_STORE=rocksdb).",
    ["entity"],
    registry=registry,
)
CACHE_LOCAL_FAILURES = Counter(
    "mirror_cache_local_failures",
    "Cached tables whose local store (under DATA_DIR) could not be written (a full disk): given "
    "up on this worker until it restarts; reads are answered from the database meanwhile.",
    ["entity"],
    registry=registry,
)
CACHE_REBUILT = Counter(
    "mirror_cache_rebuilt_entries",
    "Cache entries written again from the database because their keys moved to another "
    "changelog partition when partitions were added to the source topic.",
    ["entity"],
    registry=registry,
)
CACHE_SECONDS = Histogram(
    "mirror_cache_write_seconds",
    "Time to write one batch's committed state to the cached table's changelog.",
    ["entity"],
    registry=registry,
)
ROUTED = Counter(
    "mirror_entity_reads",
    "Reads by key of cached entities: answered here from the cache (local) or, for a key the "
    "cache does not hold, from the database (database), forwarded to the key's owner, or owner "
    "unreachable.",
    ["entity", "result"],
    registry=registry,
)
DISCARDED = Counter(
    "mirror_discarded_records",
    "Fetched records not handed on, or dropped on their way to the database, by reason "
    "(not_positioned, fetched_before_positioning, handed_on_already, repositioned, "
    "flow_stopped, held); each is read again, here or by its partition's new owner.",
    ["topic", "reason"],
    registry=registry,
)
OFFSET_GAPS = Counter(
    "mirror_offset_gaps",
    "Batches refused by their transaction because they did not continue from the offset stored "
    "with the data (records lost on their way would have been stepped over); the partition is "
    "read again from the stored offset. Anything but 0 is a bug to report.",
    ["topic", "partition"],
    registry=registry,
)
STAMPED_AHEAD = Counter(
    "mirror_timestamps_ahead",
    "Records whose timestamp was further ahead of the worker's clock than MAX_TIMESTAMP_AHEAD; "
    "their version counts them that far ahead at most (fix the producer's clock).",
    ["topic"],
    registry=registry,
)
LOG_RESTARTS = Counter(
    "mirror_log_restarts",
    "Partitions whose stored offset did not belong to their log (the topic was deleted and "
    "created again, a fresh broker, or records the broker lost): applied again from the new "
    "log's start (or its end, for lost records).",
    ["topic", "partition"],
    registry=registry,
)
LOST = Counter(
    "mirror_lost_records",
    "Records deleted from their topic (retention) before they were applied.",
    ["topic", "partition"],
    registry=registry,
)
DEAD_LETTER_FAILURES = Counter(
    "mirror_dead_letter_failures",
    "Dead letters the broker refused for good (too large); each holds its partition a while.",
    ["topic", "partition"],
    registry=registry,
)
FORWARD_FAILURES = Counter(
    "mirror_forward_failures",
    "Records a repartition topic refused for good (too large); each holds its source partition "
    "a while.",
    ["topic", "partition"],
    registry=registry,
)
BATCH_RETRIES = Counter(
    "mirror_batch_retries",
    "Attempts of a batch's step (apply, write, route ...) that failed with an error a retry can "
    "fix (the database or the broker unreachable); the batch is held and tried again.",
    ["step"],
    registry=registry,
)
STORE_CONFLICTS = Counter(
    "mirror_store_conflicts",
    "Batch transactions the database gave up for another's locks (a deadlock, a lock wait "
    "timeout: on MySQL/MariaDB, InnoDB's locks between workers upserting one table); each is "
    "retried, and also counted in mirror_batch_retries.",
    registry=registry,
)
BATCH_FAILURES = Counter(
    "mirror_batch_failures",
    "Batches that failed for a reason no retry fixes; their partitions are held a while.",
    ["entity"],
    registry=registry,
)
HELD = Gauge(
    "mirror_held_partitions",
    "Partitions not being read, by reason: backlog (their agent is behind), dead_letter (a dead "
    "letter cannot be written), forward (a record cannot be forwarded to its repartition topic), "
    "failed (a batch failed for good).",
    ["topic", "partition", "reason"],
    registry=registry,
)
RECOVERY_STALLS = Counter(
    "mirror_recovery_stalls",
    "Table recoveries that made no progress for RECOVERY_STALL_TIMEOUT: the worker rejoined its "
    "group (the first time) or exited with status 3 (a second stall in a row).",
    registry=registry,
)


def declare_entity(kind: str, topic: str) -> None:
    """Create ``kind``'s outcome and failure counters at 0, so that an alert sees the first one.

    A labelled series is born at its first increment, so its first value is already 1 and
    ``increase()`` sees nothing: the first dead letter or failed batch would go unnoticed.
    """
    for outcome in Outcome:
        EVENTS.labels(kind, topic, outcome.value)
    BATCH_FAILURES.labels(kind)
