"""The worker's HTTP server: the token guards every route, errors are statuses, not 500s."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import aiohttp
from sqlalchemy.engine import make_url

from streams.settings import Settings
from streams.worker import build_app
from tests.support import (
    TcpProxy,
    WorkerProcess,
    create_topic,
    expected_planets,
    get_settled,
    make_worker,
    planet_stream,
    produce,
    wait_caught_up,
    wait_ready,
    worker_env,
)
from tests.waiting import eventually

TOKEN = "t0ken-" + uuid.uuid4().hex[:8]
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def served_routes(env: dict[str, str]) -> list[tuple[str, str]]:
    """Return (method, path template) of every route the worker's web server has."""
    app = build_app(Settings.from_env(env))
    app.web.init_server()  # what the worker does at start: Faust's blueprints, then ours
    router = app.web.web_app.router  # type: ignore[attr-defined]
    return sorted((route.method, route.resource.canonical) for route in router.routes())


async def test_the_api_token_guards_every_route_but_the_probes(
    kafka_bootstrap: str, sqlite_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    worker, _ = make_worker(
        kafka_bootstrap, sqlite_url, topic_prefix, tmp_path, "web", API_TOKEN=TOKEN
    )
    routes = served_routes(dict(worker.env))
    # Faust's own pages are among them, not only ours.
    assert {"/", "/router/", "/table/", "/entities/{kind}/{key}"} <= {p for _, p in routes}
    base = f"http://127.0.0.1:{worker.env['WEB_PORT']}"
    worker.start()
    try:
        await wait_ready(worker, TOKEN)
        answers: dict[tuple[str, str], tuple[int, int]] = {}
        async with aiohttp.ClientSession() as http:
            for method, template in routes:
                path = re.sub(r"\{[^}]+\}", "planet", template)
                async with http.request(method, base + path) as without:
                    pass
                headers = {"Authorization": f"Bearer {TOKEN}"}
                async with http.request(method, base + path, headers=headers) as with_token:
                    pass
                answers[method, template] = (without.status, with_token.status)
    finally:
        worker.stop()
    answered_without_token = sorted(
        route for route, (status, _) in answers.items() if status != 401
    )
    assert answered_without_token == [
        ("GET", "/health"),
        ("GET", "/ready"),
        ("HEAD", "/health"),
        ("HEAD", "/ready"),
    ]
    assert answers["GET", "/health"][0] == answers["GET", "/ready"][0] == 200
    # Partition ownership is behind the token, on a page of its own.
    assert answers["GET", "/partitions"] == (401, 200)
    assert sorted(route for route, (_, status) in answers.items() if status == 401) == []


async def test_the_token_s_scheme_is_any_case_and_faust_s_pages_404_an_unknown_table(
    kafka_bootstrap: str, sqlite_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    # Before: `bearer <token>` was refused (401), and /router/<unknown table>/ answered 500 with
    # a traceback in the log (/router/<unknown table>/<key>/ a 503, to retry forever).
    worker, _ = make_worker(
        kafka_bootstrap, sqlite_url, topic_prefix, tmp_path, "web", API_TOKEN=TOKEN
    )
    base = f"http://127.0.0.1:{worker.env['WEB_PORT']}"
    worker.start()
    try:
        await wait_ready(worker, TOKEN)
        ready_at = worker.log_path.stat().st_size
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            schemes = {}
            for header in (f"bearer {TOKEN}", f"BEARER {TOKEN}", f"Bearer {TOKEN.upper()}"):
                url = f"{base}/partitions"
                async with http.get(url, headers={"Authorization": header}) as got:
                    schemes[header] = got.status
            pages = {}
            for path in ("/router/no-such-table/", "/router/no-such-table/key/", "/router/planet/"):
                async with http.get(base + path, headers=AUTH) as response:
                    pages[path] = (response.status, await response.json())
    finally:
        worker.stop()
    assert schemes == {
        f"bearer {TOKEN}": 200,
        f"BEARER {TOKEN}": 200,
        f"Bearer {TOKEN.upper()}": 401,  # the token itself is compared exactly
    }
    unknown = {"error": "unknown table", "name": "no-such-table"}
    assert pages["/router/no-such-table/"] == (404, unknown)
    assert pages["/router/no-such-table/key/"] == (404, unknown)
    assert pages["/router/planet/"][0] == 200
    with worker.log_path.open("rb") as file:
        file.seek(ready_at)
        log = file.read().decode(errors="replace")
    assert "Traceback" not in log and "[ERROR]" not in log, log[-5000:]


async def test_a_read_forwarded_to_the_owning_worker_passes_the_token_on(
    kafka_bootstrap: str, pg_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_bootstrap, topic, partitions=4)
    events = planet_stream(400, 40, seed=17)
    await produce(kafka_bootstrap, topic, ((e.key.encode(), e.value) for e in events))
    app_id = f"web-{uuid.uuid4().hex[:8]}"
    workers = [
        WorkerProcess(
            worker_env(
                bootstrap=kafka_bootstrap,
                database_url=pg_url,
                app_id=app_id,
                topic_prefix=topic_prefix,
                data_dir=tmp_path / f"data-{name}",
                API_TOKEN=TOKEN,
            ),
            tmp_path / f"worker-{name}.log",
        )
        for name in ("a", "b")
    ]
    expected = expected_planets(events)
    try:
        for worker in workers:
            worker.start()
        alive = lambda: [worker.assert_alive() for worker in workers]  # noqa: E731
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=alive)
        for worker in workers:
            await wait_ready(worker, TOKEN)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            for worker in workers:
                base = f"http://127.0.0.1:{worker.env['WEB_PORT']}"
                answers = {
                    key: await get_settled(
                        http, f"{base}/entities/planet/{key}", headers=AUTH, alive=workers
                    )
                    for key in expected
                }
                assert answers == {
                    key: (200, {"uuid": key, "name": name}) for key, name in expected.items()
                }
                async with http.get(f"{base}/metrics", headers=AUTH) as response:
                    text = await response.text()
                assert 'result="forwarded"' in text and 'result="local"' in text, base
    finally:
        for worker in workers:
            worker.stop()


#: An entity read by key from SQL (not cached), declared in a module of the test's own.
MOONS = """
from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from models import Base, MirroredEntity


class Moon(MirroredEntity, Base):
    __tablename__ = "servicea_moon"
    __topic__ = "moon-changed"
    __event_fields__ = {"code": "moonCode", "name": "moonName"}
    __cached__ = False

    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
"""


async def test_bad_parameters_are_400_and_a_store_outage_is_503(
    kafka_bootstrap: str, pg_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    (tmp_path / "moons.py").write_text(MOONS)
    database = make_url(pg_url)
    assert database.host is not None and database.port is not None
    proxy = await TcpProxy(database.host, database.port).start()
    worker, _ = make_worker(
        kafka_bootstrap,
        database.set(port=proxy.port).render_as_string(hide_password=False),
        topic_prefix,
        tmp_path,
        "web",
        ENTITY_MODULES="models.planet,moons",
        PYTHONPATH=str(tmp_path),
    )
    base = f"http://127.0.0.1:{worker.env['WEB_PORT']}"
    long_key = "k" * 100_000
    worker.start()
    try:
        await wait_ready(worker)
        # What the requests log comes after this (two entities can race to create the
        # bookkeeping tables at start, which logs a retried error: not what is tested here).
        ready_at = worker.log_path.stat().st_size
        value = b'{"planetUuid": "p-cached", "planetName": "cached"}'
        await produce(kafka_bootstrap, f"{topic_prefix}planet-changed", [(b"p-cached", value)])
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:

            async def answer(path: str) -> tuple[int, str | None]:
                async with http.get(base + path) as response:
                    return response.status, response.headers.get("Retry-After")

            await eventually(
                lambda: answer("/entities/planet/p-cached"),
                lambda got: got[0] == 200,
                what="p-cached read back",
                alive=[worker],
            )
            store_up = {
                path: await answer(path)
                for path in (
                    "/entities/planet?limit=2",
                    "/entities/planet?limit=2&after=%00",
                    "/entities/planet?after=a%00b",
                    "/entities/planet/%00",
                    "/entities/moon/x%00",
                    "/entities/moon/x",
                    f"/entities/planet/{long_key}",
                )
            }
            await proxy.close()
            store_down = {
                path: await answer(path)
                for path in (
                    "/entities/planet?limit=2",
                    "/entities/moon?limit=2",
                    "/entities/moon/x",
                )
            }
            cached = await answer("/entities/planet/p-cached")
            missed = await answer("/entities/planet/not-there")
    finally:
        worker.stop()
        await proxy.close()
    assert store_up == {
        "/entities/planet?limit=2": (200, None),
        "/entities/planet?limit=2&after=%00": (400, None),
        "/entities/planet?after=a%00b": (400, None),
        "/entities/planet/%00": (400, None),
        "/entities/moon/x%00": (400, None),
        "/entities/moon/x": (404, None),
        f"/entities/planet/{long_key}": (400, None),
    }
    assert store_down == dict.fromkeys(store_down, (503, "1"))
    assert cached == (200, None)  # a cached kind is read from its table, not the store
    # A key the table does not hold: only the database can say there is no such entity.
    assert missed == (503, "1")
    with worker.log_path.open("rb") as file:
        file.seek(ready_at)
        log = file.read().decode(errors="replace")
    assert "Traceback" not in log and "[ERROR]" not in log, log[-5000:]
    too_long = [line for line in log.splitlines() if "refused a malformed HTTP request" in line]
    assert len(too_long) == 1 and "[WARNING]" in too_long[0], too_long
