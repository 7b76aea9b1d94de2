"""What the commands print: the text, the JSON documents scripts parse, and the exit codes,
from report values alone (no broker, no database); and their documentation."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from streams.cli.main import EXIT_CODES
from streams.cli.reports import (
    MEANINGS,
    Ahead,
    CacheCheck,
    DeadLetterLine,
    DeadLetterList,
    DelayReport,
    Difference,
    EntityStatus,
    Exit,
    PartitionStatus,
    StatusReport,
    TopicStatus,
    VerifyReport,
    dead_letter_lines,
    dead_letters_json,
    document,
    status_json,
    status_lines,
    verify_json,
    verify_lines,
)

ROOT = Path(__file__).resolve().parents[2]


def status(*partitions: PartitionStatus, max_lag: int = 0, **topic: Any) -> StatusReport:
    """A report of one planet entity on one topic with ``partitions``."""
    source = TopicStatus("planet-changed", True, partitions, **topic)
    entity = EntityStatus("planet", "servicea_planet", 8, None, (source,), DelayReport(0))
    return StatusReport("mirror", (entity,), max_lag)


def caught_up(p: int, end: int) -> PartitionStatus:
    return PartitionStatus(p, end, end, end, 0.0)


def test_status_caught_up_prints_the_table_and_exits_ok() -> None:
    report = status(caught_up(0, 5), PartitionStatus(1, None, 0, 0, 0.0))
    assert status_lines(report) == [
        "planet-changed (group mirror):",
        "  partition  committed  applied        end        lag  stale (s)",
        "          0          5        5          5          0          0",
        "          1         -1        0          0          0          0",
        "  table servicea_planet: 8 rows",
        "  end-to-end delay: not known here (status reads the broker and the store, not a "
        "worker's memory; --metrics URL reads it from workers)",
    ]
    assert report.exit_code == Exit.OK == 0
    body = status_json(report)
    assert (body["caught_up"], body["lag"], body["max_lag"], body["group"]) == (
        True,
        0,
        0,
        "mirror",
    )
    (entity,) = body["entities"]
    assert entity["end_to_end_delay"] is None and entity["soft_deleted"] is None
    assert entity["topics"][0]["partitions"][1] == {
        "partition": 1,
        "committed": None,
        "applied": 0,
        "end": 0,
        "lag": 0,
        "stepped_over": 0,
        "above_end": False,
        "stale_seconds": 0.0,
    }


def test_offsets_holding_no_record_to_apply_are_noted_and_not_lag() -> None:
    # A transactional producer's log ends with its commit marker: the record before it is
    # applied, and the short read reached the end without a record.
    marker = PartitionStatus(0, 40, 40, 41, 0.0, stepped_over=1)
    report = status(marker)
    lines = status_lines(report)
    assert lines[2] == "          0         40       40         41          0          0"
    assert lines[3] == (
        "  partition 0: offsets 40 to 40 hold no record to apply (a transaction's markers, or "
        "records of aborted transactions)"
    )
    assert report.exit_code == Exit.OK
    partition = status_json(report)["entities"][0]["topics"][0]["partitions"][0]
    assert (partition["lag"], partition["stepped_over"]) == (0, 1)


def test_status_behind_exits_behind_unless_max_lag_allows_the_lag() -> None:
    behind = PartitionStatus(2, 90, 90, 100, 12.345)
    report = status(caught_up(0, 5), behind)
    assert status_lines(report)[3] == (
        "          2         90       90        100         10       12.3"
    )
    assert report.exit_code == Exit.BEHIND == 3
    assert [p for _, p in report.behind()] == [behind]
    body = status_json(report)
    assert (body["caught_up"], body["lag"]) == (False, 10)
    assert body["entities"][0]["topics"][0]["partitions"][1]["stale_seconds"] == 12.345
    allowed = status(caught_up(0, 5), behind, max_lag=10)
    assert allowed.exit_code == Exit.OK and status_json(allowed)["caught_up"] is True
    assert status(behind, max_lag=9).exit_code == Exit.BEHIND


def test_an_offset_above_the_end_and_a_recreated_topic_are_noted_and_behind() -> None:
    above = PartitionStatus(0, 400, 400, 50, None)
    unread = PartitionStatus(1, 0, 0, 50, None)  # its record did not come within the read
    report = status(above, unread, max_lag=1000, recreated=("old-id", "new-id"))
    lines = status_lines(report)
    assert lines[2:4] == [
        "          0        400      400         50  above end          ?",
        "          1          0        0         50         50          ?",
    ]
    assert lines[4].startswith("  ! the topic was created again since its offsets were stored")
    assert "(its id is new-id, they were stored for old-id)" in lines[4]
    assert lines[5].startswith("  ! partition 0: the offset applied (400) is above the log's end")
    assert report.exit_code == Exit.BEHIND  # whatever --max-lag: a worker reads it again
    body = status_json(report)
    topic = body["entities"][0]["topics"][0]
    assert topic["recreated"] == {"stored_for_topic_id": "old-id", "topic_id": "new-id"}
    assert topic["partitions"][0]["lag"] is None and topic["partitions"][0]["above_end"]
    assert topic["partitions"][1]["stale_seconds"] is None
    assert body["lag"] == 50


def test_a_missing_topic_a_forwarded_one_soft_deletes_and_the_delay() -> None:
    forwarded = TopicStatus("raw", True, (caught_up(0, 3),), forwarded_to="mirror-raw-repartition")
    missing = TopicStatus("mirror-raw-repartition", False)
    delay = DelayReport(2, 40, 0.25, 0.5, math.inf)
    entity = EntityStatus("moon", "moons", 3, 1, (forwarded, missing), delay)
    report = StatusReport("mirror", (entity,))
    lines = status_lines(report)
    assert lines[0] == "raw (group mirror, forwarded to mirror-raw-repartition):"
    assert lines[3] == "mirror-raw-repartition: topic does not exist yet"
    assert lines[4] == "  table moons: 3 rows (1 soft-deleted)"
    assert lines[5] == (
        "  end-to-end delay: 40 batches on 2 worker(s), oldest record's delay mean 0.25 s, "
        "p50 <= 0.5 s, p99 <= inf s"
    )
    body = status_json(report)
    assert body["entities"][0]["end_to_end_delay"] == {
        "workers": 2,
        "batches": 40,
        "mean_seconds": 0.25,
        "p50_seconds": 0.5,
        "p99_seconds": None,  # above the last bound: JSON has no infinity
    }
    assert json.loads(document(body)) == body
    idle = EntityStatus("moon", "moons", 0, None, (missing,), DelayReport(1))
    idle_report = StatusReport("mirror", (idle,))
    assert status_lines(idle_report)[-1] == (
        "  end-to-end delay: no batch applied yet by the 1 worker(s) read"
    )
    assert status_json(idle_report)["entities"][0]["end_to_end_delay"] == {
        "workers": 1,
        "batches": 0,
        "mean_seconds": None,
        "p50_seconds": None,
        "p99_seconds": None,
    }
    assert idle_report.exit_code == Exit.OK  # a topic not there yet: nothing to apply


def verified(**fields: Any) -> VerifyReport:
    base: dict[str, Any] = {
        "kind": "planet",
        "table": "servicea_planet",
        "topic": "planet-changed",
        "group": "mirror",
        "rows": 2,
        "differences": (),
    }
    return VerifyReport(**{**base, **fields})


def test_verify_matching_with_its_cache() -> None:
    report = verified(cache=CacheCheck("mirror-planet-changelog", True, 2))
    assert verify_lines(report) == [
        "servicea_planet matches planet-changed: 2 rows",
        "the cache (mirror-planet-changelog) matches servicea_planet: 2 entries",
    ]
    assert report.exit_code == Exit.OK
    body = verify_json(report)
    assert body["matches"] is True and body["difference_count"] == 0
    assert body["cache"]["matches"] is True and body["cache"]["entries"] == 2
    no_cache = verified(cache=CacheCheck("mirror-planet-changelog", False))
    assert verify_lines(no_cache)[-1] == (
        "no cache yet: mirror-planet-changelog does not exist (no worker of mirror has run)"
    )
    assert verify_json(verified())["cache"] is None


def test_verify_differences_exit_differs_and_are_listed_up_to_the_limit() -> None:
    found = tuple(
        Difference(f"k{i}", "missing", f"missing row 'k{i}': {{'name': 'x'}}") for i in range(3)
    )
    ahead = Ahead("planet-changed", 1, 7, "k9", 3600.0, "planet-changed[1]@7 ... ahead")
    unsure = (Difference("k9", "differs", "row 'k9' differs: name: table 'a', topic 'b'"),)
    report = verified(differences=found, ahead=(ahead,), unsure=unsure, limit=2)
    lines = verify_lines(report)
    assert lines[:2] == [found[0].text, found[1].text]
    assert lines[2].startswith("1 records were stamped further ahead than MAX_TIMESTAMP_AHEAD")
    assert lines[3] == "  planet-changed[1]@7 ... ahead"
    assert lines[5] == "  row 'k9' differs: name: table 'a', topic 'b'"
    assert lines[-1] == "servicea_planet differs from planet-changed in 3 rows"
    assert report.exit_code == Exit.DIFFERS == 4
    body = verify_json(report)
    assert (body["matches"], body["difference_count"], len(body["differences"])) == (False, 3, 2)
    assert body["differences"][0] == {"key": "k0", "problem": "missing", "text": found[0].text}
    assert body["stamped_ahead"] == [
        {"topic": "planet-changed", "partition": 1, "offset": 7, "key": "k9", "seconds": 3600.0}
    ]
    assert (body["unsure_count"], body["unsure"][0]["problem"]) == (1, "differs")
    stale_cache = (Difference("k1", "extra", "cache has an entry the table lacks 'k1': {}"),)
    cached = verified(cache=CacheCheck("c", True, 3, stale_cache))
    assert cached.exit_code == Exit.DIFFERS
    assert verify_lines(cached)[-1] == "the cache (c) differs from servicea_planet in 1 keys"
    assert verify_json(cached)["cache"]["differences"][0]["problem"] == "extra"


def test_dead_letters_as_lines_and_json() -> None:
    headers = {
        "dlq.reason": "bad_json",
        "dlq.detail": "x" * 200,
        "dlq.error.type": "JSONDecodeError",
        "dlq.source.topic": "planet-changed",
        "dlq.source.partition": "3",
        "dlq.source.offset": "17",
        "dlq.source.timestamp": "not a number",
    }
    listing = DeadLetterList("planet-changed.dlq", 9, (DeadLetterLine(0, 4, headers),))
    assert dead_letter_lines(listing) == [
        f"planet-changed.dlq[0]@4 from [3]@17 bad_json: {'x' * 120}",
        "9 dead letters in planet-changed.dlq (selected)",
    ]
    assert dead_letters_json(listing) == {
        "topic": "planet-changed.dlq",
        "count": 9,
        "dead_letters": [
            {
                "partition": 0,
                "offset": 4,
                "reason": "bad_json",
                "detail": "x" * 200,
                "error_type": "JSONDecodeError",
                "source_topic": "planet-changed",
                "source_partition": 3,
                "source_offset": 17,
                "source_timestamp": None,
            }
        ],
    }
    empty = DeadLetterList("planet-changed.dlq", 0)
    assert dead_letter_lines(empty) == ["0 dead letters in planet-changed.dlq"]


def fields_of(value: Any, prefix: str = "") -> set[str]:
    """Return every field path of a JSON value (``a[].b`` for ``b`` of each item of ``a``)."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else key
            found |= {path} | fields_of(item, path)
    elif isinstance(value, list):
        for item in value:
            found |= fields_of(item, f"{prefix}[]")
    return found


def documented(command: str) -> set[str]:
    """Return the fields docs/operations.md lists under ``#### `COMMAND --json```."""
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text.split(f"#### `{command} --json`", 1)[1].split("\n#", 1)[0]
    cells = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return {name for cell in cells for name in re.findall(r"`([a-z0-9_.\[\]]+)`", cell)}


def test_the_documented_fields_are_the_documents_fields() -> None:
    """Every field of a fully filled document is documented, and nothing else is."""
    delay = DelayReport(1, 2, 0.1, 0.1, 0.5)
    topic = TopicStatus("t", True, (caught_up(0, 1),), "t-repartition", ("a", "b"))
    full_status = StatusReport(
        "g", (EntityStatus("planet", "p", 1, 0, (topic,), delay),), max_lag=0
    )
    difference = Difference("k", "differs", "row 'k' differs")
    full_verify = verified(
        differences=(difference,),
        unsure=(difference,),
        ahead=(Ahead("t", 0, 1, "k", 61.0, "..."),),
        cache=CacheCheck("c", True, 1, (difference,)),
    )
    letter = DeadLetterLine(0, 1, {"dlq.reason": "bad_json"})
    assert fields_of(status_json(full_status)) == documented("status")
    assert fields_of(verify_json(full_verify)) == documented("verify")
    assert fields_of(dead_letters_json(DeadLetterList("t.dlq", 1, (letter,)))) == documented(
        "dlq list"
    )
    assert documented("dlq redrive") == {"topic", "dry_run", "count", "reasons"}


def test_the_readme_lists_every_exit_code_as_help_does() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Scripts: `entity-mirror`", 1)[1].split("\n#", 1)[0]
    rows = {
        int(cells[1]): cells[2].strip()
        for line in section.splitlines()
        if re.match(r"^\| \d+ \|", line)
        for cells in [line.split("|")]
    }
    assert sorted(rows) == sorted(code.value for code in Exit) == [0, 1, 2, 3, 4]
    for code, meaning in MEANINGS.items():
        words = re.sub(r"[`()]", "", rows[code.value]).replace(" N", "")
        assert words == re.sub(r"[`()]", "", meaning), (code, rows[code.value], meaning)
        assert f"  {code.value}  {code.name.lower()}" in EXIT_CODES
