"""The one settings object, built once from the environment at the edge of the program.

Nothing else in the project reads ``os.environ``: the worker, the command line and the
tests build a :class:`Settings` and pass it down.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from streams.errors import SettingsError

DEFAULT_KAFKA_BROKER = "kafka://127.0.0.1:9092"
DEFAULT_APP_ID = "entity-mirror"
DEFAULT_WEB_PORT = 6066
DEFAULT_SQLITE_FILE = "mirror.sqlite3"

_APP_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_HOST_PORT_RE = re.compile(r"^[A-Za-z0-9._-]+:\d{1,5}$")
_BROKER_SCHEMES = ("kafka://", "aiokafka://")

#: Every variable the settings read, with its default, for docs and the compose check.
ENVIRONMENT: dict[str, str] = {
    "KAFKA_BROKER": DEFAULT_KAFKA_BROKER,
    "DATABASE_URL": f"sqlite:///./{DEFAULT_SQLITE_FILE}",
    "APP_ID": DEFAULT_APP_ID,
    "WEB_PORT": str(DEFAULT_WEB_PORT),
    "WEB_HOST": "127.0.0.1",
    "CANONICAL_URL": "",
    "STANDBY_REPLICAS": "0",
    "RECOVERY_STALL_TIMEOUT": "60",
    "TOPIC_PARTITIONS": "4",
    "TOPIC_REPLICAS": "1",
    "BATCH_SIZE": "5000",
    "BATCH_WAIT": "0.2",
    "APPLY_LANES": "2",
    "TABLE_STORE": "rocksdb",
    "LOG_LEVEL": "info",
    "TOPIC_PREFIX": "",
    "ENTITY_MODULES": "models.planet",
    "DATA_DIR": "",
    "DLQ_SUFFIX": ".dlq",
    "REPARTITION": "",
    "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
    "KAFKA_SASL_MECHANISM": "PLAIN",
    "KAFKA_SASL_USERNAME": "",
    "KAFKA_SASL_PASSWORD": "",
    "KAFKA_SSL_CAFILE": "",
    "KAFKA_SSL_CERTFILE": "",
    "KAFKA_SSL_KEYFILE": "",
    "API_TOKEN": "",
    "LOG_FORMAT": "text",
    "SESSION_TIMEOUT": "30",
    "SHUTDOWN_TIMEOUT": "30",
    "TOMBSTONE_RETENTION": str(7 * 24 * 3600),
}


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated configuration of one worker process."""

    kafka_broker: str = DEFAULT_KAFKA_BROKER
    """Faust broker URL(s), e.g. ``kafka://127.0.0.1:9092``; several separated by ``;``."""
    database_url: str = field(default=f"sqlite:///{DEFAULT_SQLITE_FILE}", repr=False)
    """SQLAlchemy URL of the mirror store; SQLite in the working directory by default. It may
    hold a password: show :attr:`database_url_safe` instead."""
    app_id: str = DEFAULT_APP_ID
    """Faust app id, which is also the Kafka consumer group."""
    web_port: int = DEFAULT_WEB_PORT
    """Port of the worker's HTTP server (one per worker on a machine)."""
    web_host: str = "127.0.0.1"
    """Interface the HTTP server binds to and advertises to other workers."""
    canonical_url: str = ""
    """URL other workers reach this one at (routed reads); empty: ``http://WEB_HOST:WEB_PORT``,
    or the machine's host name when WEB_HOST is a wildcard like 0.0.0.0."""
    standby_replicas: int = 0
    """Workers that keep a standby copy of each cached table partition."""
    recovery_stall_timeout: float = 60.0
    """Seconds a cached table's recovery may make no progress before the worker exits."""
    topic_partitions: int = 4
    """Partitions of entity topics that the worker creates when they are missing."""
    topic_replicas: int = 1
    """Replication factor of topics that the worker creates."""
    batch_size: int = 5000
    """Most events applied in one SQL transaction."""
    batch_wait: float = 0.2
    """Longest wait, in seconds, for a batch to fill before it is applied anyway."""
    apply_lanes: int = 2
    """Batches of one entity applied at once, each from its own partitions (p mod lanes)."""
    table_store: str = "rocksdb"
    """Where cached tables live: ``rocksdb`` (files under DATA_DIR: a restart or a promoted
    standby recovers only what changed since) or ``memory`` (recovered from the changelog's
    start after every rebalance)."""
    log_level: str = "info"
    """Worker log level."""
    topic_prefix: str = ""
    """Prefix put before every entity topic name (separate environments, tests)."""
    entity_modules: tuple[str, ...] = ("models.planet",)
    """Modules imported at start so that their entity declarations register."""
    data_dir: str = ""
    """Faust's data directory; empty means ``<APP_ID>-data`` in the working directory."""
    dlq_suffix: str = ".dlq"
    """Dead letters of ``<topic>`` go to ``<topic><DLQ_SUFFIX>``."""
    repartition: tuple[str, ...] = ()
    """Entity kinds whose topics are not keyed by entity key (besides ``__repartition__``)."""
    kafka_security_protocol: str = "PLAINTEXT"
    """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""
    kafka_sasl_mechanism: str = "PLAIN"
    """PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with SASL_*)."""
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = field(default="", repr=False)
    kafka_ssl_cafile: str = ""
    """CA bundle to verify the brokers (SSL, SASL_SSL); empty: the system's."""
    kafka_ssl_certfile: str = ""
    """Client certificate for mutual TLS (optional)."""
    kafka_ssl_keyfile: str = ""
    api_token: str = field(default="", repr=False)
    """When set, every HTTP page but /health requires ``Authorization: Bearer <token>``."""
    log_format: str = "text"
    """``text`` (Faust's) or ``json``: one JSON object per line."""
    session_timeout: float = 30.0
    """Seconds before the group gives a silent worker's partitions to the others."""
    shutdown_timeout: float = 30.0
    """Seconds a stopping worker may take; then it exits anyway (uncommitted work is replayed)."""
    tombstone_retention: float = 7 * 24 * 3600.0
    """Seconds a delete's tombstone is kept; a later event older than the delete is skipped
    only while its tombstone lasts."""

    @property
    def broker_hosts(self) -> list[str]:
        """Return the broker addresses as ``host:port`` strings, schemes removed."""
        return [_strip_scheme(part) for part in _split_brokers(self.kafka_broker)]

    def kafka_client_options(self) -> dict[str, Any]:
        """Return the security keyword arguments of aiokafka clients (CLI, preflight, tests)."""
        options: dict[str, Any] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            options["ssl_context"] = self.ssl_context()
        if self.kafka_security_protocol.startswith("SASL"):
            options["sasl_mechanism"] = self.kafka_sasl_mechanism
            options["sasl_plain_username"] = self.kafka_sasl_username
            options["sasl_plain_password"] = self.kafka_sasl_password
        return options

    def ssl_context(self) -> ssl.SSLContext:
        """Build the TLS context for the brokers from the KAFKA_SSL_* files."""
        context = ssl.create_default_context(cafile=self.kafka_ssl_cafile or None)
        if self.kafka_ssl_certfile:
            context.load_cert_chain(self.kafka_ssl_certfile, self.kafka_ssl_keyfile or None)
        return context

    @property
    def advertised_url(self) -> str:
        """Return the URL other workers use to reach this worker's HTTP server."""
        if self.canonical_url:
            return self.canonical_url
        host = self.web_host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        return f"http://{host}:{self.web_port}"

    @property
    def database_url_safe(self) -> str:
        """Return DATABASE_URL with its password masked, the only form fit to print or log."""
        return make_url(self.database_url).render_as_string(hide_password=True)

    @property
    def is_sqlite(self) -> bool:
        """Tell whether the store is the embedded SQLite default (or another SQLite file)."""
        return make_url(self.database_url).get_backend_name() == "sqlite"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, cwd: Path | None = None
    ) -> Settings:
        """Build settings from environment variables, failing with the variable's name."""
        env = os.environ if environ is None else environ
        workdir = Path.cwd() if cwd is None else cwd
        return cls(
            kafka_broker=parse_kafka_broker(env.get("KAFKA_BROKER", DEFAULT_KAFKA_BROKER)),
            database_url=parse_database_url(env.get("DATABASE_URL"), workdir),
            app_id=_parse_app_id(env.get("APP_ID", DEFAULT_APP_ID)),
            web_port=_parse_int(env, "WEB_PORT", DEFAULT_WEB_PORT, low=1, high=65535),
            web_host=_parse_host(env.get("WEB_HOST", "127.0.0.1")),
            canonical_url=_parse_url(env.get("CANONICAL_URL", "")),
            standby_replicas=_parse_int(env, "STANDBY_REPLICAS", 0, low=0, high=10),
            recovery_stall_timeout=_parse_float(
                env, "RECOVERY_STALL_TIMEOUT", 60.0, low=5.0, high=86400.0
            ),
            topic_partitions=_parse_int(env, "TOPIC_PARTITIONS", 4, low=1, high=10_000),
            topic_replicas=_parse_int(env, "TOPIC_REPLICAS", 1, low=1, high=100),
            batch_size=_parse_int(env, "BATCH_SIZE", 5000, low=1, high=1_000_000),
            batch_wait=_parse_float(env, "BATCH_WAIT", 0.2, low=0.001, high=60.0),
            apply_lanes=_parse_int(env, "APPLY_LANES", 2, low=1, high=16),
            table_store=_parse_choice(env, "TABLE_STORE", "rocksdb", ("rocksdb", "memory")),
            log_level=_parse_log_level(env.get("LOG_LEVEL", "info")),
            topic_prefix=_parse_topic_prefix(env.get("TOPIC_PREFIX", "")),
            entity_modules=_parse_modules(env.get("ENTITY_MODULES", "models.planet")),
            data_dir=env.get("DATA_DIR", "").strip(),
            dlq_suffix=_parse_dlq_suffix(env.get("DLQ_SUFFIX", ".dlq")),
            repartition=_parse_kinds(env.get("REPARTITION", "")),
            **_kafka_security(env),
            api_token=env.get("API_TOKEN", ""),
            log_format=_parse_choice(env, "LOG_FORMAT", "text", ("text", "json")),
            session_timeout=_parse_float(env, "SESSION_TIMEOUT", 30.0, low=6.0, high=1800.0),
            shutdown_timeout=_parse_float(env, "SHUTDOWN_TIMEOUT", 30.0, low=1.0, high=3600.0),
            tombstone_retention=_parse_float(
                env, "TOMBSTONE_RETENTION", 7 * 24 * 3600.0, low=1.0, high=10 * 365 * 86400.0
            ),
        )


def _split_brokers(value: str) -> list[str]:
    return [part.strip() for part in re.split(r"[;,]", value) if part.strip()]


def _strip_scheme(part: str) -> str:
    for scheme in _BROKER_SCHEMES:
        if part.startswith(scheme):
            return part[len(scheme) :]
    return part


def parse_kafka_broker(value: str) -> str:
    """Normalise ``KAFKA_BROKER`` to ``kafka://host:port[;kafka://host:port...]``."""
    parts = _split_brokers(value)
    if not parts:
        raise SettingsError("KAFKA_BROKER is empty; set it like kafka://127.0.0.1:9092")
    normalised = []
    for part in parts:
        if "://" in part and not part.startswith(_BROKER_SCHEMES):
            raise SettingsError(
                f"KAFKA_BROKER has an unsupported scheme in {part!r}; use kafka://host:port"
            )
        hostport = _strip_scheme(part)
        if not _HOST_PORT_RE.match(hostport) or not 0 < int(hostport.rsplit(":", 1)[1]) < 65536:
            raise SettingsError(
                f"KAFKA_BROKER entry {part!r} is not host:port; use kafka://127.0.0.1:9092"
            )
        normalised.append(f"kafka://{hostport}")
    return ";".join(normalised)


def parse_database_url(value: str | None, cwd: Path) -> str:
    """Validate ``DATABASE_URL``; unset means a SQLite file in the working directory.

    A plain ``postgresql://`` URL is rewritten to ``postgresql+psycopg2://``: SQLAlchemy 2.1
    would otherwise pick the psycopg 3 driver, which this project does not install.
    """
    if value is None or not value.strip():
        return f"sqlite:///{cwd / DEFAULT_SQLITE_FILE}"
    try:
        url: URL = make_url(value.strip())
    except ArgumentError as exc:
        raise SettingsError(
            f"DATABASE_URL is not an SQLAlchemy URL ({exc}); "
            "use e.g. postgresql+psycopg2://user:pass@host:5432/db or sqlite:///mirror.sqlite3"
        ) from None
    backend, driver = url.get_backend_name(), url.get_driver_name()
    if backend == "postgresql":
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg2")
        elif driver != "psycopg2":
            raise SettingsError(
                f"DATABASE_URL uses driver {url.drivername!r}; only postgresql+psycopg2 "
                "is installed"
            )
        if not url.database:
            raise SettingsError("DATABASE_URL names no database; add /<dbname> to the URL")
    elif backend != "sqlite":
        raise SettingsError(
            f"DATABASE_URL backend {backend!r} is not supported; use postgresql or sqlite"
        )
    return url.render_as_string(hide_password=False)


def _parse_app_id(value: str) -> str:
    if not _APP_ID_RE.match(value):
        raise SettingsError(
            f"APP_ID {value!r} is not a valid consumer group id; "
            "use letters, digits, '.', '_' or '-'"
        )
    return value


def _parse_host(value: str) -> str:
    if not re.match(r"^[A-Za-z0-9.:_-]+$", value):
        raise SettingsError(f"WEB_HOST {value!r} is not a host name or address")
    return value


def _parse_url(value: str) -> str:
    value = value.strip().rstrip("/")
    if value and not re.match(r"^https?://[A-Za-z0-9.:_\[\]-]+$", value):
        raise SettingsError(
            f"CANONICAL_URL {value!r} must look like http://host:port (how other workers "
            "reach this one)"
        )
    return value


def _parse_int(env: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _parse_float(
    env: Mapping[str, str], name: str, default: float, *, low: float, high: float
) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _parse_log_level(value: str) -> str:
    level = value.strip().lower()
    if level not in ("debug", "info", "warning", "error", "critical"):
        raise SettingsError(
            f"LOG_LEVEL must be one of debug, info, warning, error, critical; got {value!r}"
        )
    return level


def _parse_topic_prefix(value: str) -> str:
    if value and not re.match(r"^[A-Za-z0-9._-]{1,100}$", value):
        raise SettingsError(
            f"TOPIC_PREFIX {value!r} may hold only letters, digits, '.', '_' and '-'"
        )
    return value


def _parse_modules(value: str) -> tuple[str, ...]:
    modules = tuple(part.strip() for part in value.split(",") if part.strip())
    for module in modules:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$", module):
            raise SettingsError(f"ENTITY_MODULES entry {module!r} is not a module path")
    if not modules:
        raise SettingsError("ENTITY_MODULES is empty; name at least one module of entities")
    return modules


def _parse_kinds(value: str) -> tuple[str, ...]:
    kinds = tuple(part.strip() for part in value.split(",") if part.strip())
    for kind in kinds:
        if not re.match(r"^[a-z][a-z0-9_]*$", kind):
            raise SettingsError(f"REPARTITION entry {kind!r} is not an entity kind like 'planet'")
    return kinds


def _parse_dlq_suffix(value: str) -> str:
    if not re.match(r"^[A-Za-z0-9._-]{1,50}$", value):
        raise SettingsError(
            f"DLQ_SUFFIX {value!r} must be 1-50 letters, digits, '.', '_' or '-' (e.g. .dlq)"
        )
    return value


def _parse_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, default).strip() or default
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _kafka_security(env: Mapping[str, str]) -> dict[str, str]:
    protocol = _parse_choice(
        env,
        "KAFKA_SECURITY_PROTOCOL",
        "PLAINTEXT",
        ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
    )
    mechanism = _parse_choice(
        env, "KAFKA_SASL_MECHANISM", "PLAIN", ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
    )
    values = {
        "kafka_security_protocol": protocol,
        "kafka_sasl_mechanism": mechanism,
        "kafka_sasl_username": env.get("KAFKA_SASL_USERNAME", ""),
        "kafka_sasl_password": env.get("KAFKA_SASL_PASSWORD", ""),
        "kafka_ssl_cafile": env.get("KAFKA_SSL_CAFILE", ""),
        "kafka_ssl_certfile": env.get("KAFKA_SSL_CERTFILE", ""),
        "kafka_ssl_keyfile": env.get("KAFKA_SSL_KEYFILE", ""),
    }
    if protocol.startswith("SASL") and not values["kafka_sasl_username"]:
        raise SettingsError(
            f"KAFKA_SASL_USERNAME is required with KAFKA_SECURITY_PROTOCOL={protocol}"
        )
    for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
        if values[name] and not Path(values[name]).is_file():
            raise SettingsError(f"{name.upper()} {values[name]!r} is not a readable file")
    return values
