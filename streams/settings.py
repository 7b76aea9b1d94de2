"""The one settings object, built once from the environment at the edge of the program.

Nothing else in the project reads ``os.environ``: the worker, the command line and the
tests build a :class:`Settings` and pass it down.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from streams.core.errors import SettingsError

if TYPE_CHECKING:  # models import the core only; the settings need no model at run time
    from models.registry import EntitySpec

DEFAULT_KAFKA_BROKER = "kafka://127.0.0.1:9092"
DEFAULT_APP_ID = "entity-mirror"
DEFAULT_WEB_PORT = 6066
DEFAULT_SQLITE_FILE = "mirror.sqlite3"

_APP_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_HOST_PORT_RE = re.compile(r"^[A-Za-z0-9._-]+:\d{1,5}$")
_BROKER_SCHEMES = ("kafka://", "aiokafka://")

#: Variables Faust reads for something the worker configures from a variable of its own (the
#: worker's, in the values). The worker reads none of them: Faust's ``Settings`` get no
#: environment (``streams.faust_app.FAUST_OPTIONS``), and what ``faust/types/_env.py`` reads
#: (``FAUST_*``, ``F_*``; faust's ``--datadir`` sets ``FAUST_DATADIR``) are only defaults of
#: settings the worker always passes. Set beside the worker's, they are named in one warning.
FAUST_VARIABLES: dict[str, str] = {
    "BROKER_URL": "KAFKA_BROKER",
    "BROKER_CONSUMER_URL": "KAFKA_BROKER",
    "BROKER_PRODUCER_URL": "KAFKA_BROKER",
    "BROKER_CREDENTIALS": "KAFKA_SECURITY_PROTOCOL",
    "BROKER_SESSION_TIMEOUT": "SESSION_TIMEOUT",
    "WEB_BIND": "WEB_HOST",
    "NODE_CANONICAL_URL": "CANONICAL_URL",
    "APP_DATADIR": "DATA_DIR",
    "APP_TABLEDIR": "DATA_DIR",
    "APP_STORE": "TABLE_STORE",
    "TABLE_STANDBY_REPLICAS": "STANDBY_REPLICAS",
    "TOPIC_REPLICATION_FACTOR": "TOPIC_REPLICAS",
    "FAUST_DATADIR": "DATA_DIR",
    "F_DATADIR": "DATA_DIR",
    "FAUST_WEB_PORT": "WEB_PORT",
    "F_WEB_PORT": "WEB_PORT",
    "FAUST_F_WEB_BIND": "WEB_HOST",
    "F_F_WEB_BIND": "WEB_HOST",
}

Parse = Callable[[str, "Read"], Any]


@dataclass(frozen=True, slots=True)
class Read:
    """What a parser knows besides the raw text: the variable, its default, the cwd."""

    name: str
    default: Any
    cwd: Path


@dataclass(frozen=True, slots=True)
class Variable:
    """How one environment variable becomes one field of :class:`Settings`."""

    name: str
    parse: Parse
    """Turns the variable's text into the field's value, or raises a one-line SettingsError
    naming the variable."""
    when_unset: bool = False
    """Parse even when the variable is unset (with ``""``): the default depends on the cwd."""
    shown: str | None = None
    """The default as the README shows it, when it is not the field's default as text."""
    secret: bool = False
    """A secret: it may instead come from the file ``<name>_FILE`` names (a mounted secret)."""

    @property
    def file_name(self) -> str | None:
        """Return the variable naming a file that holds this secret, or None."""
        return f"{self.name}{FILE_SUFFIX}" if self.secret else None


#: ``<NAME>_FILE`` names a file holding the secret ``<NAME>`` (Docker and Kubernetes secrets).
FILE_SUFFIX = "_FILE"


def env(
    name: str,
    parse: Parse,
    *,
    when_unset: bool = False,
    shown: str | None = None,
    secret: bool = False,
) -> Any:
    """Declare the variable of a field (the field's default is the variable's)."""
    return {"env": Variable(name, parse, when_unset, shown, secret)}


def read_secret(variable: Variable, environ: Mapping[str, str]) -> str | None:
    """Return the text of ``variable`` from the environment or from its ``_FILE``, or None.

    The file's one trailing newline (what ``echo`` and editors add) is not part of the secret.
    Both set is refused rather than one silently winning; an empty value counts as unset.
    """
    raw = environ.get(variable.name)
    file_name = variable.file_name
    path = environ.get(file_name) if file_name else None
    if not path:
        return raw
    if raw:
        raise SettingsError(
            f"{variable.name} and {file_name} are both set; set one of them "
            f"({file_name} names a file holding {variable.name})"
        )
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SettingsError(f"{file_name} {path!r} cannot be read: {reason}") from None
    if text.endswith("\n"):
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    return text


def _ranged(kind: type[int] | type[float], low: float, high: float) -> Parse:
    """A parser of an integer (``kind`` int) or a number between ``low`` and ``high``."""
    what = "an integer" if kind is int else "a number"

    def parse(raw: str, read: Read) -> int | float:
        if raw.strip() == "":
            return kind(read.default)
        try:
            value = kind(raw.strip())
        except ValueError:
            raise SettingsError(f"{read.name} must be {what}, got {raw!r}") from None
        if not low <= value <= high:
            raise SettingsError(f"{read.name} must be between {low} and {high}, got {value}")
        return value

    return parse


def _integer(low: int, high: int) -> Parse:
    return _ranged(int, low, high)


def _number(low: float, high: float) -> Parse:
    return _ranged(float, low, high)


def _choice(*choices: str) -> Parse:
    def parse(raw: str, read: Read) -> str:
        value = raw.strip() or str(read.default)
        if value not in choices:
            raise SettingsError(f"{read.name} must be one of {', '.join(choices)}; got {raw!r}")
        return value

    return parse


def _text(raw: str, read: Read) -> str:
    return raw


def _stripped(raw: str, read: Read) -> str:
    return raw.strip()


def _file(raw: str, read: Read) -> str:
    if raw and not Path(raw).is_file():
        raise SettingsError(f"{read.name} {raw!r} is not a readable file")
    return raw


def _only(check: Callable[[str], Any]) -> Parse:
    """A parser from a check of the text alone (its messages name the variable already)."""
    return lambda raw, read: check(raw)


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


#: The driver the project installs for each database server it supports.
_DRIVERS = {"postgresql": "psycopg2", "mysql": "pymysql", "mariadb": "pymysql"}


def parse_database_url(value: str | None, cwd: Path) -> str:
    """Validate ``DATABASE_URL``; unset means a SQLite file in the working directory.

    A plain ``postgresql://`` URL is rewritten to ``postgresql+psycopg2://``: SQLAlchemy 2.1
    would otherwise pick the psycopg 3 driver, which this project does not install. Likewise
    a plain ``mysql://`` or ``mariadb://`` URL is given PyMySQL, the MySQL driver the project
    installs (SQLAlchemy's default is mysqlclient).
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
    backend = url.get_backend_name()
    driver = _DRIVERS.get(backend)
    if driver is not None:
        if url.drivername == backend:
            url = url.set(drivername=f"{backend}+{driver}")
        elif url.get_driver_name() != driver:
            raise SettingsError(
                f"DATABASE_URL uses driver {url.drivername!r}; only {backend}+{driver} is installed"
            )
        if not url.database:
            raise SettingsError("DATABASE_URL names no database; add /<dbname> to the URL")
    elif backend != "sqlite":
        raise SettingsError(
            f"DATABASE_URL backend {backend!r} is not supported; use postgresql, mysql, mariadb "
            "or sqlite"
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


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated configuration of one worker process.

    Each field declares its environment variable, default and parser once (``env(...)``);
    :meth:`from_env`, :data:`ENVIRONMENT` and the README's table check all read that. A small
    hand-written reader rather than pydantic-settings: it keeps the frozen dataclass and
    the exact one-line messages.
    """

    kafka_broker: str = field(
        default=DEFAULT_KAFKA_BROKER,
        metadata=env("KAFKA_BROKER", _only(parse_kafka_broker)),
    )
    """Faust broker URL(s), e.g. ``kafka://127.0.0.1:9092``; several separated by ``;``."""
    database_url: str = field(
        default=f"sqlite:///{DEFAULT_SQLITE_FILE}",
        repr=False,
        metadata=env(
            "DATABASE_URL",
            lambda raw, read: parse_database_url(raw, read.cwd),
            when_unset=True,
            shown=f"sqlite:///<cwd>/{DEFAULT_SQLITE_FILE}",
            secret=True,
        ),
    )
    """SQLAlchemy URL of the mirror store; SQLite in the working directory by default. It may
    hold a password: show :attr:`database_url_safe` instead."""
    app_id: str = field(default=DEFAULT_APP_ID, metadata=env("APP_ID", _only(_parse_app_id)))
    """Faust app id, which is also the Kafka consumer group."""
    web_port: int = field(default=DEFAULT_WEB_PORT, metadata=env("WEB_PORT", _integer(1, 65535)))
    """Port of the worker's HTTP server (one per worker on a machine)."""
    web_host: str = field(default="127.0.0.1", metadata=env("WEB_HOST", _only(_parse_host)))
    """Interface the HTTP server binds to and advertises to other workers."""
    canonical_url: str = field(
        default="",
        metadata=env("CANONICAL_URL", _only(_parse_url), shown="http://WEB_HOST:WEB_PORT"),
    )
    """URL other workers reach this one at (routed reads); empty: ``http://WEB_HOST:WEB_PORT``,
    or the machine's host name when WEB_HOST is a wildcard like 0.0.0.0."""
    standby_replicas: int = field(default=0, metadata=env("STANDBY_REPLICAS", _integer(0, 10)))
    """Workers that keep a standby copy of each cached table partition."""
    recovery_stall_timeout: float = field(
        default=60.0, metadata=env("RECOVERY_STALL_TIMEOUT", _number(5.0, 86400.0))
    )
    """Seconds a cached table's recovery may make no progress before the worker rejoins."""
    topic_partitions: int = field(default=4, metadata=env("TOPIC_PARTITIONS", _integer(1, 10_000)))
    """Partitions of entity topics that the worker creates when they are missing."""
    topic_replicas: int = field(default=1, metadata=env("TOPIC_REPLICAS", _integer(1, 100)))
    """Replication factor of topics that the worker creates."""
    batch_size: int = field(default=5000, metadata=env("BATCH_SIZE", _integer(1, 1_000_000)))
    """Most events applied in one SQL transaction."""
    batch_wait: float = field(default=0.0, metadata=env("BATCH_WAIT", _number(0.0, 60.0)))
    """Seconds a batch that is not full waits for more records after its first, even when the
    database is free (0: none; a batch goes once full or once the previous one is applied)."""
    apply_lanes: int = field(default=2, metadata=env("APPLY_LANES", _integer(1, 16)))
    """Batches of one entity applied at once, each from its own partitions (p mod lanes)."""
    table_store: str = field(
        default="rocksdb", metadata=env("TABLE_STORE", _choice("rocksdb", "memory"))
    )
    """Where cached tables live: ``rocksdb`` (files under DATA_DIR: a restart or a promoted
    standby recovers only what changed since) or ``memory`` (recovered from the changelog's
    start after every rebalance)."""
    log_level: str = field(default="info", metadata=env("LOG_LEVEL", _only(_parse_log_level)))
    """Worker log level, from its first line (it wins over Faust's ``-l``)."""
    topic_prefix: str = field(default="", metadata=env("TOPIC_PREFIX", _only(_parse_topic_prefix)))
    """Prefix put before every entity topic name (separate environments, tests)."""
    entity_modules: tuple[str, ...] = field(
        default=("models.planet",),
        metadata=env("ENTITY_MODULES", _only(_parse_modules)),
    )
    """Modules imported at start so that their entity declarations register."""
    data_dir: str = field(
        default="", metadata=env("DATA_DIR", _stripped, shown="`<APP_ID>-data` in the cwd")
    )
    """Faust's data directory; empty means ``<APP_ID>-data`` in the working directory."""
    dlq_suffix: str = field(default=".dlq", metadata=env("DLQ_SUFFIX", _only(_parse_dlq_suffix)))
    """Dead letters of ``<topic>`` go to ``<topic><DLQ_SUFFIX>``."""
    repartition: tuple[str, ...] = field(
        default=(), metadata=env("REPARTITION", _only(_parse_kinds))
    )
    """Entity kinds whose topics are not keyed by entity key (besides ``__repartition__``)."""
    kafka_security_protocol: str = field(
        default="PLAINTEXT",
        metadata=env(
            "KAFKA_SECURITY_PROTOCOL", _choice("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
        ),
    )
    """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""
    kafka_sasl_mechanism: str = field(
        default="PLAIN",
        metadata=env("KAFKA_SASL_MECHANISM", _choice("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")),
    )
    """PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with SASL_*)."""
    kafka_sasl_username: str = field(default="", metadata=env("KAFKA_SASL_USERNAME", _text))
    kafka_sasl_password: str = field(
        default="", repr=False, metadata=env("KAFKA_SASL_PASSWORD", _text, secret=True)
    )
    kafka_ssl_cafile: str = field(default="", metadata=env("KAFKA_SSL_CAFILE", _file))
    """CA bundle to verify the brokers (SSL, SASL_SSL); empty: the system's."""
    kafka_ssl_certfile: str = field(default="", metadata=env("KAFKA_SSL_CERTFILE", _file))
    """Client certificate for mutual TLS (optional)."""
    kafka_ssl_keyfile: str = field(default="", metadata=env("KAFKA_SSL_KEYFILE", _file))
    api_token: str = field(default="", repr=False, metadata=env("API_TOKEN", _text, secret=True))
    """When set, every HTTP page but the probes (/health, /ready) requires
    ``Authorization: Bearer <token>``."""
    log_format: str = field(default="text", metadata=env("LOG_FORMAT", _choice("text", "json")))
    """``text`` (Faust's) or ``json``: one JSON object per line."""
    session_timeout: float = field(
        default=30.0, metadata=env("SESSION_TIMEOUT", _number(6.0, 1800.0))
    )
    """Seconds before the group gives a silent worker's partitions to the others."""
    shutdown_timeout: float = field(
        default=30.0, metadata=env("SHUTDOWN_TIMEOUT", _number(1.0, 3600.0))
    )
    """Seconds a stopping worker may take; then it exits anyway (uncommitted work is replayed)."""
    tombstone_retention: float = field(
        default=7 * 24 * 3600.0,
        metadata=env("TOMBSTONE_RETENTION", _number(1.0, 10 * 365 * 86400.0)),
    )
    """Seconds a delete's tombstone is kept; a later event older than the delete is skipped
    only while its tombstone lasts."""
    max_timestamp_ahead: float = field(
        default=60.0, metadata=env("MAX_TIMESTAMP_AHEAD", _number(1.0, 86400.0))
    )
    """Seconds a record's timestamp may be ahead of the worker's clock; a later one counts as
    this far ahead in its version (counted and logged), so it holds its entity against events
    from other partitions no longer than this."""
    ignored_faust_variables: tuple[str, ...] = field(default=(), metadata={})
    """Faust's variables of :data:`FAUST_VARIABLES` set in the environment: not read, named in
    a warning at start (no variable of its own)."""

    def repartitioned(self, spec: EntitySpec) -> bool:
        """Tell whether ``spec``'s topic is forwarded to a repartition topic keyed by entity
        key (``__repartition__`` on the model, or REPARTITION): the one rule every part asks."""
        return spec.repartition or spec.kind in self.repartition

    @property
    def data_path(self) -> str:
        """Return DATA_DIR, or its default ``<APP_ID>-data`` (relative to the cwd)."""
        return self.data_dir or f"{self.app_id}-data"

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

    def ignored_variables_warning(self) -> str | None:
        """Return the warning naming Faust's variables set but not read, or None."""
        names = self.ignored_faust_variables
        if not names:
            return None
        instead = sorted({FAUST_VARIABLES[name] for name in names})
        return (
            f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} Faust's and not read by "
            f"this worker: it is configured by {', '.join(instead)} instead"
        )

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
        env_vars = os.environ if environ is None else environ
        workdir = Path.cwd() if cwd is None else cwd
        values: dict[str, Any] = {}
        for item in fields(cls):
            if "env" not in item.metadata:
                continue
            variable: Variable = item.metadata["env"]
            raw = read_secret(variable, env_vars)
            if raw is None and not variable.when_unset:
                continue  # the field's default
            values[item.name] = variable.parse(
                "" if raw is None else raw, Read(variable.name, item.default, workdir)
            )
        values["ignored_faust_variables"] = tuple(
            name for name in FAUST_VARIABLES if env_vars.get(name) is not None
        )
        settings = cls(**values)
        if settings.kafka_security_protocol.startswith("SASL") and not settings.kafka_sasl_username:
            raise SettingsError(
                "KAFKA_SASL_USERNAME is required with "
                f"KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol}"
            )
        return settings


def variables() -> dict[str, tuple[Variable, Any]]:
    """Return every variable the settings read, with its field's default, in field order."""
    return {
        item.metadata["env"].name: (item.metadata["env"], item.default)
        for item in fields(Settings)
        if "env" in item.metadata
    }


def default_text(default: Any) -> str:
    """Return a field's default as the variable's text that gives it."""
    if isinstance(default, tuple):
        default = ",".join(default)
    if isinstance(default, float) and default.is_integer():
        default = int(default)
    return str(default)


def shown_default(variable: Variable, default: Any) -> str:
    """Return a variable's default as the README's table shows it (without backticks)."""
    return variable.shown if variable.shown is not None else default_text(default)


def secret_files() -> dict[str, str]:
    """Return each ``<NAME>_FILE`` variable the settings read, with the secret it holds."""
    return {
        variable.file_name: name
        for name, (variable, _) in variables().items()
        if variable.file_name is not None
    }


#: Every variable the settings read, with the text that gives its default (docs, compose check);
#: the ``_FILE`` variants of the secrets are unset (empty) by default.
ENVIRONMENT: dict[str, str] = {
    **{
        name: "" if variable.when_unset else default_text(default)
        for name, (variable, default) in variables().items()
    },
    **dict.fromkeys(secret_files(), ""),
}
