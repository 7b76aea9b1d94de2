"""The worker's logging: JSON lines carry a record's position; LOG_LEVEL and LOG_FORMAT apply
to Faust's worker as configured (its first lines are tested in
tests/integration/test_worker_logging.py)."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.ops.logs import JsonFormatter, configure_logging, logging_config
from streams.settings import Settings
from streams.worker import MirrorApp, MirrorWorker


def test_a_rejection_log_line_is_one_json_object_with_its_position() -> None:
    record = logging.LogRecord(
        "streams.apply.sql_applier", logging.ERROR, __file__, 1, "rejected %s", ("t[1]@5",), None
    )
    record.__dict__.update({"topic": "t", "partition": 1, "offset": 5, "reason": "bad_json"})
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "error" and entry["message"] == "rejected t[1]@5"
    assert (entry["topic"], entry["partition"], entry["offset"], entry["reason"]) == (
        "t",
        1,
        5,
        "bad_json",
    )


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Give the test the root logger to configure; put pytest's handlers back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_from_the_configuration_the_worker_applies(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("json", "warning")
    logging.getLogger("faust.worker").info("[^Worker]: Starting...")
    logging.getLogger("faust.worker").warning("[^Worker]: slow")
    lines = capsys.readouterr().err.splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["[^Worker]: slow"]


def test_text_lines_are_fausts_own_at_log_level(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert logging_config("text", "info") is None  # mode's default, as the worker sets it up
    configure_logging("text", "error")
    logging.getLogger("streams.apply.sql_applier").warning("not shown")
    logging.getLogger("streams.apply.sql_applier").error("shown")
    err = capsys.readouterr().err
    assert "shown" in err and "not shown" not in err and "[ERROR]" in err


def mirror_app(tmp_path: Path, **env: str) -> MirrorApp:
    app = MirrorApp(f"unit-{uuid.uuid4().hex[:8]}", autodiscover=False)
    app.mirror_settings = Settings.from_env(env, cwd=tmp_path)
    return app


@pytest.mark.parametrize(
    ("flag", "warned"), [(None, False), ("WARN", False), ("info", False), ("debug", True)]
)
def test_log_level_wins_over_fausts_l_flag(
    flag: str | None, warned: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = mirror_app(tmp_path, LOG_LEVEL="info")
    with caplog.at_level(logging.WARNING, "streams.worker"):
        made = MirrorWorker(app, loglevel=flag)
    assert made.loglevel == "info"
    assert made.logging_config is None and not made.quiet
    notes = [r.getMessage() for r in caplog.records if r.name == "streams.worker"]
    assert notes == (
        ["-l debug is ignored: LOG_LEVEL=info sets the worker's log level"] if warned else []
    )


def test_json_worker_writes_only_json_and_never_filters_its_own_output(tmp_path: Path) -> None:
    app = mirror_app(tmp_path, LOG_LEVEL="error", LOG_FORMAT="json")
    made = MirrorWorker(app, loglevel="info")
    assert made.loglevel == "error"
    assert made.logging_config == logging_config("json", "error")
    assert made.quiet  # its "-INT-" notes are not JSON
    assert made.spinner is None  # nor are its spinner's escape codes
    # What is printed once the worker runs (an "error: ..." line) is logged at LOG_LEVEL at least.
    assert made.redirect_stdouts_level == logging.ERROR
