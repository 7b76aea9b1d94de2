"""A private MariaDB server for tests and local runs, built from Debian's packages.

Why not the machine's own: Debian's service listens on 3306, reads /etc/mysql and lets root
in through its socket. We run our own data directory on :data:`DEFAULT_PORT`, on 127.0.0.1
only, with a password user, as ``postgres.py`` does for PostgreSQL, so the tests never fight
whatever else the machine runs and need no Docker. There is no systemd here and no service:
``mariadbd`` runs detached from us and stops on SIGTERM, its clean shutdown.

As root, every server binary runs as the ``mysql`` system user that the package creates;
``dbserver.py`` holds how, with the install and the folders. The server reads only the
``my.cnf`` we write beside its data (``--defaults-file``), never /etc/mysql. Its collation
stays MariaDB's default for utf8mb4 (``utf8mb4_general_ci``, case-insensitive): the store
must cope with that itself, so its tests must meet it.

Only the standard library is imported at module level; SQLAlchemy and PyMySQL are imported
inside the functions that talk to the server.

Command line: ``python -m devservices.mariadb {start,stop,status,reset,url} [--port N]``.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from devservices import dbserver, processes
from devservices.dbserver import HOST as HOST
from devservices.dbserver import DevServiceError as DevServiceError
from devservices.dbserver import create_database as create_database

DEFAULT_PORT = 33069
USER = "mirror"
PASSWORD = "mirror"
#: The database the server is made with, the one :func:`server_url` names by default.
DATABASE = "mirror"

SERVICE = "mariadb"
SERVER_USER = "mysql"
PACKAGE = "mariadb-server"
MARIADBD = Path("/usr/sbin/mariadbd")
INSTALL_DB = Path("/usr/bin/mariadb-install-db")
_PROTECTED_DATABASES = frozenset({"mysql", "information_schema", "performance_schema", "sys"})
# sun_path is 108 bytes with the terminating NUL.
_MAX_SOCKET_PATH = 107
_CONNECT_RETRY_SECONDS = 0.1
_STOP_TIMEOUT_SECONDS = 60
# MariaDB's error codes. Waiting does not cure the first two: wrong password, no database.
_ER_ACCESS_DENIED = 1045
_ER_BAD_DB = 1049
_ER_NO_SUCH_THREAD = 1094  # KILL of a session that ended meanwhile


@dataclass(frozen=True, slots=True)
class Layout:
    """Where one server's files live; one folder per port so two servers never share data."""

    home: Path
    """Folder owned by the server user holding everything below (but a fallback socket)."""
    data: Path
    """The server's data directory (``datadir``)."""
    config: Path
    """The only option file the server reads, written at every start."""
    socket: Path
    """Unix socket, in ``home`` unless that path would be too long for a socket."""
    pid_file: Path
    """Written by the server; its pid, checked against /proc before it is believed."""
    log: Path
    """Server error log (``log-error``), the first place to look when start fails."""
    lock: Path
    """File locked while starting or stopping, so parallel test workers do not race."""


# --- pure helpers (unit tested without a server) -------------------------------------------


def server_url(port: int = DEFAULT_PORT, database: str = DATABASE) -> str:
    """Return the SQLAlchemy URL of ``database`` on our server at ``port``."""
    return f"mysql+pymysql://{USER}:{PASSWORD}@{HOST}:{port}/{database}"


def choose_runtime_root(
    repo_root: Path,
    *,
    cache_dir: str | None,
    as_root: bool,
    reachable: Callable[[Path], bool],
) -> Path:
    """Pick the folder holding our servers (``dbserver.choose_runtime_root`` for MariaDB)."""
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
    socket = home / "mariadbd.sock"
    if len(str(socket)) > _MAX_SOCKET_PATH:
        # The server refuses to start on a socket path it cannot bind; the socket has to
        # exist, so a deep checkout gets a short one in /tmp, keyed by the folder.
        digest = hashlib.sha256(str(home).encode()).hexdigest()[:10]
        socket = Path("/tmp") / f"entity-mirror-mariadb-{digest}.sock"
    return Layout(
        home=home,
        data=home / "data",
        config=home / "my.cnf",
        socket=socket,
        pid_file=home / "mariadbd.pid",
        log=home / "server.log",
        lock=root / f"{port}.lock",
    )


def server_config(lay: Layout, port: int) -> str:
    """Return the ``my.cnf`` of the server on ``port``: every setting the project relies on."""
    return (
        "# entity-mirror test server (devservices/mariadb.py); rewritten at every start.\n"
        "[mariadbd]\n"
        f"datadir = {lay.data}\n"
        f"port = {port}\n"
        f"bind-address = {HOST}\n"
        f"socket = {lay.socket}\n"
        f"pid-file = {lay.pid_file}\n"
        f"log-error = {lay.log}\n"
        "# Accounts are by address, and a login never waits on DNS.\n"
        "skip-name-resolve\n"
        "skip-log-bin\n"
        "# No collation-server: MariaDB's default for utf8mb4, utf8mb4_general_ci, is\n"
        "# case-insensitive, and the store must handle that itself.\n"
        "character-set-server = utf8mb4\n"
        "local-infile = ON\n"
        "max-connections = 300\n"
        "innodb-lock-wait-timeout = 50\n"
        "# A throwaway test server: durability against an OS crash traded for speed, as\n"
        "# postgres.py does (fsync=off, full_page_writes=off). A killed server loses nothing:\n"
        "# the redo log reaches the OS at every commit (=2), it is fsynced once a second.\n"
        "# Never copy these lines to a server whose data matters.\n"
        "innodb-flush-log-at-trx-commit = 2\n"
        "innodb-doublewrite = 0\n"
    )


def bootstrap_sql() -> str:
    """Return the SQL mariadb-install-db runs after the system tables: our user, our database.

    mirror is the only login, as on our PostgreSQL: the passwordless root accounts that
    ``--auth-root-authentication-method=normal`` makes are deleted. Bootstrap runs without
    the grant tables loaded; FLUSH PRIVILEGES loads them so CREATE USER and GRANT work.
    """
    # localhost: the unix socket, for the mariadb client; 127.0.0.1: TCP, for the rest.
    accounts = [f"'{USER}'@'{host}'" for host in (HOST, "localhost")]
    # IDENTIFIED BY belongs to one account: a list with one at its end leaves the others
    # without a password.
    created = ", ".join(f"{account} IDENTIFIED BY '{PASSWORD}'" for account in accounts)
    return (
        "DELETE FROM mysql.global_priv WHERE User = 'root';\n"
        "DELETE FROM mysql.proxies_priv WHERE User = 'root';\n"
        "FLUSH PRIVILEGES;\n"
        f"CREATE USER {created};\n"
        f"GRANT ALL PRIVILEGES ON *.* TO {', '.join(accounts)} WITH GRANT OPTION;\n"
        # Bootstrap ignores character-set-server: the charset is named here.
        f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4;\n"
    )


def failure_line(log: str) -> str:
    """Return the most telling line of a server's output: the last error, else the last line.

    Errors are "[ERROR] ..." in the log and "ERROR: <code> ..." from a bootstrap statement;
    "[ERROR] Aborting" only says that the server stopped, the error before it says why.
    """
    lines = log.splitlines()[-50:]
    for line in reversed(lines):
        if "ERROR" in line and not line.rstrip().endswith("Aborting"):
            return line.strip()
    return dbserver.last_line("\n".join(lines))


# --- the machine: users, processes, files ---------------------------------------------------


def _server_env() -> dict[str, str]:
    # MYSQL_TCP_PORT, MYSQL_UNIX_PORT, MYSQL_HOME... from the caller's shell must not steer
    # our server.
    return dbserver.server_env(("MYSQL", "MARIADB"))


def _owner() -> dbserver.Owner | None:
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
    with dbserver.locked(lay.lock, _owner()):
        yield


def _installed() -> bool:
    return MARIADBD.is_file() and INSTALL_DB.is_file()


def _is_server(pid: int, lay: Layout) -> bool:
    args = processes.cmdline(pid)
    return (
        bool(args)
        and Path(args[0]).name == MARIADBD.name
        and f"--defaults-file={lay.config}" in args
        and processes.is_alive(pid)
    )


def _live_pid(lay: Layout) -> int | None:
    """Return the pid of our server for ``lay``, checked against /proc, or None.

    The pid file may be stale (a killed server leaves it) or not written yet (a server
    still starting): then look through /proc for a mariadbd started with our option file.
    """
    with contextlib.suppress(OSError, ValueError):
        pid = int(lay.pid_file.read_text().split()[0])
        if _is_server(pid, lay):
            return pid
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _is_server(int(entry.name), lay):
            return int(entry.name)
    return None


# --- install --------------------------------------------------------------------------------


def ensure_installed() -> None:
    """Install Debian's ``mariadb-server`` (it brings the client) if the server is missing."""
    if _installed():
        return
    dbserver.apt_install([PACKAGE], missing=f"MariaDB server not installed (no {MARIADBD})")
    if not _installed():
        raise DevServiceError(f"installed {PACKAGE} but found no {MARIADBD} and {INSTALL_DB}")


# --- server lifecycle -----------------------------------------------------------------------


def _initialised(lay: Layout) -> bool:
    return (lay.data / "mysql").is_dir()


def _install_db(lay: Layout, owner: dbserver.Owner | None, timeout: float) -> None:
    """Create the data directory in a scratch folder, then rename it: a failure leaves nothing."""
    scratch = lay.home / "data.install-db"
    shutil.rmtree(scratch, ignore_errors=True)
    extra = lay.home / "bootstrap.sql"
    extra.write_text(bootstrap_sql())
    extra.chmod(0o600)  # it holds the password
    if owner is not None:
        os.chown(extra, owner.uid, owner.gid)
    try:
        result = dbserver.run_server_tool(
            SERVER_USER,
            [
                str(INSTALL_DB),
                "--no-defaults",
                f"--datadir={scratch}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
                f"--extra-file={extra}",
            ],
            env=_server_env(),
            timeout=timeout,
            check=False,
        )
    finally:
        extra.unlink(missing_ok=True)
    if result.returncode != 0:
        # Its last line is "[ERROR] Aborting", and stdout is a page of generic advice.
        raise DevServiceError(
            f"{INSTALL_DB.name} failed (exit {result.returncode}): "
            f"{failure_line(result.stderr or result.stdout)} (in {scratch})"
        )
    scratch.rename(lay.data)


def _write_config(lay: Layout, port: int) -> None:
    lay.config.write_text(server_config(lay, port))
    # The server ignores a world-writable option file; it only reads this one.
    lay.config.chmod(0o644)


def _spawn(lay: Layout, owner: dbserver.Owner | None) -> int:
    """Start mariadbd detached, in a session of its own; return the pid that sh launched.

    A throwaway shell backgrounds it, so it is nobody's child here and Python never warns
    that a Popen object was collected while its child still runs. Its stderr goes to the
    log too: option errors are printed before the server opens ``log-error``.
    """
    lay.log.touch()
    if owner is not None:
        os.chown(lay.log, owner.uid, owner.gid)  # mariadbd appends to it as the server user
    command = dbserver.server_cmd(SERVER_USER, [str(MARIADBD), f"--defaults-file={lay.config}"])
    script = 'log=$1; shift; "$@" >>"$log" 2>&1 </dev/null & echo $!'
    out = subprocess.run(
        ["/bin/sh", "-c", script, "sh", str(lay.log), *command],
        cwd="/",
        env=_server_env(),
        check=True,
        capture_output=True,
        text=True,
        start_new_session=True,
    )
    return int(out.stdout.strip())


def _wait_until_answering(port: int, lay: Layout, deadline: float, launched: int) -> None:
    """Return once mirror logs in over TCP; fail at once if ``launched`` exits meanwhile."""
    import pymysql

    last = "no attempt"
    while True:
        remaining = deadline - time.monotonic()
        try:
            conn = pymysql.connect(
                host=HOST,
                port=port,
                user=USER,
                password=PASSWORD,
                database=DATABASE,
                connect_timeout=max(1, min(5, math.ceil(remaining))),
            )
        except pymysql.err.OperationalError as exc:
            code = exc.args[0] if exc.args else None
            last = dbserver.one_line(str(exc.args[-1] if exc.args else exc))
            if code in (_ER_ACCESS_DENIED, _ER_BAD_DB):
                raise DevServiceError(
                    f"port {port} refuses {USER}/{PASSWORD} on database {DATABASE}: {last} "
                    "(run `python -m devservices mariadb reset`)"
                ) from exc
        else:
            conn.close()
            return
        if not processes.is_alive(launched):
            raise DevServiceError(
                f"MariaDB did not start on port {port}: {_log_failure(lay)} (log: {lay.log})"
            )
        if remaining <= 0:
            raise DevServiceError(
                f"MariaDB on port {port} did not accept a connection in time ({last}); "
                f"see {lay.log}"
            )
        time.sleep(_CONNECT_RETRY_SECONDS)


def start(port: int = DEFAULT_PORT, *, timeout: float = 60.0) -> str:
    """Start our server on ``port`` (mariadb-install-db on first use) and return its URL.

    Idempotent: a server of ours already answering returns at once. Waits until mirror
    logs in over TCP. Raises DevServiceError if something else holds the port.
    """
    deadline = time.monotonic() + timeout
    url = server_url(dbserver.checked_port(port))
    # Installed first: until the package made the ``mysql`` user, no folder looks reachable
    # to it and layout() would pick the /var/tmp fallback.
    ensure_installed()
    lay = layout(port)
    owner = _owner()
    with _locked(lay):
        running = _live_pid(lay)
        if running is not None:
            _wait_until_answering(port, lay, deadline, running)
            return url
        if dbserver.port_taken(port):
            raise DevServiceError(
                f"port {port} on {HOST} is in use by another process, not by our MariaDB "
                f"in {lay.data}; stop it or choose another port"
            )
        dbserver.make_dir(lay.home, owner)
        if not _initialised(lay):
            if lay.data.exists():
                raise DevServiceError(
                    f"{lay.data} exists but is not a MariaDB data directory; "
                    "run `python -m devservices mariadb reset`"
                )
            _install_db(lay, owner, timeout=max(1.0, deadline - time.monotonic()))
        _write_config(lay, port)
        launched = _spawn(lay, owner)
        _wait_until_answering(port, lay, deadline, launched)
    return url


def _log_failure(lay: Layout) -> str:
    try:
        text = lay.log.read_text(errors="replace")
    except OSError:
        return "no server log"
    return failure_line(text)


def _signal_and_wait(port: int, sig: signal.Signals) -> None:
    if not _installed():
        return  # nothing of ours can run, and there is no server user to lock as
    lay = layout(port)
    with _locked(lay):
        pid = _live_pid(lay)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + _STOP_TIMEOUT_SECONDS
        while processes.is_alive(pid):
            if time.monotonic() > deadline:
                raise DevServiceError(
                    f"MariaDB on port {port} (pid {pid}) did not stop within "
                    f"{_STOP_TIMEOUT_SECONDS} s; see {lay.log}"
                )
            time.sleep(0.05)


def stop(port: int = DEFAULT_PORT) -> None:
    """Stop our server on ``port`` cleanly (SIGTERM); nothing happens if it is not running."""
    _signal_and_wait(port, signal.SIGTERM)


def kill(port: int = DEFAULT_PORT) -> None:
    """Stop our server at once (SIGKILL) to simulate an outage; next start recovers."""
    _signal_and_wait(port, signal.SIGKILL)


def is_running(port: int = DEFAULT_PORT) -> bool:
    """Return whether our server on ``port`` is running (its process, per /proc)."""
    return _installed() and _live_pid(layout(port)) is not None


def server_pid(port: int = DEFAULT_PORT) -> int | None:
    """Return the pid of our server on ``port``, or None when it is not running."""
    return _live_pid(layout(port)) if _installed() else None


def reset(port: int = DEFAULT_PORT) -> None:
    """Stop our server on ``port`` and delete its data directory, log and socket."""
    # SIGKILL: the data is about to be deleted, so a clean shutdown buys nothing.
    kill(port)
    lay = layout(port)
    with _locked(lay):
        shutil.rmtree(lay.home, ignore_errors=True)
        if lay.home.exists():
            raise DevServiceError(f"could not delete {lay.home}")
        lay.socket.unlink(missing_ok=True)  # the /tmp fallback outside lay.home


# --- databases ------------------------------------------------------------------------------


def drop_database(server_url: str, name: str) -> None:
    """Drop database ``name`` if it exists, ending other sessions connected to it first.

    A session still inside the database would hold its metadata locks and keep DROP
    waiting (for a year, by default): like PostgreSQL's ``WITH (FORCE)``, they are killed.
    """
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    dbserver.validate_database_name(name)
    if name in _PROTECTED_DATABASES:
        raise DevServiceError(f"refusing to drop system database {name!r}")
    with dbserver.autocommit(server_url, f"drop database {name!r}") as conn:
        quoted = conn.dialect.identifier_preparer.quote_identifier(name)
        sessions = conn.execute(
            text(
                "SELECT ID FROM information_schema.PROCESSLIST "
                "WHERE DB = :name AND ID <> CONNECTION_ID()"
            ),
            {"name": name},
        ).scalars()
        for session in list(sessions):
            try:
                conn.execute(text(f"KILL CONNECTION {int(session)}"))
            except DBAPIError as exc:
                if exc.orig is None or exc.orig.args[0] != _ER_NO_SUCH_THREAD:
                    raise  # gone meanwhile is fine; anything else is not
        # A lock held from elsewhere fails the drop in a minute instead of hanging.
        conn.execute(text("SET SESSION lock_wait_timeout = 60"))
        conn.execute(text(f"DROP DATABASE IF EXISTS {quoted}"))


# --- command line ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run one command; expected failures print one line on stderr and return 1."""
    return dbserver.command_line(
        dbserver.ServerCommands(
            module="mariadb",
            title="MariaDB",
            init_tool="mariadb-install-db",
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
