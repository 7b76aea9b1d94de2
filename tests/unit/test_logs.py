"""JSON log lines carry the record's position on errors."""

from __future__ import annotations

import json
import logging

from streams.logs import JsonFormatter


def test_a_rejection_log_line_is_one_json_object_with_its_position() -> None:
    record = logging.LogRecord(
        "streams.mirror", logging.ERROR, __file__, 1, "rejected %s", ("t[1]@5",), None
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
