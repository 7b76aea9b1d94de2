"""The whole suite in two parts: most of it in two processes at once, then the serial tests alone.

Most of an integration test's time is spent waiting (a worker starting, a rebalance, a database
commit), so two pytest processes (pytest-xdist, one test module per process at a time:
``--dist loadscope`` keeps a module's own fixtures in one process) finish the suite in well
under the time of one. Tests marked ``serial`` stop or kill a service every test shares (the
broker, a database server) or start the 3-broker cluster: they run afterwards, in one
process, with nothing beside them.

The shared services are started here, once, before either part, and handed to both through
``KAFKA_BROKER``, ``DATABASE_URL`` and ``MARIADB_URL``: a session fixture in each of two
processes would start a service twice and stop it under the other. A service given by its
variable is used as it is; one this run started is stopped at the end unless
``KEEP_SERVICES=1``.

Usage: ``python -m tests.run_suite [pytest options]`` (``./run test`` without paths).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: Processes of the parallel part; two cores here (MIRROR_TEST_PROCESSES changes it).
PROCESSES_ENV = "MIRROR_TEST_PROCESSES"
DEFAULT_PROCESSES = 2
#: pytest's exit code when a part selects no test: not a failure of the suite.
NO_TESTS_COLLECTED = 5


@dataclass(frozen=True)
class Service:
    """A service the tests share: its variable and how to start, probe and stop it."""

    variable: str
    start: Callable[[], str]
    is_running: Callable[[], bool]
    stop: Callable[[], None]


def shared_services() -> list[Service]:
    """The single-node broker, PostgreSQL and MariaDB (devservices), as the fixtures use them."""
    from devservices import kafka, mariadb, postgres

    return [
        Service(
            "KAFKA_BROKER",
            lambda: kafka.start(1),
            lambda: kafka.is_running(1),
            lambda: kafka.stop(1),
        ),
        Service("DATABASE_URL", postgres.start, postgres.is_running, postgres.stop),
        Service("MARIADB_URL", mariadb.start, mariadb.is_running, mariadb.stop),
    ]


def parts(options: Sequence[str], processes: int) -> list[list[str]]:
    """Return the pytest command lines of the two parts, in the order they run (a ``-m`` of
    the caller's is combined with each part's own: pytest keeps only the last ``-m``)."""
    rest, marks = _without_marks(options)
    pytest = [sys.executable, "-m", "pytest"]
    parallel = ["-n", str(processes), "--dist", "loadscope", "-m", _and(marks, "not serial")]
    return [[*pytest, *parallel, *rest], [*pytest, "-m", _and(marks, "serial"), *rest]]


def _without_marks(options: Sequence[str]) -> tuple[list[str], str | None]:
    """Split ``options`` into the others and the last ``-m`` expression (None: no ``-m``)."""
    rest: list[str] = []
    marks: str | None = None
    given = iter(options)
    for option in given:
        if option == "-m":
            marks = next(given, "")
        elif option.startswith("-m="):
            marks = option.removeprefix("-m=")
        else:
            rest.append(option)
    return rest, marks


def _and(marks: str | None, part: str) -> str:
    return part if not marks else f"({marks}) and {part}"


def passed(code: int) -> bool:
    """Whether a part's exit code is a pass (a part that selects nothing passes)."""
    return code in (0, NO_TESTS_COLLECTED)


def main(options: Sequence[str]) -> int:
    """Start the shared services, run both parts, stop what was started; 1 if any part failed."""
    from devservices.dbserver import DevServiceError
    from devservices.kafka import KafkaDevError

    keep = os.environ.get("KEEP_SERVICES") == "1"
    processes = int(os.environ.get(PROCESSES_ENV, DEFAULT_PROCESSES))
    started: list[Service] = []
    try:
        for service in shared_services():
            if os.environ.get(service.variable):
                continue
            was_running = service.is_running()
            os.environ[service.variable] = service.start()
            if not was_running:
                started.append(service)
        codes = [subprocess.call(command) for command in parts(options, processes)]
    except (KafkaDevError, DevServiceError, OSError) as exc:
        print(f"run_suite: cannot start the shared services: {exc}", file=sys.stderr)
        return 1
    finally:
        if not keep:
            for service in reversed(started):
                service.stop()
    return 0 if all(passed(code) for code in codes) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
