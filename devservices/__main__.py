"""``python -m devservices kafka|postgres|mariadb|prometheus ...``, ``stop-all``,
``stop-started FILE``."""

from __future__ import annotations

import sys
from collections.abc import Callable


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the Kafka, PostgreSQL, MariaDB or Prometheus tool, or stop every local
    service."""
    args = list(sys.argv[1:] if argv is None else argv)
    usage = (
        "usage: python -m devservices {kafka,postgres,mariadb,prometheus} ... | stop-all | "
        "stop-started FILE"
    )
    if not args:
        print(usage, file=sys.stderr)
        return 2
    command, rest = args[0], args[1:]
    if command == "kafka":
        from devservices import kafka

        return kafka.main(rest)
    if command == "postgres":
        from devservices import postgres

        return postgres.main(rest)
    if command == "mariadb":
        from devservices import mariadb

        return mariadb.main(rest)
    if command == "prometheus":
        from devservices import prometheus

        return prometheus.main(rest)
    if command == "stop-all":
        return _stop_all()
    if command == "stop-started" and len(rest) == 1:
        from pathlib import Path

        from devservices import processes

        stopped = processes.stop_started(Path(rest[0]))
        if stopped:
            print(f"devservices: stopped {stopped} process(es) a test run left", file=sys.stderr)
        return 0
    print(usage, file=sys.stderr)
    return 2


def _stop_all() -> int:
    """Stop every local service; one that cannot be stopped does not keep the others up."""
    from devservices import kafka, kafka_secure, mariadb, postgres
    from devservices.dbserver import DevServiceError

    stops: list[tuple[str, Callable[[], None]]] = [
        ("kafka", lambda: kafka.stop(1)),
        ("kafka --nodes 3", lambda: kafka.stop(3)),
        ("kafka --secure", kafka_secure.stop),
        ("postgres", postgres.stop),
        ("mariadb", mariadb.stop),
    ]
    failed = 0
    for name, stop in stops:
        try:
            stop()
        except (kafka.KafkaDevError, DevServiceError, OSError) as exc:
            # e.g. postgres on a machine that never installed it: no postgres user to lock as.
            print(f"devservices: error: could not stop {name}: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
