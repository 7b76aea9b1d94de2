"""The database servers a bench run writes to: PostgreSQL, and MariaDB with ``--databases``.

Each is started through its devservices module, and those share one API (``start() ->
server URL``, ``create_database``, ``drop_database``), so the bench starts and fills them
alike; what differs between them are the values here: the name ``--databases`` and the
paths' names use, the label the report uses, and the program whose CPU the bench's
``database`` part counts (``bench/cpu.py``). ``devservices.mariadb`` is imported only when
a run asks for MariaDB: a run on PostgreSQL alone needs nothing of it.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, cast

from sqlalchemy.engine import make_url

from bench import procfs

#: The database every path writes to unless told otherwise; the freshness runs and the
#: naive and raw baselines write to it only.
DEFAULT = "postgresql"


class DevService(Protocol):
    """What the bench uses of a devservices database module."""

    def start(self) -> str:
        """Start the server unless it runs; return its server URL (SQLAlchemy)."""

    def create_database(self, server_url: str, name: str) -> str:
        """Create an empty database ``name``; return its URL."""

    def drop_database(self, server_url: str, name: str) -> None:
        """Drop database ``name`` if it exists."""


@dataclass(frozen=True, slots=True)
class DatabaseServer:
    """One kind of database server the bench can write to."""

    name: str
    """As ``--databases`` spells it; paths writing to it end in ``_<name>`` (but PostgreSQL's)."""
    label: str
    """What the report calls it."""
    module: str
    """The devservices module that starts it."""
    program: str
    """The server's process name (/proc/<pid>/comm) listening on its port."""

    def devservice(self) -> DevService:
        return cast(DevService, importlib.import_module(self.module))


SERVERS = {
    s.name: s
    for s in (
        DatabaseServer("postgresql", "PostgreSQL", "devservices.postgres", "postgres"),
        DatabaseServer("mariadb", "MariaDB", "devservices.mariadb", "mariadbd"),
    )
}


class Databases:
    """The servers of one bench run, each started once, and the databases made on them.

    Every database is ``bench_<run id>_<name>``, made empty for one path's run; ``drop_all``
    drops them at the end of the run.
    """

    def __init__(self, run_id: str) -> None:
        self._run_id = run_id
        self._urls: dict[str, str] = {}
        self._made: list[tuple[str, str]] = []
        self._pids: dict[str, int] = {}

    def start(self, names: Iterable[str]) -> None:
        """Start the servers ``names`` (``SERVERS``' keys) unless this run started them."""
        for name in names:
            if name not in self._urls:
                self._urls[name] = SERVERS[name].devservice().start()

    def fresh(self, name: str, server: str = DEFAULT) -> str:
        """Return the URL of a new empty database ``bench_<run id>_<name>`` on ``server``."""
        self.start([server])
        database = f"bench_{self._run_id}_{name}"
        url = SERVERS[server].devservice().create_database(self._urls[server], database)
        self._made.append((server, database))
        return url

    def pid(self, server: str) -> int | None:
        """Return the pid of ``server``'s process (None if this run has not started it).

        Found by its port once, then kept while a process of that pid runs the server's
        program: a CPU reading comes right after a path's clock starts, so it must be cheap.
        A restarted server is another pid, found again.
        """
        program = SERVERS[server].program
        known = self._pids.get(server)
        if known is not None and procfs.comm(known) == program:
            return known
        url = self._urls.get(server)
        port = None if url is None else make_url(url).port
        found = None if port is None else procfs.listener_pid(port, program)
        if found is not None:
            self._pids[server] = found
        return found

    def drop_all(self) -> None:
        """Drop every database this run made (best effort: a leftover one harms nothing)."""
        for server, database in self._made:
            with contextlib.suppress(Exception):
                SERVERS[server].devservice().drop_database(self._urls[server], database)
        self._made.clear()
