"""The alert rules (deploy/prometheus/alerts.yml) in Debian's Prometheus: their unit tests in
``promtool test rules``, and a real server scraping a real worker whose database goes away.

The database stopped is a private PostgreSQL started for this test on a port of its own, never
the suite's shared one.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devservices import postgres as dev_postgres
from devservices import prometheus
from streams import __version__
from tests.support import ROOT, create_topic, free_port, make_worker, produce, wait_caught_up
from tests.support import wait_ready as wait_worker_ready
from tests.waiting import eventually

RULES_DIR = ROOT / "deploy" / "prometheus"


def test_promtool_checks_the_rules_and_passes_their_unit_tests() -> None:
    checked = prometheus.promtool("check", "rules", str(RULES_DIR / "alerts.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 11 rules found" in checked.stdout
    tested = prometheus.promtool("test", "rules", str(RULES_DIR / "alerts.test.yml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def quick_rules(seconds: int) -> str:
    """Return alerts.yml with every ``for`` cut to ``seconds``: the expressions as shipped,
    the waits short enough for a test."""
    rules = yaml.safe_load((RULES_DIR / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = f"{seconds}s"
    return str(yaml.safe_dump(rules, sort_keys=False))


def scrape_config(worker_port: str) -> str:
    """A job named as alerts.yml expects, scraping every second with the worker's token."""
    return yaml.safe_dump(
        {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["alerts.yml"],
            "scrape_configs": [
                {
                    "job_name": "entity-mirror",
                    "scrape_timeout": "1s",
                    "authorization": {"type": "Bearer", "credentials_file": "token"},
                    "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}],
                }
            ],
        }
    )


def api(server: prometheus.PrometheusServer, path: str, **query: str) -> Any:
    """Return the ``data`` of one Prometheus HTTP API answer."""
    url = f"{server.url}/api/v1/{path}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    with urllib.request.urlopen(url, timeout=10) as answer:
        body = json.load(answer)
    assert body["status"] == "success", body
    return body["data"]


def dashboard_queries() -> list[str]:
    """Return the dashboard's panel queries with its variables as Grafana fills them in."""
    board = json.loads((ROOT / "deploy" / "grafana" / "dashboard.json").read_text())
    found = []
    stack = list(board["panels"])
    while stack:
        panel = stack.pop()
        stack.extend(panel.get("panels", []))
        found.extend(target["expr"] for target in panel.get("targets", []))
    filled = {"$job": "entity-mirror", "$entity": ".*", "$__rate_interval": "1m"}
    filled["$__range"] = "5m"
    for variable, value in sorted(filled.items(), key=lambda item: -len(item[0])):
        found = [query.replace(variable, value) for query in found]
    return found


def firing(server: prometheus.PrometheusServer) -> dict[str, dict[str, str]]:
    """Return the alerts firing now, by name, with their labels."""
    return {
        alert["labels"]["alertname"]: alert["labels"]
        for alert in api(server, "alerts")["alerts"]
        if alert["state"] == "firing"
    }


@pytest.fixture
def private_postgres() -> Iterator[tuple[int, str]]:
    """A PostgreSQL server of this test alone (port, URL), removed with its data afterwards."""
    port = free_port()
    url = dev_postgres.start(port)
    try:
        yield port, url
    finally:
        dev_postgres.reset(port)
        dev_postgres.layout(port).lock.unlink(missing_ok=True)  # no lock file per test run


async def test_a_real_prometheus_alerts_when_the_workers_database_stops(
    kafka_bootstrap: str,
    private_postgres: tuple[int, str],
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    db_port, db_url = private_postgres
    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_bootstrap, topic, partitions=4)
    token = uuid.uuid4().hex
    worker, app_id = make_worker(
        kafka_bootstrap, db_url, topic_prefix, tmp_path, "alerts", API_TOKEN=token
    )
    instance = f"127.0.0.1:{worker.env['WEB_PORT']}"

    def planets(count: int) -> list[tuple[bytes, bytes]]:
        keys = [str(uuid.uuid4()) for _ in range(count)]
        return [
            (k.encode(), json.dumps({"planetUuid": k, "planetName": f"p{i}"}).encode())
            for i, k in enumerate(keys)
        ]

    server = await asyncio.to_thread(
        prometheus.start,
        scrape_config(worker.env["WEB_PORT"]),
        files={"alerts.yml": quick_rules(3), "token": token},
    )
    try:
        worker.start()
        await wait_worker_ready(worker, token)
        await produce(kafka_bootstrap, topic, planets(20))
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)

        # Prometheus scrapes the worker, with the token: its build and its counters are there.
        def scraped() -> list[Any]:
            found = api(server, "query", query='mirror_build_info{job="entity-mirror"}')
            return list(found["result"])

        build = await eventually(scraped, bool, what="mirror_build_info scraped", alive=[worker])
        assert build[0]["metric"]["version"] == __version__
        assert build[0]["metric"]["instance"] == instance
        assert "MirrorBatchesRetrying" not in firing(server)
        # Every query of the Grafana dashboard is one Prometheus takes (valid PromQL).
        for query in dashboard_queries():
            try:
                result = api(server, "query", query=query)["result"]
            except urllib.error.HTTPError as exc:
                raise AssertionError(f"{query}: {exc.read().decode()}") from exc
            assert isinstance(result, list)

        await asyncio.to_thread(dev_postgres.stop, db_port)
        await produce(kafka_bootstrap, topic, planets(20))

        alerts = await eventually(
            lambda: asyncio.to_thread(firing, server),
            lambda now: "MirrorBatchesRetrying" in now,
            what="MirrorBatchesRetrying firing in Prometheus",
            timeout=120,
            every=0.5,
            alive=[worker],
        )
        assert alerts["MirrorBatchesRetrying"]["instance"] == instance
        assert alerts["MirrorBatchesRetrying"]["severity"] == "critical"
        assert "MirrorWorkerDown" not in alerts  # the worker answers: only its database is gone

        # The database back: the records held meanwhile are applied, none lost.
        await asyncio.to_thread(dev_postgres.start, db_port)
        await wait_caught_up(kafka_bootstrap, app_id, topic, alive=worker.assert_alive)
    finally:
        await asyncio.to_thread(prometheus.stop, server)
        worker.stop()
