"""What our private database servers share: a Debian package run as its system user.

PostgreSQL (``postgres.py``) and MariaDB (``mariadb.py``) run the same way, so the machine
side lives here once: apt-get installs the package when it is missing, without letting it
start the machine's own service; as root, every server binary runs as the package's system
user through ``runuser`` (not ``su``: no PAM session, no tty needed), since neither server
runs as root; each server keeps its files in a folder per port under ``.cache/<service>``
(``MIRROR_CACHE_DIR`` moves it) that the server user must be able to reach; a file lock per
port serializes start and stop across processes.

Only the standard library is imported at module level; SQLAlchemy is imported inside the
functions that talk to a server.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # only for annotations: SQLAlchemy is not imported at run time here
    from sqlalchemy.engine import Connection

HOST = "127.0.0.1"

#: Environment variable that moves the cache; a server then lives in ``<it>/<service>``.
CACHE_DIR_ENV = "MIRROR_CACHE_DIR"

#: The repository checkout this module belongs to (the parent of the ``devservices`` package).
REPO_ROOT = Path(__file__).resolve().parent.parent

_DB_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Debian's hook that invoke-rc.d asks before a package's maintainer script starts a service.
_POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
_POLICY_DENY_ALL = (
    "#!/bin/sh\n"
    "# entity-mirror devservices: installing a database server that must not start the\n"
    "# machine's own service (we run a private one); removed when apt-get is done.\n"
    "exit 101\n"
)
# Held while we install, so two of our processes never race on the policy file above.
_INSTALL_LOCK = Path("/var/tmp/entity-mirror-apt-get.lock")


class DevServiceError(Exception):
    """A development service could not be installed, started or used; the message says why."""

    retriable: bool = False


@dataclass(frozen=True, slots=True)
class Owner:
    """The ids our folders are chowned to so the server user can write in them."""

    uid: int
    gid: int


# --- pure helpers (unit tested without a server) -------------------------------------------


def validate_database_name(name: str) -> str:
    """Return ``name`` if it is a plain lower-case identifier, else raise DevServiceError.

    63 characters at most: PostgreSQL's limit, one below MariaDB's, so a name fits both.
    """
    if not _DB_NAME_RE.fullmatch(name):
        raise DevServiceError(
            f"invalid database name {name!r}: use 1-63 characters of [a-z0-9_], "
            "not starting with a digit"
        )
    return name


def fallback_runtime_root(repo_root: Path, service: str) -> Path:
    """Return the /var/tmp folder used when the checkout is not reachable by the server user."""
    digest = hashlib.sha256(str(repo_root).encode()).hexdigest()[:10]
    return Path("/var/tmp") / f"entity-mirror-{service}-{digest}"


def choose_runtime_root(
    repo_root: Path,
    service: str,
    *,
    server_user: str,
    cache_dir: str | None,
    as_root: bool,
    reachable: Callable[[Path], bool],
) -> Path:
    """Pick the folder holding the servers of ``service``.

    ``reachable(path)`` says whether ``server_user`` could get to ``path`` (we create and
    chown the folder itself, so only its parents matter). As root the server runs as that
    user, which cannot enter e.g. a checkout under ``/root``: fall back to /var/tmp then,
    keyed by a hash of the checkout so two checkouts keep separate servers.
    """
    if cache_dir:
        chosen = Path(cache_dir).expanduser().absolute() / service
        if as_root and not reachable(chosen):
            raise DevServiceError(
                f"{CACHE_DIR_ENV}={cache_dir}: user {server_user!r} cannot traverse the "
                "parents of that folder; pick a folder it can reach"
            )
        return chosen
    default = repo_root / ".cache" / service
    if not as_root or reachable(default):
        return default
    return fallback_runtime_root(repo_root, service)


def one_line(text: str) -> str:
    """Join a multi-line driver message ("connection refused" / "is the server running?")."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip()) or "(no message)"


def last_line(text: str) -> str:
    """Return the last non-blank line of a tool's output, the one that usually says why."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def checked_port(port: int) -> int:
    """Return ``port`` if a server of ours may listen on it, else raise DevServiceError."""
    if not 1024 <= port <= 65535:
        raise DevServiceError(f"port {port} is out of range 1024-65535")
    return port


# --- the machine: users, processes, files ---------------------------------------------------


def as_root() -> bool:
    """Return whether we are root, so the servers must run as their system users."""
    return os.geteuid() == 0


def server_cmd(server_user: str | None, argv: Sequence[str]) -> list[str]:
    """Prefix ``argv`` so it runs as ``server_user`` when we are root (servers refuse root);
    None: as ourselves (a program that runs as root too)."""
    if server_user is not None and as_root():
        return ["runuser", "-u", server_user, "--", *argv]
    return list(argv)


def server_env(drop_prefixes: tuple[str, ...]) -> dict[str, str]:
    """Return our environment for a server tool, without the variables that would steer it.

    LC_ALL=C keeps messages English so the error lines we surface are searchable.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop_prefixes)}
    env["LC_ALL"] = "C"
    return env


def run_server_tool(
    server_user: str | None,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    timeout: float,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a server binary as ``server_user`` (None: as ourselves).

    cwd is ``/``: the tools fail if they cannot enter the caller's cwd (e.g. /root).
    """
    try:
        result = subprocess.run(
            server_cmd(server_user, argv),
            cwd="/",
            env=dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise DevServiceError(f"{Path(argv[0]).name} took more than {timeout:.0f}s") from exc
    except FileNotFoundError as exc:
        raise DevServiceError(f"cannot run {argv[0]}: {exc.strerror}") from exc
    if check and result.returncode != 0:
        raise DevServiceError(
            f"{Path(argv[0]).name} failed (exit {result.returncode}): "
            f"{last_line(result.stderr or result.stdout)}"
        )
    return result


def owner(server_user: str, package: str) -> Owner | None:
    """Return the ids to chown our folders to, or None when we are not root (we own them)."""
    if not as_root():
        return None
    import pwd  # stdlib; imported here because only the root path needs it

    try:
        entry = pwd.getpwnam(server_user)
    except KeyError as exc:
        raise DevServiceError(
            f"system user {server_user!r} does not exist; reinstall Debian's {package} package"
        ) from exc
    return Owner(entry.pw_uid, entry.pw_gid)


def can_reach(server_user: str, path: Path) -> bool:
    """Ask the system, as ``server_user``, whether it can traverse the parents of ``path``.

    Checked for real with ``runuser ... test -x`` on the deepest existing parent: path
    lookup fails if any directory above it is not searchable, so one test covers all.
    """
    probe = path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    result = subprocess.run(
        ["runuser", "-u", server_user, "--", "test", "-x", str(probe)],
        cwd="/",
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


def runtime_root(service: str, server_user: str) -> Path:
    """Return the folder holding the servers of ``service``, following ``MIRROR_CACHE_DIR``.

    Ask only once the package is installed: before, ``server_user`` does not exist, every
    folder looks unreachable and the answer would be the /var/tmp fallback.
    """
    return choose_runtime_root(
        REPO_ROOT,
        service,
        server_user=server_user,
        cache_dir=os.environ.get(CACHE_DIR_ENV),
        as_root=as_root(),
        reachable=lambda path: can_reach(server_user, path),
    )


def make_dir(path: Path, owner: Owner | None, mode: int = 0o755) -> None:
    """Create ``path`` and any missing parents, readable by the server user, owned by it."""
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        # Explicit chmod: a umask of 077 would otherwise lock the server user out.
        directory.chmod(mode)
    if owner is not None:
        os.chown(path, owner.uid, owner.gid)


@contextlib.contextmanager
def locked(lock: Path, owner: Owner | None) -> Iterator[None]:
    """Serialize start/stop/reset of one port across processes (pytest-xdist workers)."""
    make_dir(lock.parent, owner)
    with lock.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def port_taken(port: int) -> bool:
    """Return whether something accepts TCP connections on ``port`` of 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((HOST, port)) == 0


# --- install --------------------------------------------------------------------------------


def apt_install(packages: Sequence[str], *, missing: str) -> None:
    """Install Debian ``packages`` unattended, or raise DevServiceError in one line.

    ``missing`` says what the caller found missing ("PostgreSQL server not installed"); it
    begins the line when we cannot install (not root, no apt-get).
    """
    wanted = " ".join(packages)
    if not as_root():
        raise DevServiceError(
            f"{missing} and we are not root: run `sudo apt-get install -y {wanted}`"
        )
    if shutil.which("apt-get") is None:
        raise DevServiceError(f"{missing} and apt-get is not available")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Wait for a concurrent apt/dpkg (another test worker, unattended-upgrades) instead of
    # failing on its lock.
    lock_wait = ["-o", "DPkg::Lock::Timeout=600"]
    steps = (
        ["apt-get", *lock_wait, "update", "-q"],
        ["apt-get", *lock_wait, "install", "-y", "-q", "--no-install-recommends", *packages],
    )
    with _no_service_starts():
        for step in steps:
            result = subprocess.run(
                step,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise DevServiceError(
                    f"`{' '.join(step)}` failed (exit {result.returncode}): "
                    f"{last_line(result.stderr or result.stdout)}"
                )


@contextlib.contextmanager
def _no_service_starts() -> Iterator[None]:
    """Keep a package's maintainer scripts from starting its service while we install.

    We never use the machine's service (it would hold the default port and run from
    /var/lib), and without systemd its init script may fail and fail the install with it.
    Containers usually carry a policy-rc.d that denies every start; on a machine without
    one we put one there for the length of the install (invoke-rc.d(8), "POLICY LAYER").
    """
    with _INSTALL_LOCK.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        ours = False
        try:
            with _POLICY_RC_D.open("x") as policy:
                policy.write(_POLICY_DENY_ALL)
            _POLICY_RC_D.chmod(0o755)
            ours = True
        except FileExistsError:
            pass  # the machine's own policy decides, as it does for every other package
        try:
            yield
        finally:
            if ours:
                _POLICY_RC_D.unlink(missing_ok=True)
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# --- databases ------------------------------------------------------------------------------


def create_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server at ``server_url`` and return the new URL."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    validate_database_name(name)
    with autocommit(server_url, f"create database {name!r}") as conn:
        quoted = conn.dialect.identifier_preparer.quote_identifier(name)
        conn.execute(text(f"CREATE DATABASE {quoted}"))
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


@contextlib.contextmanager
def autocommit(url: str, doing: str) -> Iterator[Connection]:
    """Yield an AUTOCOMMIT connection (CREATE/DROP DATABASE refuse to run in a transaction).

    Driver errors become one DevServiceError line naming what we were doing.
    """
    from sqlalchemy import create_engine
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as conn:
            yield conn
    except DBAPIError as exc:
        raise DevServiceError(f"could not {doing}: {one_line(str(exc.orig))}") from exc
    finally:
        engine.dispose()


# --- command line ---------------------------------------------------------------------------


class Starter(Protocol):
    """A server module's ``start``."""

    def __call__(self, port: int, *, timeout: float) -> str: ...


@dataclass(frozen=True, slots=True)
class ServerCommands:
    """What ``python -m devservices <module> {start,stop,status,reset,url}`` drives."""

    module: str
    """The module's name (``postgres``): names the program and begins each error line."""
    title: str
    """The server's name for people (``PostgreSQL``)."""
    init_tool: str
    """What the first start runs to make the data directory (``initdb``), for the help."""
    default_port: int
    start: Starter
    stop: Callable[[int], None]
    reset: Callable[[int], None]
    is_running: Callable[[int], bool]
    server_url: Callable[[int], str]
    data_dir: Callable[[int], Path]


def command_line(commands: ServerCommands, argv: Sequence[str] | None) -> int:
    """Run one command; expected failures print one line on stderr and return 1."""
    parser = argparse.ArgumentParser(
        prog=f"python -m devservices.{commands.module}",
        description=f"Run the private {commands.title} server for tests and local runs.",
    )
    parser.add_argument(
        "command",
        choices=("start", "stop", "status", "reset", "url"),
        help=f"start: start ({commands.init_tool} on first use) and print the URL; status: "
        "exit 0 if running, 3 if not; reset: stop and delete the data directory; url: print "
        "the URL",
    )
    parser.add_argument(
        "--port", type=int, default=commands.default_port, help="TCP port on 127.0.0.1"
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for start (default 60)"
    )
    args = parser.parse_args(argv)
    port: int = args.port
    try:
        if args.command == "start":
            print(commands.start(port, timeout=args.timeout))
        elif args.command == "stop":
            commands.stop(port)
        elif args.command == "reset":
            commands.reset(port)
        elif args.command == "url":
            print(commands.server_url(checked_port(port)))
        else:
            data = commands.data_dir(port)
            if commands.is_running(port):
                print(f"running: {commands.server_url(port)} (data {data})")
                return 0
            print(f"stopped (data {data})")
            return 3
    except (DevServiceError, OSError) as exc:
        # OSError: e.g. the cache folder is not writable; still one line, no traceback.
        print(f"devservices.{commands.module}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
