"""Adapter for the AWS MSK/Lambda event shape, for services moving off that pattern.

A Lambda receives ``{"records": {"<topic>-<partition>": [record, ...], ...}}`` where each
record has base64 ``key``/``value``, ``timestamp`` (ms), ``topic``, ``partition`` and
``offset``. :func:`handle_msk_event` keeps that pattern's contract: it returns
``(max_status, results)`` with 201 for CREATED, 200 for UPDATED (or no changeType),
204 for DELETED and 400 for a rejected event. Records go through the same
:class:`~streams.apply.sql_applier.SqlApplier` as the Faust agents, in batches per entity.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Iterable, Mapping
from typing import Any

from streams.apply.sql_applier import RecordResult, SqlApplier
from streams.core.decisions import ChangeType, Outcome, Rejection, RejectReason
from streams.core.records import SourceRecord

STATUS_BY_CHANGE = {ChangeType.CREATED: 201, ChangeType.UPDATED: 200, ChangeType.DELETED: 204}
STATUS_REJECTED = 400


class MskEventError(ValueError):
    """The Lambda event itself (not one record) is malformed."""


def _b64(value: Any, what: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise MskEventError(f"{what} must be a base64 string, got {type(value).__name__}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MskEventError(f"{what} is not valid base64: {exc}") from None


def _headers(raw: Any) -> tuple[tuple[str, bytes], ...]:
    """MSK sends headers as ``[{"name": [byte, ...]}, ...]``."""
    pairs: list[tuple[str, bytes]] = []
    for item in raw or []:
        if isinstance(item, Mapping):
            for name, value in item.items():
                data = bytes(value) if isinstance(value, list) else str(value).encode()
                pairs.append((str(name), data))
    return tuple(pairs)


def records_from_msk_event(event: Mapping[str, Any]) -> list[SourceRecord]:
    """Flatten an MSK event to source records in partition order (topic, partition, offset).

    Not by timestamp, as the Lambda pattern sorted them: a record later in its partition is
    newer whatever its producer's clock says (``streams.core.guard``), and versions order the
    records of different partitions whatever order they are applied in.
    """
    groups = event.get("records")
    if not isinstance(groups, Mapping):
        raise MskEventError("MSK event has no 'records' object")
    records: list[SourceRecord] = []
    for group_name, items in groups.items():
        if not isinstance(items, list):
            raise MskEventError(f"records[{group_name!r}] is not a list")
        for item in items:
            try:
                records.append(
                    SourceRecord(
                        topic=str(item["topic"]),
                        partition=int(item["partition"]),
                        offset=int(item["offset"]),
                        timestamp=int(item.get("timestamp", 0)),
                        key=_b64(item.get("key"), "key"),
                        value=_b64(item.get("value"), "value"),
                        headers=_headers(item.get("headers")),
                    )
                )
            except (KeyError, TypeError, ValueError) as exc:
                if isinstance(exc, MskEventError):
                    raise
                raise MskEventError(f"malformed record in {group_name!r}: {exc!r}") from None
    records.sort(key=lambda r: (r.topic, r.partition, r.offset))
    return records


def status_of(result: RecordResult) -> int:
    """Return the Lambda-style status code of one record's outcome."""
    decision = result.decision
    if isinstance(decision, Rejection):
        return STATUS_REJECTED
    return STATUS_BY_CHANGE[decision.change_type]


def _result_dict(result: RecordResult) -> dict[str, Any]:
    record = result.record
    out: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "status": status_of(result),
        "outcome": result.outcome.value,
    }
    if isinstance(result.decision, Rejection):
        out["reason"] = result.decision.reason.value
        out["detail"] = result.decision.detail
    else:
        key = result.decision.key
        # A composite key as the JSON array of its parts (``streams.core.keys.key_text``).
        out["key"] = list(key) if isinstance(key, tuple) else key
    return out


def apply_records(mirror: SqlApplier, records: Iterable[SourceRecord]) -> list[RecordResult]:
    """Apply records through ``mirror``, one transaction per run of one topic's records."""
    results: list[RecordResult] = []
    run: list[SourceRecord] = []
    run_topic: str | None = None

    def flush() -> None:
        if not run:
            return
        spec = mirror.entity_for_topic(run[0].topic)
        if spec is None:
            for record in run:
                rejection = Rejection(
                    RejectReason.UNKNOWN_TOPIC, f"no entity mirrors topic {record.topic!r}", record
                )
                results.append(RecordResult(record, Outcome.REJECTED, rejection))
        else:
            results.extend(mirror.apply(spec, run).results)
        run.clear()

    for record in records:
        if record.topic != run_topic:
            flush()
            run_topic = record.topic
        run.append(record)
    flush()
    return results


@functools.cache
def _default_mirror() -> SqlApplier:
    """Build the SqlApplier from the environment once per Lambda container."""
    from streams.settings import Settings
    from streams.worker import build_mirror

    settings = Settings.from_env()
    mirror = build_mirror(settings)
    mirror.store.create_tables(list(mirror.registry))
    return mirror


def handle_msk_event(
    event: Mapping[str, Any], context: Any = None, *, mirror: SqlApplier | None = None
) -> tuple[int, list[dict[str, Any]]]:
    """Apply an MSK/Lambda event; return ``(max_status, results)`` in partition order.

    A retriable store error (database down) propagates, so Lambda retries the whole
    event; the writes are idempotent, so the records applied before it do no harm.
    """
    target = mirror if mirror is not None else _default_mirror()
    results = apply_records(target, records_from_msk_event(event))
    dicts = [_result_dict(result) for result in results]
    max_status = max((d["status"] for d in dicts), default=200)
    return max_status, dicts
