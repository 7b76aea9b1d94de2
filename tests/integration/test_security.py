"""Kafka over SASL_SSL (SCRAM-SHA-512, a test CA), against a real broker configured that way.

A worker and the commands work end to end over it; each way of getting the settings wrong
is one line naming what to fix, not "cannot reach Kafka" (streams/kafka/broker_failures.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
import trustme

from devservices.kafka_secure import SASL_PASSWORD
from tests.integration.test_mirror import http_get, read_planets
from tests.support import (
    Broker,
    assert_status_and_verify,
    create_topic,
    error_lines,
    expected_planets,
    free_port,
    get_settled,
    make_worker,
    metric_value,
    planet_stream,
    produce,
    run_cli,
    run_worker_to_exit,
    wait_caught_up,
    wait_ready,
)

#: Settings that cannot work, and the start of the one line saying why ({secure} and
#: {plain}: the SASL_SSL broker and the PLAINTEXT single node).
WRONG_SETTINGS = {
    "wrong password": (
        {"KAFKA_SASL_PASSWORD": "not-the-password"},
        "error: Kafka at {secure} refused the SASL login of KAFKA_SASL_USERNAME 'mirror' with "
        "KAFKA_SASL_MECHANISM SCRAM-SHA-512: Authentication failed during authentication due "
        "to invalid credentials with SASL mechanism SCRAM-SHA-512; fix KAFKA_SASL_USERNAME / "
        "KAFKA_SASL_PASSWORD / KAFKA_SASL_MECHANISM",
    ),
    "untrusted CA": (
        {"KAFKA_SSL_CAFILE": "{other_ca}"},
        "error: cannot verify the TLS certificate of Kafka at {secure}: "
        "CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate; set "
        "KAFKA_SSL_CAFILE (now {other_ca}) to the CA that signed the brokers' certificates",
    ),
    "PLAINTEXT client, SASL_SSL listener": (
        {"KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"},
        "error: Kafka at {secure} does not speak KAFKA_SECURITY_PROTOCOL PLAINTEXT: it "
        "answered in TLS; set KAFKA_SECURITY_PROTOCOL to its listener's protocol "
        "(SSL or SASL_SSL)",
    ),
    "SASL_SSL client, PLAINTEXT listener": (
        {"KAFKA_BROKER": "kafka://{plain}"},
        "error: Kafka at {plain} does not speak KAFKA_SECURITY_PROTOCOL SASL_SSL: it broke off "
        "the TLS handshake; set KAFKA_SECURITY_PROTOCOL to its listener's protocol "
        "(PLAINTEXT or SASL_PLAINTEXT)",
    ),
}


@pytest.mark.parametrize("case", sorted(WRONG_SETTINGS))
def test_wrong_security_settings_are_one_line_naming_what_to_fix(
    case: str, kafka_secure: Broker, kafka_bootstrap: str, sqlite_url: str, tmp_path: Path
) -> None:
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    names = {"secure": kafka_secure.bootstrap, "plain": kafka_bootstrap, "other_ca": other_ca}
    changes, expected = WRONG_SETTINGS[case]
    env = {
        **kafka_secure.security,
        "KAFKA_BROKER": f"kafka://{kafka_secure.bootstrap}",
        **{name: value.format(**names) for name, value in changes.items()},
        "DATABASE_URL": sqlite_url,
        "WEB_PORT": str(free_port()),
        "APP_ID": "wrong-security",
        "DATA_DIR": str(tmp_path / "data"),
    }
    line = expected.format(**names)
    done = run_worker_to_exit(env, tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert error_lines(output) == [line]
    assert "Traceback" not in output and SASL_PASSWORD not in output
    status = run_cli(env, "status")
    assert status.returncode == 1, status.stdout + status.stderr
    assert status.stderr.splitlines() == [line]


async def test_a_worker_and_the_commands_work_over_sasl_ssl(
    kafka_secure: Broker, pg_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    topic = f"{topic_prefix}planet-changed"
    await create_topic(kafka_secure, topic, partitions=4)
    events = planet_stream(800, 40, seed=29, poison_every=50)
    await produce(kafka_secure, topic, ((e.key.encode(), e.value) for e in events))
    worker, app_id = make_worker(kafka_secure, pg_url, topic_prefix, tmp_path, "sasl-ssl")
    env = dict(worker.env)
    assert (env["KAFKA_SECURITY_PROTOCOL"], env["KAFKA_SASL_MECHANISM"]) == (
        "SASL_SSL",
        "SCRAM-SHA-512",
    )
    expected = expected_planets(events)
    base = f"http://127.0.0.1:{env['WEB_PORT']}"
    worker.start()
    try:
        await wait_ready(worker)
        await wait_caught_up(kafka_secure, app_id, topic, alive=worker.assert_alive)
        assert read_planets(pg_url) == expected
        # Reads by key come from the cached table, whose changelog is on the secure broker too;
        # 503 only while the group settles.
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            for key, name in sorted(expected.items())[:5]:
                answer = await get_settled(
                    http, f"{base}/entities/planet/{key}", timeout=60, alive=[worker]
                )
                assert answer == (200, {"uuid": key, "name": name})
        _, metrics = await asyncio.to_thread(http_get, f"{base}/metrics")
        assert metric_value(metrics, 'mirror_entity_reads_total{entity="planet",result="local"}')
    finally:
        assert worker.stop() == "SIGTERM"

    assert_status_and_verify(env, topic, app_id, len(expected))
