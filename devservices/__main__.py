"""``python -m devservices kafka|postgres ...``, ``stop-all``, and ``stop-started FILE``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the Kafka or PostgreSQL tool, or stop every local service."""
    args = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: python -m devservices {kafka,postgres} ... | stop-all | stop-started FILE"
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
    if command == "stop-all":
        from devservices import kafka, kafka_secure, postgres

        kafka.stop(1)
        kafka.stop(3)
        kafka_secure.stop()
        postgres.stop()
        return 0
    if command == "stop-started" and len(rest) == 1:
        from pathlib import Path

        from devservices import processes

        stopped = processes.stop_started(Path(rest[0]))
        if stopped:
            print(f"devservices: stopped {stopped} process(es) a test run left", file=sys.stderr)
        return 0
    print(usage, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
