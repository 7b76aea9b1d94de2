"""Faust's own variables cannot change the worker: its settings come from its variables only.

Faust's settings take environment values over the app's arguments (streams/faust_app.py,
workaround 10): with BROKER_URL beside KAFKA_BROKER a worker consumed from one cluster and wrote
to the other, WEB_BIND=0.0.0.0 exposed the API on every interface, APP_DATADIR and
NODE_CANONICAL_URL won over DATA_DIR and CANONICAL_URL.
"""

from __future__ import annotations

import socket
from pathlib import Path

import aiohttp
import pytest

from tests.support import (
    create_topic,
    expected_planets,
    free_port,
    get_settled,
    make_worker,
    planet_stream,
    produce,
    wait_caught_up,
    wait_ready,
)


async def test_faust_s_variables_set_to_other_values_change_nothing(
    kafka_bootstrap: str, pg_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_bootstrap, topic, partitions=4)
    events = planet_stream(300, 30, seed=11)
    await produce(kafka_bootstrap, topic, ((e.key.encode(), e.value) for e in events))
    elsewhere = tmp_path / "faust-datadir"
    worker, app_id = make_worker(
        kafka_bootstrap,
        pg_url,
        topic_prefix,
        tmp_path,
        "faust-env",
        # No broker listens there: had Faust used it, the worker would consume nothing.
        BROKER_URL=f"kafka://127.0.0.1:{free_port()}",
        WEB_BIND="0.0.0.0",
        APP_DATADIR=str(elsewhere),
        NODE_CANONICAL_URL="http://elsewhere.invalid:1",
        APP_VERSION="1.2.3",  # Faust's too: it stopped Faust with a ValueError
    )
    port = int(worker.env["WEB_PORT"])
    base = f"http://127.0.0.1:{port}"
    expected = expected_planets(events)
    worker.start()
    try:
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
        await wait_ready(worker)
        # Bound to WEB_HOST (127.0.0.1) only: another loopback address finds nobody there.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", port), timeout=5).close()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            # The router knows this worker by its CANONICAL_URL's default, not by
            # NODE_CANONICAL_URL (reads would be forwarded there and answer 503).
            async with http.get(f"{base}/router/") as response:
                routes = await response.json()
            answers = {
                key: await get_settled(http, f"{base}/entities/planet/{key}", alive=[worker])
                for key in expected
            }
    finally:
        worker.stop()
    assert set(routes) == {base}, routes
    assert answers == {key: (200, {"uuid": key, "name": name}) for key, name in expected.items()}
    assert not elsewhere.exists()
    assert (tmp_path / "data" / "v1" / "tables").is_dir()  # DATA_DIR's
    log = worker.log_path.read_text(errors="replace")
    named = [line for line in log.splitlines() if "are Faust's and not read" in line]
    assert len(named) == 1 and "[WARNING]" in named[0], named
    assert "BROKER_URL, WEB_BIND, NODE_CANONICAL_URL, APP_DATADIR" in named[0], named
    assert "Traceback" not in log
