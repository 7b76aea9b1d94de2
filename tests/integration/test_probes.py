"""GET /health and GET /ready as Kubernetes means them, on real workers (streams/ops/probes.py).

Ready: a worker holding no partition (it forwards reads), and a worker in a rebalance (reads
then answer 503 with Retry-After, per key); not ready: a stopping worker, which is still alive.
The rebalance and the stop are held open by a batch waiting on a row lock in PostgreSQL (as in
test_shutdown.py), so each state lasts until the test has seen it.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import create_engine, text

from streams import __version__
from streams.settings import Settings
from streams.worker import build_app
from tests.integration.test_shutdown import wait_blocked_on_lock
from tests.support import (
    WorkerProcess,
    create_topic,
    free_port,
    make_worker,
    produce,
    wait_caught_up,
    wait_ready,
)
from tests.unit import test_kubernetes as kubernetes
from tests.waiting import eventually

TOKEN = "probe-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def planets(start: int, count: int) -> list[tuple[bytes, bytes]]:
    return [
        (f"p{i}".encode(), json.dumps({"planetUuid": f"p{i}", "planetName": f"n{i}"}).encode())
        for i in range(start, start + count)
    ]


async def get(
    http: aiohttp.ClientSession, worker: WorkerProcess, path: str, token: bool = False
) -> tuple[int, Any, dict[str, str]]:
    """GET ``path`` of ``worker``: status, JSON body, headers."""
    url = f"http://127.0.0.1:{worker.env['WEB_PORT']}{path}"
    async with http.get(url, headers=AUTH if token else {}) as response:
        return response.status, await response.json(), dict(response.headers)


@contextmanager
def offsets_locked(pg_url: str) -> Iterator[Any]:
    """Hold the rows of mirror_offsets in another session: the next batch, which moves its
    partition's offset, waits in PostgreSQL (inside a thread no cancellation reaches) until
    the block ends. Rows, not the table: a worker starting meanwhile reads the schema."""
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1 FROM mirror_offsets FOR UPDATE"))
            try:
                yield conn
            finally:
                conn.rollback()
    finally:
        engine.dispose()


async def split(
    http: aiohttp.ClientSession, workers: tuple[WorkerProcess, WorkerProcess], topic: str
) -> tuple[WorkerProcess, WorkerProcess] | None:
    """Return (the owner of ``topic``'s one partition, settled; the other), once no worker
    rebalances; None before."""
    reports = [(await get(http, w, "/partitions", token=True))[1] for w in workers]
    holders = [i for i, r in enumerate(reports) if f"{topic}[0]" in r["assigned"]]
    if len(holders) != 1 or any(r["rebalancing"] for r in reports):
        return None
    owner = holders[0]
    if not reports[owner]["settled"]:
        return None
    return workers[owner], workers[1 - owner]


async def test_a_worker_without_partitions_and_a_worker_in_a_rebalance_are_ready(
    kafka_bootstrap: str, pg_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_bootstrap, topic, partitions=1)
    # A member killed is noticed after SESSION_TIMEOUT: the rebalance below starts then.
    a, app_id = make_worker(
        kafka_bootstrap,
        pg_url,
        topic_prefix,
        tmp_path,
        "probes",
        API_TOKEN=TOKEN,
        SESSION_TIMEOUT="6",
    )
    b = WorkerProcess(
        {**a.env, "DATA_DIR": str(tmp_path / "data-b"), "WEB_PORT": str(free_port())},
        tmp_path / "worker-b.log",
    )
    a.start()
    b.start()
    try:
        await produce(kafka_bootstrap, topic, planets(0, 20))
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=a.assert_alive)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            # One partition, two workers: one owns it, the other holds none of it.
            found = await eventually(
                lambda: split(http, (a, b), topic),
                what="one worker owning the partition, settled",
                alive=[a, b],
                ignoring=(aiohttp.ClientError,),  # not listening yet
            )
            assert found is not None
            owner, idle = found
            report = (await get(http, idle, "/partitions", token=True))[1]
            assert report["entities"]["planet"]["assigned"] == []
            assert not any(tp.startswith(f"{topic}[") for tp in report["assigned"])
            for worker in (idle, owner):
                assert (await get(http, worker, "/ready"))[:2] == (200, {"ready": True})
                status, body, _ = await get(http, worker, "/health")
                assert (status, body) == (200, {"status": "ok", "version": __version__})
            # The worker without partitions answers reads by forwarding them to the owner.
            status, body, _ = await get(http, idle, "/entities/planet/p7", token=True)
            assert (status, body) == (200, {"uuid": "p7", "name": "n7"})

            with offsets_locked(pg_url):
                await produce(kafka_bootstrap, topic, planets(20, 20))
                await wait_blocked_on_lock(pg_url)
                # The idle worker dies: the group rebalances, and the owner's revocation
                # waits for its batch, so the rebalance lasts.
                assert idle.stop(signal.SIGKILL) == "SIGKILL"
                await eventually(
                    lambda: get(http, owner, "/partitions", token=True),
                    lambda got: got[1]["rebalancing"],
                    what="the owner's /partitions saying rebalancing",
                    alive=[owner],
                )
                assert (await get(http, owner, "/ready"))[:2] == (200, {"ready": True})
                # A read meanwhile is the documented 503 with Retry-After, for its key alone.
                status, body, headers = await get(http, owner, "/entities/planet/p1", token=True)
                assert (status, headers.get("Retry-After")) == (503, "1"), body
                partitions = (await get(http, owner, "/partitions", token=True))[1]
                assert partitions["rebalancing"] and not partitions["settled"]
                assert (await get(http, owner, "/ready"))[:2] == (200, {"ready": True})
            # The batch goes through, the rebalance ends, and the owner holds the partition.
            await wait_ready(owner, TOKEN)
            await wait_caught_up(kafka_bootstrap, app_id, topic, alive=owner.assert_alive)
    finally:
        b.stop()
        a.stop()


async def test_a_stopping_worker_is_never_ready_again(
    kafka_bootstrap: str, sqlite_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    # From the app's first step of stopping, /ready answers 503 "stopping" for as long as the
    # web server still runs (Faust stops it among the app's last services, about 0.2 s
    # later here), then nothing at all: both are "not ready" to a probe or a load balancer.
    worker, _ = make_worker(kafka_bootstrap, sqlite_url, topic_prefix, tmp_path, "probes-stop")
    worker.start()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            await eventually(
                lambda: get(http, worker, "/ready"),
                lambda got: got[:2] == (200, {"ready": True}),
                what="/ready answering 200",
                alive=[worker],
                ignoring=(aiohttp.ClientError,),  # not listening yet
            )
            assert worker.proc is not None
            os.killpg(worker.proc.pid, signal.SIGTERM)
            await eventually(
                lambda: "[^-MirrorApp]: Stopping..." in worker.log_path.read_text(),
                what="the app logging that it stops",
                every=0.01,
            )
            answers = []
            while True:
                try:
                    answers.append((await get(http, worker, "/ready"))[:2])
                except aiohttp.ClientError:
                    break  # the web server has stopped
            assert set(map(repr, answers)) <= {repr((503, {"ready": False, "reason": "stopping"}))}
        worker.assert_exited(0)
    finally:
        worker.stop()


async def test_the_ready_view_waits_for_the_web_server_and_the_manifests_probes_answer(
    kafka_bootstrap: str, sqlite_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    # The real app's pages, served in this process by aiohttp's test server: /ready says
    # "starting" until the app notes its web server started (MirrorApp.on_started); then the
    # paths the Kubernetes manifests' probes ask answer 200, without the token.
    worker, _ = make_worker(
        kafka_bootstrap, sqlite_url, topic_prefix, tmp_path, "probes-view", API_TOKEN=TOKEN
    )
    app: Any = build_app(Settings.from_env(dict(worker.env)))
    app.web.init_server()
    async with TestClient(TestServer(app.web.web_app)) as client:
        response = await client.get("/ready")
        assert (response.status, await response.json()) == (
            503,
            {"ready": False, "reason": "starting"},
        )
        app.serving = True
        response = await client.get("/ready")
        assert (response.status, await response.json()) == (200, {"ready": True})
        response = await client.get("/health")
        assert (response.status, await response.json()) == (
            200,
            {"status": "ok", "version": __version__},
        )
        probes = kubernetes.container()
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            response = await client.get(probes[kind]["httpGet"]["path"])
            assert response.status == 200, (kind, await response.text())
        assert (await client.get("/partitions")).status == 401
        assert (await client.get("/partitions", headers=AUTH)).status == 200
