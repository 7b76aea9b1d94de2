"""``python -m devservices stop-all`` stops every service, MariaDB included, whatever fails."""

from __future__ import annotations

import pytest

from devservices import kafka, kafka_secure, mariadb, postgres
from devservices.__main__ import main
from devservices.dbserver import DevServiceError


def test_one_service_failing_to_stop_does_not_keep_the_others_up(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stopped: list[str] = []

    def no_postgres_user() -> None:
        raise DevServiceError("system user 'postgres' does not exist")

    monkeypatch.setattr(kafka, "stop", lambda nodes: stopped.append(f"kafka {nodes}"))
    monkeypatch.setattr(kafka_secure, "stop", lambda: stopped.append("kafka secure"))
    monkeypatch.setattr(postgres, "stop", no_postgres_user)
    monkeypatch.setattr(mariadb, "stop", lambda: stopped.append("mariadb"))

    assert main(["stop-all"]) == 1
    assert stopped == ["kafka 1", "kafka 3", "kafka secure", "mariadb"]
    assert capsys.readouterr().err == (
        "devservices: error: could not stop postgres: system user 'postgres' does not exist\n"
    )
