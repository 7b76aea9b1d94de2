"""What ``status``, ``verify`` and ``dlq list`` found, as values, and their two forms: the lines
people read and the one JSON document scripts parse (``--json``), with the exit code both give.

The commands gather (broker, database); this module only formats, so the formats and the exit
codes are tested without either. The JSON field names are a contract: README's "Scripts:
``--json`` and exit codes" and docs/operations.md list them, and a unit test holds the
documentation and :func:`status_json`, :func:`verify_json` and :func:`dead_letters_json` to
the same names. A new field may be added; none is renamed or removed without a CHANGELOG note.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal


class Exit(IntEnum):
    """The exit codes of every command, one meaning each, whatever the output format
    (:data:`MEANINGS` says which; ``--help`` and the README show them)."""

    OK = 0
    ERROR = 1
    USAGE = 2
    BEHIND = 3
    DIFFERS = 4


MEANINGS: dict[Exit, str] = {
    Exit.OK: "done: status caught up, verify matching",
    Exit.ERROR: (
        "not done: a bad setting, the broker or database unreachable, an unknown kind, a "
        "missing topic (one error: line on stderr)"
    ),
    Exit.USAGE: "a bad command line (argparse's usage message on stderr)",
    Exit.BEHIND: (
        "status: a partition's lag is above --max-lag (default 0), or its applied offset is "
        "above the log's end (a worker reads it again)"
    ),
    Exit.DIFFERS: "verify: the table, or its cache, differs from the topic",
}


def _number(value: float | None) -> float | None:
    """Return ``value`` fit for JSON, which has no infinity: None for it."""
    return None if value is None or math.isinf(value) else value


def _seconds(value: float | None) -> str:
    """Format a staleness: 0 when caught up, ``?`` when the record there could not be read."""
    if value is None:
        return "?"
    return "0" if value == 0 else f"{value:.1f}"


def document(value: dict[str, Any]) -> str:
    """Return ``value`` as the one JSON document a command prints (sorted keys, no NaN)."""
    return json.dumps(value, indent=2, sort_keys=True, allow_nan=False, default=str)


# --- status --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    """One partition of a mirrored topic, as ``status`` read it."""

    partition: int
    committed: int | None
    """The consumer group's committed offset; None when it has none."""
    applied: int
    """The next offset to apply: stored with the data (the group's committed offset for a
    topic forwarded to a repartition topic); 0 when none."""
    end: int
    """The log's end offset."""
    stale_seconds: float | None
    """Now minus the timestamp of the first record not applied; 0 when caught up; None when
    that record did not come within the short read (or the offset is above the end)."""
    stepped_over: int = 0
    """Offsets from ``applied`` to ``end`` that hold no record to apply (a transaction's
    markers, an aborted transaction's records), as the short read found them; not lag."""

    @property
    def above_end(self) -> bool:
        """Tell whether the applied offset is above the log's end (a topic created again, or
        records the broker lost): a worker reads the partition again."""
        return self.applied > self.end

    @property
    def lag(self) -> int | None:
        """Return the records not applied yet; None when the applied offset is above the end."""
        return None if self.above_end else self.end - self.applied - self.stepped_over


@dataclass(frozen=True, slots=True)
class TopicStatus:
    """One topic of an entity: its source topic, or the repartition topic it is forwarded to."""

    topic: str
    exists: bool
    partitions: tuple[PartitionStatus, ...] = ()
    forwarded_to: str | None = None
    """The repartition topic this source topic is forwarded to; None when applied directly."""
    recreated: tuple[str, str] | None = None
    """(the topic id its offsets were stored for, its id now) when the topic was created again
    since; None otherwise."""


@dataclass(frozen=True, slots=True)
class DelayReport:
    """The end-to-end delay of one entity from the workers' metrics (``--metrics``)."""

    workers: int
    """Workers whose metrics were read (0: none asked for)."""
    batches: int = 0
    mean: float = 0.0
    p50: float = 0.0
    p99: float = 0.0


@dataclass(frozen=True, slots=True)
class EntityStatus:
    """One declared entity: its topics, its table's rows, its delay."""

    kind: str
    table: str
    rows: int
    soft_deleted: int | None
    """Rows marked deleted (a model with ``__soft_delete__``); None for other models."""
    topics: tuple[TopicStatus, ...]
    delay: DelayReport


@dataclass(frozen=True, slots=True)
class StatusReport:
    """What ``status`` found for every entity of one consumer group."""

    group: str
    entities: tuple[EntityStatus, ...]
    max_lag: int = 0
    """The lag a partition may have and still count as caught up (``--max-lag``)."""

    def partitions(self) -> list[tuple[str, PartitionStatus]]:
        """Return every (topic, partition) read."""
        return [
            (topic.topic, p)
            for entity in self.entities
            for topic in entity.topics
            for p in topic.partitions
        ]

    def behind(self) -> list[tuple[str, PartitionStatus]]:
        """Return the (topic, partition) pairs that are not caught up."""
        return [(t, p) for t, p in self.partitions() if p.lag is None or p.lag > self.max_lag]

    @property
    def exit_code(self) -> Exit:
        """Return BEHIND when a partition is not caught up, else OK."""
        return Exit.BEHIND if self.behind() else Exit.OK


def status_lines(report: StatusReport) -> list[str]:
    """Return the table ``status`` prints for people."""
    lines: list[str] = []
    for entity in report.entities:
        for topic in entity.topics:
            lines += _topic_lines(report.group, topic)
        marked = "" if entity.soft_deleted is None else f" ({entity.soft_deleted} soft-deleted)"
        lines.append(f"  table {entity.table}: {entity.rows} rows{marked}")
        lines.append(f"  end-to-end delay: {_delay_text(entity.delay)}")
    return lines


def _topic_lines(group: str, topic: TopicStatus) -> list[str]:
    if not topic.exists:
        return [f"{topic.topic}: topic does not exist yet"]
    forwarded = f", forwarded to {topic.forwarded_to}" if topic.forwarded_to else ""
    lines = [
        f"{topic.topic} (group {group}{forwarded}):",
        "  partition  committed  applied        end        lag  stale (s)",
    ]
    notes = []
    if topic.recreated is not None:
        stored_for, now_id = topic.recreated
        notes.append(
            f"  ! the topic was created again since its offsets were stored (its id is "
            f"{now_id}, they were stored for {stored_for}): a worker drops them and "
            "applies its new log from the start"
        )
    for p in topic.partitions:
        committed = -1 if p.committed is None else p.committed
        lag = "above end" if p.lag is None else str(p.lag)
        stale = "?" if p.above_end else _seconds(p.stale_seconds)
        lines.append(
            f"  {p.partition:>9}  {committed:>9}  {p.applied:>7}  {p.end:>9}  {lag:>9}  {stale:>9}"
        )
        if p.stepped_over:
            notes.append(
                f"  partition {p.partition}: offsets {p.applied} to {p.end - 1} hold no record to "
                "apply (a transaction's markers, or records of aborted transactions)"
            )
        if p.above_end:
            notes.append(
                f"  ! partition {p.partition}: the offset applied ({p.applied}) is above the "
                f"log's end ({p.end}): the topic was created again or the broker lost records; "
                "a worker reads it again from its start (or its end, for lost records)"
            )
    return lines + notes


def _delay_text(delay: DelayReport) -> str:
    """Describe the end-to-end delay, or why it is unknown."""
    if not delay.workers:
        return (
            "not known here (status reads the broker and the store, not a worker's memory; "
            "--metrics URL reads it from workers)"
        )
    if not delay.batches:
        return f"no batch applied yet by the {delay.workers} worker(s) read"
    return (
        f"{delay.batches} batches on {delay.workers} worker(s), oldest record's delay mean "
        f"{delay.mean:.2f} s, p50 <= {delay.p50:g} s, p99 <= {delay.p99:g} s"
    )


def status_json(report: StatusReport) -> dict[str, Any]:
    """Return the JSON document of ``status --json``."""
    return {
        "group": report.group,
        "caught_up": not report.behind(),
        "max_lag": report.max_lag,
        "lag": sum(p.lag or 0 for _, p in report.partitions()),
        "entities": [
            {
                "kind": entity.kind,
                "table": entity.table,
                "rows": entity.rows,
                "soft_deleted": entity.soft_deleted,
                "topics": [_topic_json(topic) for topic in entity.topics],
                "end_to_end_delay": _delay_json(entity.delay),
            }
            for entity in report.entities
        ],
    }


def _topic_json(topic: TopicStatus) -> dict[str, Any]:
    return {
        "topic": topic.topic,
        "exists": topic.exists,
        "forwarded_to": topic.forwarded_to,
        "recreated": None
        if topic.recreated is None
        else {"stored_for_topic_id": topic.recreated[0], "topic_id": topic.recreated[1]},
        "partitions": [
            {
                "partition": p.partition,
                "committed": p.committed,
                "applied": p.applied,
                "end": p.end,
                "lag": p.lag,
                "stepped_over": p.stepped_over,
                "above_end": p.above_end,
                "stale_seconds": None if p.above_end else _number(p.stale_seconds),
            }
            for p in topic.partitions
        ],
    }


def _delay_json(delay: DelayReport) -> dict[str, Any] | None:
    if not delay.workers:
        return None
    return {
        "workers": delay.workers,
        "batches": delay.batches,
        "mean_seconds": delay.mean if delay.batches else None,
        "p50_seconds": _number(delay.p50) if delay.batches else None,
        "p99_seconds": _number(delay.p99) if delay.batches else None,
    }


# --- verify --------------------------------------------------------------------------------

Problem = Literal["missing", "extra", "differs"]


@dataclass(frozen=True, slots=True)
class Difference:
    """One row (or cache entry) that is not what the topic implies."""

    key: str
    """The entity key as text (a composite key: the compact JSON array of its parts)."""
    problem: Problem
    """``missing`` (the topic implies it, the table lacks it), ``extra`` (the other way
    round) or ``differs`` (both have it, with other values)."""
    text: str
    """The line people read, with the values."""


@dataclass(frozen=True, slots=True)
class Ahead:
    """A record stamped further ahead than MAX_TIMESTAMP_AHEAD (its producer's clock ran
    ahead)."""

    topic: str
    partition: int
    offset: int
    key: str | None
    seconds: float
    text: str


@dataclass(frozen=True, slots=True)
class CacheCheck:
    """The cached table's changelog compared with the SQL rows."""

    topic: str
    exists: bool
    entries: int = 0
    differences: tuple[Difference, ...] = ()


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What ``verify KIND`` found: the table against a replay of its topic, then the cache."""

    kind: str
    table: str
    topic: str
    group: str
    rows: int
    """Rows in the table."""
    differences: tuple[Difference, ...]
    unsure: tuple[Difference, ...] = ()
    """Rows of entities held by a record stamped ahead: a replay now counts that record from
    now, not from when a worker read it, so these are not counted as differences."""
    ahead: tuple[Ahead, ...] = ()
    max_timestamp_ahead: float = 60.0
    cache: CacheCheck | None = None
    """None when not compared: an uncached entity, or a table that already differs."""
    limit: int = 50
    """The most items of each list shown (the counts are always whole)."""

    @property
    def matches(self) -> bool:
        """Tell whether the table (and the cache, when compared) match the topic."""
        return not self.differences and (self.cache is None or not self.cache.differences)

    @property
    def exit_code(self) -> Exit:
        """Return DIFFERS when the table or cache differs, else OK."""
        return Exit.OK if self.matches else Exit.DIFFERS


def _listed(heading: str, items: Sequence[str], limit: int) -> list[str]:
    """Return ``heading`` and at most ``limit`` of ``items`` indented, or nothing for none."""
    return [heading, *(f"  {item}" for item in items[:limit])] if items else []


def verify_lines(report: VerifyReport) -> list[str]:
    """Return what ``verify`` prints for people."""
    limit = report.limit
    lines = [d.text for d in report.differences[:limit]]
    lines += _listed(
        f"{len(report.ahead)} records were stamped further ahead than MAX_TIMESTAMP_AHEAD "
        f"({report.max_timestamp_ahead:.0f} s): each counted that far ahead of when a "
        "worker read it, so it held its entity against events from other partitions no "
        "longer than that; fix their producers' clocks:",
        [item.text for item in report.ahead],
        limit,
    )
    lines += _listed(
        f"{len(report.unsure)} rows of those entities differ from a replay now, which "
        "counts the records from now, not from when a worker read them (not counted as "
        "differences):",
        [d.text for d in report.unsure],
        limit,
    )
    if report.differences:
        lines.append(
            f"{report.table} differs from {report.topic} in {len(report.differences)} rows"
        )
        return lines
    lines.append(f"{report.table} matches {report.topic}: {report.rows} rows")
    cache = report.cache
    if cache is None:
        return lines
    if not cache.exists:
        lines.append(
            f"no cache yet: {cache.topic} does not exist (no worker of {report.group} has run)"
        )
        return lines
    lines += [d.text for d in cache.differences[:limit]]
    if cache.differences:
        lines.append(
            f"the cache ({cache.topic}) differs from {report.table} in "
            f"{len(cache.differences)} keys"
        )
    else:
        lines.append(f"the cache ({cache.topic}) matches {report.table}: {cache.entries} entries")
    return lines


def _differences_json(found: Sequence[Difference], limit: int) -> list[dict[str, Any]]:
    return [{"key": d.key, "problem": d.problem, "text": d.text} for d in found[:limit]]


def verify_json(report: VerifyReport) -> dict[str, Any]:
    """Return the JSON document of ``verify --json``."""
    limit = report.limit
    cache = report.cache
    return {
        "kind": report.kind,
        "table": report.table,
        "topic": report.topic,
        "matches": report.matches,
        "rows": report.rows,
        "difference_count": len(report.differences),
        "differences": _differences_json(report.differences, limit),
        "unsure_count": len(report.unsure),
        "unsure": _differences_json(report.unsure, limit),
        "stamped_ahead_count": len(report.ahead),
        "stamped_ahead": [
            {
                "topic": a.topic,
                "partition": a.partition,
                "offset": a.offset,
                "key": a.key,
                "seconds": a.seconds,
            }
            for a in report.ahead[:limit]
        ],
        "cache": None
        if cache is None
        else {
            "topic": cache.topic,
            "exists": cache.exists,
            "matches": not cache.differences,
            "entries": cache.entries,
            "difference_count": len(cache.differences),
            "differences": _differences_json(cache.differences, limit),
        },
    }


# --- dlq list ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetterLine:
    """One dead letter as ``dlq list`` shows it: where it is, where it came from, why."""

    partition: int
    offset: int
    headers: dict[str, str]
    """Its ``dlq.*`` headers, decoded."""

    def source(self, name: str) -> int | None:
        """Return the ``dlq.source.<name>`` header as a number (None: missing or not one)."""
        raw = self.headers.get(f"dlq.source.{name}")
        try:
            return None if raw is None else int(raw)
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class DeadLetterList:
    """The dead letters of one topic that a selection takes."""

    topic: str
    count: int
    """How many the selection takes (all of them are counted, at most ``limit`` listed)."""
    letters: tuple[DeadLetterLine, ...] = ()


def dead_letter_lines(listing: DeadLetterList) -> list[str]:
    """Return what ``dlq list`` prints for people."""
    lines = []
    for letter in listing.letters:
        info = letter.headers
        lines.append(
            f"{listing.topic}[{letter.partition}]@{letter.offset} from "
            f"[{info.get('dlq.source.partition')}]@{info.get('dlq.source.offset')} "
            f"{info.get('dlq.reason')}: {info.get('dlq.detail', '')[:120]}"
        )
    selected = " (selected)" if listing.count else ""
    lines.append(f"{listing.count} dead letters in {listing.topic}{selected}")
    return lines


def dead_letters_json(listing: DeadLetterList) -> dict[str, Any]:
    """Return the JSON document of ``dlq list --json``."""
    return {
        "topic": listing.topic,
        "count": listing.count,
        "dead_letters": [
            {
                "partition": letter.partition,
                "offset": letter.offset,
                "reason": letter.headers.get("dlq.reason"),
                "detail": letter.headers.get("dlq.detail"),
                "error_type": letter.headers.get("dlq.error.type"),
                "source_topic": letter.headers.get("dlq.source.topic"),
                "source_partition": letter.source("partition"),
                "source_offset": letter.source("offset"),
                "source_timestamp": letter.source("timestamp"),
            }
            for letter in listing.letters
        ],
    }
