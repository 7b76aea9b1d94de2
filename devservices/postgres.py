"""A private PostgreSQL server for tests and local runs, built from Debian's packages.

Why not the system cluster: it listens on 5432, belongs to the machine, and uses peer
auth. We run our own data directory on :data:`DEFAULT_PORT` with a password role, so the
tests never fight whatever else the machine runs and need no Docker.

PostgreSQL refuses to run as root, so when we are root every server binary runs as the
``postgres`` system user, and every directory it touches must be traversable by that user;
how, with the install and the folders, is shared with MariaDB's server (``dbserver.py``).

Only the standard library is imported at module level; SQLAlchemy and psycopg2 are
imported inside the functions that talk to the server.

Command line: ``python -m devservices.postgres {start,stop,status,reset,url} [--port N]``.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from devservices import dbserver
from devservices.dbserver import CACHE_DIR_ENV as CACHE_DIR_ENV
from devservices.dbserver import HOST as HOST
from devservices.dbserver import REPO_ROOT as REPO_ROOT
from devservices.dbserver import DevServiceError as DevServiceError
from devservices.dbserver import create_database as create_database
from devservices.dbserver import validate_database_name as validate_database_name

DEFAULT_PORT = 54329
USER = "mirror"
PASSWORD = "mirror"

SERVICE = "postgres"
SERVER_USER = "postgres"
PACKAGE = "postgresql"
PG_LIB_DIR = Path("/usr/lib/postgresql")
_SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")
_PROTECTED_DATABASES = frozenset({"postgres", "template0", "template1"})
# sun_path is 108 bytes with the terminating NUL; the socket file is "/.s.PGSQL.<port>".
_MAX_SOCKET_PATH = 107
_CONNECT_RETRY_SECONDS = 0.2
_STOP_TIMEOUT_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Layout:
    """Where one server's files live; one folder per port so two servers never share data."""

    home: Path
    """Folder owned by the server user holding everything below."""
    data: Path
    """The cluster's data directory (``PGDATA``)."""
    socket_dir: Path | None
    """Unix socket folder, or None (TCP only) when its path would be too long for a socket."""
    log: Path
    """Server log that ``pg_ctl -l`` appends to; the first place to look when start fails."""
    lock: Path
    """File locked while starting or stopping, so parallel test workers do not race."""


# --- pure helpers (unit tested without a server) -------------------------------------------


def server_url(port: int = DEFAULT_PORT, database: str = "postgres") -> str:
    """Return the SQLAlchemy URL of ``database`` on our server at ``port``."""
    return f"postgresql+psycopg2://{USER}:{PASSWORD}@{HOST}:{port}/{database}"


def fallback_runtime_root(repo_root: Path) -> Path:
    """Return the /var/tmp folder used when the checkout is not reachable by ``postgres``."""
    return dbserver.fallback_runtime_root(repo_root, SERVICE)


def choose_runtime_root(
    repo_root: Path,
    *,
    cache_dir: str | None,
    as_root: bool,
    reachable: Callable[[Path], bool],
) -> Path:
    """Pick the folder holding our servers (``dbserver.choose_runtime_root`` for PostgreSQL)."""
    return dbserver.choose_runtime_root(
        repo_root,
        SERVICE,
        server_user=SERVER_USER,
        cache_dir=cache_dir,
        as_root=as_root,
        reachable=reachable,
    )


def make_layout(root: Path, port: int) -> Layout:
    """Return the file layout of the server on ``port`` under the runtime folder ``root``."""
    home = root / str(port)
    socket_dir: Path | None = home / "run"
    if len(f"{socket_dir}/.s.PGSQL.{port}") > _MAX_SOCKET_PATH:
        # A deep checkout would make the server refuse to start; we only use TCP anyway.
        socket_dir = None
    return Layout(
        home=home,
        data=home / "data",
        socket_dir=socket_dir,
        log=home / "server.log",
        lock=root / f"{port}.lock",
    )


def server_options(port: int, socket_dir: Path | None) -> str:
    """Return the ``pg_ctl -o`` string; pg_ctl hands it to ``/bin/sh``, hence the quoting."""
    sockets = shlex.quote(str(socket_dir)) if socket_dir is not None else "''"
    # synchronous_commit stays on whatever an older postgresql.conf says: the outage test
    # kills the server, and an acknowledged commit must survive that (fsync=off is safe
    # against a killed server process, it only risks an OS crash).
    # wal_level=logical: Debezium's PostgreSQL connector reads the server's logical
    # replication (pgoutput) in the tests of Debezium-fed entities; a few replication slots
    # and senders for the tests that run one connector each.
    return (
        f"-p {port} -k {sockets} -c synchronous_commit=on -c wal_level=logical"
        " -c max_replication_slots=20 -c max_wal_senders=20"
    )


def newest_bindir(lib_dir: Path = PG_LIB_DIR) -> Path | None:
    """Return the bin folder of the newest complete server install under ``lib_dir``."""
    if not lib_dir.is_dir():
        return None
    candidates: list[tuple[tuple[int, ...], Path]] = []
    for entry in lib_dir.iterdir():
        bindir = entry / "bin"
        version = _parse_version(entry.name)
        if version is None or not all((bindir / b).is_file() for b in _SERVER_BINARIES):
            continue
        candidates.append((version, bindir))
    return max(candidates)[1] if candidates else None


def _parse_version(text: str) -> tuple[int, ...] | None:
    parts = text.strip().split(".")
    if not all(p.isdigit() for p in parts):
        return None
    return tuple(int(p) for p in parts)


# --- the machine: users, processes, files ---------------------------------------------------


def _server_env() -> dict[str, str]:
    # PG* variables from the caller's shell (PGDATA, PGPORT, PGHOST...) must not steer our server.
    return dbserver.server_env(("PG",))


def _run_server_tool(
    argv: Sequence[str], *, timeout: float, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a server binary as ``postgres`` (initdb and pg_ctl refuse root)."""
    return dbserver.run_server_tool(
        SERVER_USER, argv, env=_server_env(), timeout=timeout, check=check
    )


def _server_user() -> dbserver.Owner | None:
    return dbserver.owner(SERVER_USER, PACKAGE)


def runtime_root() -> Path:
    """Return the folder holding our servers, following ``MIRROR_CACHE_DIR`` when set."""
    return dbserver.runtime_root(SERVICE, SERVER_USER)


def layout(port: int = DEFAULT_PORT) -> Layout:
    """Return where the server on ``port`` keeps its files."""
    return make_layout(runtime_root(), dbserver.checked_port(port))


@contextlib.contextmanager
def _locked(lay: Layout) -> Iterator[None]:
    """Serialize start/stop/reset of one port across processes (pytest-xdist workers)."""
    with dbserver.locked(lay.lock, _server_user()):
        yield


# --- install --------------------------------------------------------------------------------


def ensure_installed() -> Path:
    """Return the newest server's bin folder, installing Debian's ``postgresql`` if missing."""
    found = newest_bindir()
    if found is not None:
        return found
    dbserver.apt_install(
        [PACKAGE],
        missing=f"PostgreSQL server not installed (no {PG_LIB_DIR}/<version>/bin/initdb)",
    )
    found = newest_bindir()
    if found is None:
        raise DevServiceError(f"installed postgresql but found no server under {PG_LIB_DIR}")
    return found


def _bindir_for(data: Path) -> Path:
    """Return the binaries matching the version that created ``data`` (or the newest)."""
    version_file = data / "PG_VERSION"
    if not version_file.is_file():
        return ensure_installed()
    version = version_file.read_text().strip()
    bindir = PG_LIB_DIR / version / "bin"
    if not all((bindir / b).is_file() for b in _SERVER_BINARIES):
        raise DevServiceError(
            f"{data} was created by PostgreSQL {version}, which is no longer installed: "
            "run `python -m devservices.postgres reset` to recreate it"
        )
    return bindir


# --- server lifecycle -----------------------------------------------------------------------


def _pg_ctl_status(lay: Layout) -> bool:
    if not (lay.data / "PG_VERSION").is_file():
        return False
    bindir = _bindir_for(lay.data)
    result = _run_server_tool(
        [str(bindir / "pg_ctl"), "status", "-D", str(lay.data)], timeout=30, check=False
    )
    return result.returncode == 0


def _initdb(bindir: Path, lay: Layout, owner: dbserver.Owner | None, timeout: float) -> None:
    """Create the cluster in a scratch folder, then rename it: a failed initdb leaves nothing."""
    scratch = lay.home / "data.initdb"
    shutil.rmtree(scratch, ignore_errors=True)
    pwfile = lay.home / "initdb.pw"
    pwfile.write_text(PASSWORD + "\n")
    pwfile.chmod(0o600)
    if owner is not None:
        os.chown(pwfile, owner.uid, owner.gid)
    try:
        _run_server_tool(
            [
                str(bindir / "initdb"),
                "-D",
                str(scratch),
                "-U",
                USER,
                f"--pwfile={pwfile}",
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
            ],
            timeout=timeout,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    # Appending/truncating keeps the files owned by the server user even when we are root.
    with (scratch / "postgresql.conf").open("a") as conf:
        conf.write(
            "\n# --- entity-mirror test server (devservices/postgres.py) ---\n"
            f"listen_addresses = '{HOST}'\n"
            "max_connections = 200\n"
            "password_encryption = 'scram-sha-256'\n"
            "# A throwaway test server: durability against an OS crash traded for speed.\n"
            "# A killed server loses nothing (synchronous_commit stays on, see pg_ctl -o);\n"
            "# never copy these lines to a server whose data matters.\n"
            "fsync = off\n"
            "full_page_writes = off\n"
        )
    (scratch / "pg_hba.conf").write_text(
        "# Password auth only, loopback only: no peer auth, so any OS user can connect.\n"
        "# TYPE  DATABASE  USER  ADDRESS       METHOD\n"
        "local   all       all                 scram-sha-256\n"
        f"host    all       all   {HOST}/32  scram-sha-256\n"
    )
    scratch.rename(lay.data)


def _wait_until_answering(port: int, lay: Layout, deadline: float) -> None:
    """Return once a real login succeeds; pg_ctl's own wait does not prove our role works."""
    import psycopg2

    last = "no attempt"
    while True:
        remaining = deadline - time.monotonic()
        try:
            conn = psycopg2.connect(
                host=HOST,
                port=port,
                user=USER,
                password=PASSWORD,
                dbname="postgres",
                connect_timeout=max(1, min(5, math.ceil(remaining))),
            )
        except psycopg2.OperationalError as exc:
            last = dbserver.one_line(str(exc))
            if "password authentication failed" in last:
                raise DevServiceError(
                    f"port {port} rejects {USER}/{PASSWORD}: {last} (data dir {lay.data})"
                ) from exc
        else:
            conn.close()
            return
        if remaining <= 0:
            raise DevServiceError(
                f"PostgreSQL on port {port} did not accept a connection in time ({last}); "
                f"see {lay.log}"
            )
        time.sleep(_CONNECT_RETRY_SECONDS)


def start(port: int = DEFAULT_PORT, *, timeout: float = 60.0) -> str:
    """Start our server on ``port`` (initdb on first use) and return its SQLAlchemy URL.

    Idempotent: a server of ours already answering returns at once. Waits until a real
    login succeeds. Raises DevServiceError if something else holds the port.
    """
    deadline = time.monotonic() + timeout
    url = server_url(dbserver.checked_port(port))
    # Installed first: until the package made the ``postgres`` user, no folder looks reachable
    # to it and layout() would pick the /var/tmp fallback for this one start.
    bindir = ensure_installed()
    lay = layout(port)
    owner = _server_user()
    with _locked(lay):
        if _pg_ctl_status(lay):
            _wait_until_answering(port, lay, deadline)
            return url
        if dbserver.port_taken(port):
            raise DevServiceError(
                f"port {port} on {HOST} is in use by another process, not by our PostgreSQL "
                f"in {lay.data}; stop it or choose another port"
            )
        dbserver.make_dir(lay.home, owner)
        if lay.socket_dir is not None:
            dbserver.make_dir(lay.socket_dir, owner)
        if not (lay.data / "PG_VERSION").is_file():
            if lay.data.exists():
                raise DevServiceError(
                    f"{lay.data} exists but is not a PostgreSQL data directory; "
                    "run `python -m devservices.postgres reset`"
                )
            _initdb(bindir, lay, owner, timeout=max(1.0, deadline - time.monotonic()))
        bindir = _bindir_for(lay.data)
        wait = max(1, math.ceil(deadline - time.monotonic()))
        result = _run_server_tool(
            [
                str(bindir / "pg_ctl"),
                "start",
                "-D",
                str(lay.data),
                "-l",
                str(lay.log),
                "-w",
                "-t",
                str(wait),
                "-o",
                server_options(port, lay.socket_dir),
            ],
            timeout=wait + 10,
            check=False,
        )
        if result.returncode != 0:
            raise DevServiceError(
                f"PostgreSQL did not start on port {port}: {_log_failure(lay)} (log: {lay.log})"
            )
        _wait_until_answering(port, lay, deadline)
    return url


def _log_failure(lay: Layout) -> str:
    """Return the most telling line of the server log: the last FATAL/PANIC, else the last."""
    try:
        lines = lay.log.read_text(errors="replace").splitlines()[-50:]
    except OSError:
        return "no server log"
    for line in reversed(lines):
        if "FATAL" in line or "PANIC" in line:
            return line.strip()
    return dbserver.last_line("\n".join(lines))


def _pg_ctl_stop(port: int, mode: str) -> None:
    lay = layout(port)
    with _locked(lay):
        if not _pg_ctl_status(lay):
            return
        bindir = _bindir_for(lay.data)
        _run_server_tool(
            [
                str(bindir / "pg_ctl"),
                "stop",
                "-D",
                str(lay.data),
                "-m",
                mode,
                "-w",
                "-t",
                str(_STOP_TIMEOUT_SECONDS),
            ],
            timeout=_STOP_TIMEOUT_SECONDS + 10,
        )


def stop(port: int = DEFAULT_PORT) -> None:
    """Stop our server on ``port`` cleanly (``-m fast``); nothing happens if it is not running."""
    _pg_ctl_stop(port, "fast")


def kill(port: int = DEFAULT_PORT) -> None:
    """Stop our server at once (``-m immediate``) to simulate an outage; next start recovers."""
    _pg_ctl_stop(port, "immediate")


def is_running(port: int = DEFAULT_PORT) -> bool:
    """Return whether our server on ``port`` is running (per ``pg_ctl status``)."""
    return _pg_ctl_status(layout(port))


def reset(port: int = DEFAULT_PORT) -> None:
    """Stop our server on ``port`` and delete its data directory, log and socket folder."""
    lay = layout(port)
    try:
        # Immediate: the data is about to be deleted, so a clean checkpoint buys nothing.
        _pg_ctl_stop(port, "immediate")
    except DevServiceError:
        # A data dir we cannot drive (e.g. its server version was uninstalled) is still
        # safe to delete as long as no postmaster claims it.
        if (lay.data / "postmaster.pid").exists():
            raise
    with _locked(lay):
        shutil.rmtree(lay.home, ignore_errors=True)
        if lay.home.exists():
            raise DevServiceError(f"could not delete {lay.home}")


# --- databases ------------------------------------------------------------------------------


def drop_database(server_url: str, name: str) -> None:
    """Drop database ``name`` if it exists, ending other sessions connected to it first."""
    from sqlalchemy import text

    validate_database_name(name)
    if name in _PROTECTED_DATABASES:
        raise DevServiceError(f"refusing to drop system database {name!r}")
    with dbserver.autocommit(server_url, f"drop database {name!r}") as conn:
        quoted = conn.dialect.identifier_preparer.quote_identifier(name)
        version = conn.dialect.server_version_info or (0,)
        if version >= (13,):
            conn.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
            return
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": name},
        )
        conn.execute(text(f"DROP DATABASE IF EXISTS {quoted}"))


# --- command line ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run one command; expected failures print one line on stderr and return 1."""
    return dbserver.command_line(
        dbserver.ServerCommands(
            module="postgres",
            title="PostgreSQL",
            init_tool="initdb",
            default_port=DEFAULT_PORT,
            start=start,
            stop=stop,
            reset=reset,
            is_running=is_running,
            server_url=server_url,
            data_dir=lambda port: layout(port).data,
        ),
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
