"""The Prometheus dev-server helpers that decide names and places, tested without a server;
one start and stop of a real server (Debian's package, installed on first use)."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from devservices import prometheus


def test_both_programs_are_needed() -> None:
    bins = {"prometheus": "/usr/bin/prometheus", "promtool": "/usr/bin/promtool"}
    assert prometheus.find_binaries(bins.get) == prometheus.Binaries(
        Path("/usr/bin/prometheus"), Path("/usr/bin/promtool")
    )
    assert prometheus.find_binaries({"prometheus": "/usr/bin/prometheus"}.get) is None
    assert prometheus.find_binaries({}.get) is None


def test_servers_live_under_the_cache_dir(tmp_path: Path) -> None:
    assert prometheus.runtime_root(str(tmp_path)) == tmp_path / "prometheus"


def test_the_server_keeps_its_files_in_its_folder_and_listens_on_loopback() -> None:
    bins = prometheus.Binaries(Path("/bin/prometheus"), Path("/bin/promtool"))
    home = Path("/cache/prometheus/9999")
    assert prometheus.server_args(bins, home, 9999)[:4] == [
        "/bin/prometheus",
        "--config.file=/cache/prometheus/9999/prometheus.yml",
        "--storage.tsdb.path=/cache/prometheus/9999/data",
        "--web.listen-address=127.0.0.1:9999",
    ]


def test_a_server_starts_answers_and_leaves_nothing_behind() -> None:
    config = "global:\n  scrape_interval: 15s\nrule_files: [rules.yml]\n"
    rules = "groups:\n  - name: g\n    rules:\n      - record: one\n        expr: vector(1)\n"
    with prometheus.running(config, files={"rules.yml": rules}) as server:
        with urllib.request.urlopen(f"{server.url}/api/v1/rules", timeout=10) as answer:
            assert b'"name":"one"' in answer.read()
        home = server.home
        assert (home / "data").is_dir()
    assert server.process.poll() is not None
    assert not home.exists()
