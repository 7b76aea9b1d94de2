"""The start-up check that Faust's settings are the ones the worker's settings chose."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from yarl import URL

from streams.ops.preflight import faust_conf_problem
from streams.settings import Settings


def conf_of(settings: Settings, **changed: Any) -> SimpleNamespace:
    """Return Faust's settings as the worker's app gets them, with ``changed`` set after."""
    values: dict[str, Any] = {
        "web_enabled": True,
        "web_port": settings.web_port,
        "web_bind": settings.web_host,
        "web_host": settings.web_host,
        "web_transport": URL("tcp://"),
        "canonical_url": URL(settings.advertised_url),
        "broker": [URL(part) for part in settings.kafka_broker.split(";")],
        "datadir": Path(settings.data_path),
    }
    return SimpleNamespace(**{**values, **changed})


def test_faust_s_settings_as_the_worker_chose_them_pass(tmp_path: Path) -> None:
    settings = Settings.from_env({"KAFKA_BROKER": "h1:9092;h2:9092"}, cwd=tmp_path)
    assert faust_conf_problem(conf_of(settings), settings) is None


def test_faust_s_worker_options_are_refused_in_one_line(tmp_path: Path) -> None:
    settings = Settings.from_env({"WEB_PORT": "6100"}, cwd=tmp_path)
    # What `faust worker --web-port 7000 --web-bind 0.0.0.0` sets after the app is built.
    conf = conf_of(
        settings, web_port=7000, web_bind="0.0.0.0", canonical_url=URL("http://127.0.0.1:7000")
    )
    problem = faust_conf_problem(conf, settings)
    assert problem == (
        "Faust's settings were changed after the worker chose them (web_port '7000' where "
        "WEB_PORT says '6100', web_bind '0.0.0.0' where WEB_HOST says '127.0.0.1', canonical_url "
        "'http://127.0.0.1:7000' where CANONICAL_URL says 'http://127.0.0.1:6100'); leave out "
        "faust's --web-bind, --web-port and configure the worker with its environment "
        "variables only"
    )
    without_web = faust_conf_problem(conf_of(settings, web_enabled=False), settings)
    assert without_web is not None and "--without-web" in without_web
