"""DATA_DIR on a disk that fills up while mirroring: nothing is lost, the SQL mirror goes on,
reads are answered from the database, and a restart once the disk has room rebuilds the cache.

The disk is a small tmpfs mounted for the test (the tests run as root, as CI does here).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.planet import Planet
from models.registry import build_spec
from models.store import SqlStore
from tests.integration.test_mirror import read_planets
from tests.support import (
    assert_planet_reads,
    end_offsets,
    expected_planets,
    make_worker,
    planet_stream,
    produce,
    run_cli,
    wait_caught_up,
    wait_for_metric,
    wait_ready,
    wait_stored,
)

PLANET = build_spec(Planet)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs at ``tmp_path/data`` (the worker's DATA_DIR)."""
    mount = tmp_path / "data"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"cannot mount a small disk for DATA_DIR: {done.stderr.strip()}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` but ``leave`` bytes with one file; return it."""
    stats = os.statvfs(disk)
    free = stats.f_bavail * stats.f_frsize
    filler = disk / "filler"
    with filler.open("wb") as out:
        out.write(b"\0" * max(0, free - leave))
    return filler


async def test_a_full_data_dir_loses_nothing_and_the_cache_is_rebuilt_after(
    kafka_bootstrap: str, pg_url: str, topic_prefix: str, tmp_path: Path, small_disk: Path
) -> None:
    topic = f"{topic_prefix}planet-changed"
    events = planet_stream(30_000, 5_000, seed=11)
    worker, app_id = make_worker(kafka_bootstrap, pg_url, topic_prefix, tmp_path, "fulldisk")
    assert worker.env["DATA_DIR"] == str(small_disk)
    store = SqlStore.from_url(pg_url)
    store.create_tables([PLANET])
    expected = expected_planets(events)
    sample = sorted({e.key for e in events})[::250]
    try:
        worker.start()
        await produce(kafka_bootstrap, topic, [(e.key.encode(), e.value) for e in events[:10]])
        await wait_stored(store, app_id, 10, worker)
        filler = fill(small_disk, leave=128 * 1024)
        await produce(kafka_bootstrap, topic, [(e.key.encode(), e.value) for e in events[10:]])
        await wait_for_metric(worker, 'mirror_cache_local_failures_total{entity="planet"}', 1)
        await wait_stored(store, app_id, len(events), worker)
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)

        # Every record applied once, the table exact, the offsets at the end.
        ends = await end_offsets(kafka_bootstrap, topic)
        assert store.stored_offsets(app_id) == {(topic, p): n for p, n in ends.items()}
        assert read_planets(pg_url) == expected
        counts = store.outcome_counts(app_id)
        assert sum(n for (t, _), n in counts.items() if t == topic) == len(events), counts
        # Reads answer what the database has, never a 404 for an entity it has.
        await assert_planet_reads(worker.env["WEB_PORT"], expected, sample)
        log = worker.log_path.read_text()
        assert log.count("the cached table planet cannot be written on this worker") == 1

        # Room again, and a restart: the copy is rebuilt from the changelog.
        filler.unlink()
        assert worker.stop() == "SIGTERM"
        worker.start()
        await wait_ready(worker)
        await assert_planet_reads(worker.env["WEB_PORT"], expected, sample)
        local = await wait_for_metric(
            worker, 'mirror_entity_reads_total{entity="planet",result="local"}', 1
        )
        assert local >= sum(1 for key in sample if key in expected)
        verify = await asyncio.to_thread(run_cli, worker.env, "verify", "planet")
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        assert worker.stop() in ("SIGTERM", "exited")
        store.dispose()
