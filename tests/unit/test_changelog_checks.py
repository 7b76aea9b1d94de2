"""Which copy of a cached table to rebuild, and why: the local files, or the changelog."""

from __future__ import annotations

import pytest

from streams.core.changelog_checks import (
    ChangelogLog,
    StoreIdentity,
    local_mismatch,
    refill_reason,
)

TOPIC = "mirror-planet-changelog"
NOW = ChangelogLog(TOPIC, "id-2", {0: 10, 1: 7})
BUILT = StoreIdentity("mirror", {TOPIC: "id-2"})


def test_files_that_belong_to_the_changelog_are_kept() -> None:
    assert local_mismatch(BUILT, "mirror", NOW, {0: 9, 1: 6}) is None
    assert local_mismatch(BUILT, "mirror", NOW, {0: None}) is None  # nothing written yet
    assert local_mismatch(None, "mirror", NOW, {}) is None  # no files: nothing to check
    # Recorded before the broker gave ids: offsets are what is compared.
    assert local_mismatch(StoreIdentity("mirror", {TOPIC: None}), "mirror", NOW, {0: 9}) is None


@pytest.mark.parametrize(
    ("recorded", "offsets", "reason"),
    [
        (None, {0: 3}, "DATA_DIR has no record of the APP_ID and changelog"),
        (StoreIdentity("other", {TOPIC: "id-2"}), {0: 3}, "built under APP_ID 'other'"),
        (StoreIdentity("mirror", {"x": "id-2"}), {0: 3}, "not built from this changelog"),
        (
            StoreIdentity("mirror", {TOPIC: "id-1"}),
            {0: 3},
            "the changelog was made again since they were built (topic id id-1, now id-2)",
        ),
        (BUILT, {0: 10}, "partition 0 holds offset 10 but the changelog's ends at 10"),
        (BUILT, {2: 1}, "partition 2 is not one of the changelog's 2"),
    ],
)
def test_files_of_another_log_app_or_offset_are_not(
    recorded: StoreIdentity | None, offsets: dict[int, int | None], reason: str
) -> None:
    found = local_mismatch(recorded, "mirror", NOW, offsets)
    assert found is not None and reason in found, found


def test_a_changelog_the_rows_were_not_written_to_is_refilled() -> None:
    assert refill_reason("id-1", NOW, has_rows=True) == (
        "the table's rows were written to another log of that name (topic id id-1, now id-2)"
    )
    empty = ChangelogLog(TOPIC, "id-3", {0: 0, 1: 0})
    assert refill_reason(None, empty, has_rows=True) == "it is empty and the table is not"
    # A broker without topic ids: an empty changelog is all there is to go by.
    assert refill_reason(None, ChangelogLog(TOPIC, None, {0: 0}), has_rows=True) is not None


def test_a_changelog_kept_by_the_workers_or_an_empty_table_is_not() -> None:
    assert refill_reason("id-2", NOW, has_rows=True) is None
    assert refill_reason(None, NOW, has_rows=True) is None  # first check: trusted as kept
    assert refill_reason("id-1", NOW, has_rows=False) is None
    assert refill_reason("id-2", ChangelogLog(TOPIC, "id-2", {0: 0}), has_rows=True) is None


def test_an_identity_reads_back_and_anything_else_is_none() -> None:
    assert StoreIdentity.from_json(BUILT.as_json()) == BUILT
    for data in (None, [], {"app_id": 1}, {"app_id": "a", "changelogs": {"t": 5}}):
        assert StoreIdentity.from_json(data) is None
