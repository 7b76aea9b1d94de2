"""A real worker applies LOG_FORMAT and LOG_LEVEL from its first log line, Faust's included.

The log is what the worker writes to stderr. Faust's banner (a table of the worker's id,
transport, web address, log level, versions) is printed to stdout before the first log line; it
is not a log record, so it does not count: with LOG_FORMAT=json stdout holds the banner and
nothing else (``faust -A streams.app -q worker`` leaves it out).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tests.support import WorkerProcess, make_worker, wait_ready
from tests.waiting import eventually

#: Faust's worker says "[^<its class>]: Ready" once started.
READY = "Worker]: Ready"


def started_lines(worker: WorkerProcess) -> list[str]:
    """Return the log lines of the worker's last start (its stderr)."""
    text = worker.log_path.read_text(errors="replace")
    return [line for line in text.split("=====\n")[-1].splitlines() if line.strip()]


async def wait_logged(worker: WorkerProcess, text: str) -> list[str]:
    """Wait until a log line holds ``text``; return the lines up to and including it."""

    def up_to_text() -> list[str]:
        lines = started_lines(worker)
        for index, line in enumerate(lines):
            if text in line:
                return lines[: index + 1]
        return []

    lines: list[str] = await eventually(
        up_to_text, what=f"a log line saying {text!r}", alive=[worker]
    )
    return lines


def logging_worker(
    kafka_bootstrap: str,
    sqlite_url: str,
    topic_prefix: str,
    tmp_path: Path,
    options: tuple[str, ...],
    **env: str,
) -> WorkerProcess:
    worker, _ = make_worker(kafka_bootstrap, sqlite_url, topic_prefix, tmp_path, "logging", **env)
    return dataclasses.replace(worker, options=options, stdout_path=tmp_path / "stdout.txt")


async def test_with_log_format_json_every_line_up_to_ready_is_json(
    kafka_bootstrap: str, sqlite_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    worker = logging_worker(
        kafka_bootstrap, sqlite_url, topic_prefix, tmp_path, (), LOG_FORMAT="json"
    )
    worker.start()
    try:
        lines = await wait_logged(worker, READY)
    finally:
        worker.stop()
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"a log line before ready is not JSON: {line!r}")
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in entries)
    # Faust's first lines, the app's and aiokafka's: all of them through the JSON formatter.
    assert entries[0]["message"] == "[^MirrorWorker]: Starting..."
    loggers = {entry["logger"].split(".")[0] for entry in entries}
    assert {"faust", "streams", "aiokafka"} <= loggers, loggers
    assert {entry["level"] for entry in entries} <= {"info", "warning", "error"}
    banner = (tmp_path / "stdout.txt").read_text().splitlines()
    assert banner and all(line[:1] in "+|" for line in banner), banner
    assert any("-stderr- (info)" in line for line in banner)


@pytest.mark.parametrize("options", [(), ("-l", "info")], ids=["no -l", "-l info"])
async def test_with_log_level_warning_no_info_line_appears(
    options: tuple[str, ...],
    kafka_bootstrap: str,
    sqlite_url: str,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    worker = logging_worker(
        kafka_bootstrap, sqlite_url, topic_prefix, tmp_path, options, LOG_LEVEL="warning"
    )
    worker.start()
    try:
        await wait_ready(worker)
    finally:
        worker.stop()
    lines = started_lines(worker)
    assert not [line for line in lines if "[INFO]" in line or "[DEBUG]" in line], lines
    ignored = "-l info is ignored: LOG_LEVEL=warning sets the worker's log level"
    assert [line for line in lines if ignored in line] == ([] if not options else [lines[0]])
    banner = (tmp_path / "stdout.txt").read_text().splitlines()
    assert any("-stderr- (warning)" in line for line in banner)
    # Faust's spinner is for terminals: no escape codes or " OK ^" after the banner.
    assert all(line[:1] in "+|" for line in banner), banner
