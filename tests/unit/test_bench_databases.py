"""The bench on MariaDB beside PostgreSQL (``--databases``): which paths run where, Debezium's
sink settings for each database, the server found by its port, and the report's rows."""

from __future__ import annotations

import sys
import types

import pytest

from bench import procfs, report
from bench.cpu import PARTS
from bench.mirror_bench import choose_paths, parse_args
from bench.peers import debezium
from bench.scenarios import Results, Run
from bench.servers import Databases
from bench.workload import Workload

PG_URL = "postgresql+psycopg2://mirror:mirror@127.0.0.1:54329/bench_x_steady_debezium"
MARIADB_URL = "mysql+pymysql://mirror:mirror@127.0.0.1:33069/bench_x_steady_debezium_mariadb"


def _names_and_databases(argv: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    every, main = choose_paths(parse_args(argv))
    return [(p.name, p.database) for p in every], [p.name for p in main]


def test_by_default_every_path_writes_to_postgresql() -> None:
    every, main = _names_and_databases(["--peers"])
    assert {database for _, database in every} == {"postgresql"}
    assert main == ["mirror", "quix", "debezium"]


def test_mariadb_adds_the_worker_and_debezium_after_the_postgresql_paths() -> None:
    every, main = _names_and_databases(["--peers", "--databases", "postgresql,mariadb"])
    assert every == [
        ("mirror", "postgresql"),
        ("quix", "postgresql"),
        ("debezium", "postgresql"),
        ("mirror_uncached", "postgresql"),
        ("mirror_x2", "postgresql"),
        ("mirror_mariadb", "mariadb"),
        ("debezium_mariadb", "mariadb"),
    ]
    assert main == ["mirror", "quix", "debezium", "mirror_mariadb", "debezium_mariadb"]


def test_mariadb_alone_runs_only_the_chosen_paths_there() -> None:
    argv = ["--peers", "--databases", "mariadb", "--paths", "debezium"]
    assert _names_and_databases(argv) == ([("debezium_mariadb", "mariadb")], ["debezium_mariadb"])


def test_an_unknown_database_is_refused() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--databases", "postgresql,oracle"])


def _settings(db_url: str) -> dict[str, str]:
    text = debezium.sink_config(db_url, name="n", topic="t", batch=5000)
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return dict(pairs)


def test_debezium_on_mariadb_has_postgresqls_settings_but_the_jdbc_url() -> None:
    on_pg, on_mariadb = _settings(PG_URL), _settings(MARIADB_URL)
    assert on_mariadb.pop("connection.url") == (
        "jdbc:mariadb://127.0.0.1:33069/bench_x_steady_debezium_mariadb?useServerPrepStmts=true"
    )
    assert on_pg.pop("connection.url").startswith("jdbc:postgresql://127.0.0.1:54329/")
    assert on_mariadb == on_pg
    assert on_pg["insert.mode"] == "upsert" and on_pg["delete.enabled"] == "true"


def test_a_database_without_a_jdbc_url_is_refused() -> None:
    with pytest.raises(ValueError, match="no JDBC URL for sqlite"):
        debezium.jdbc_url("sqlite:///x.db")


TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:8121 00000000:0000 0A 00000000:00000000 00:00000000 00000000   102        0 4242 1
   1: 0100007F:8121 0100007F:D000 01 00000000:00000000 00:00000000 00000000   102        0 4343 1
   2: 0100007F:D3F1 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1
"""


def test_the_server_is_the_listener_on_its_port() -> None:
    assert procfs.listening_inodes(TCP, 33057) == {4242}  # 0x8121, LISTEN only
    assert procfs.listening_inodes(TCP, 54257) == {4444}
    assert procfs.listening_inodes(TCP, 1) == set()


def test_databases_are_made_on_the_paths_server_and_dropped_at_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, ...]] = []
    fake = types.SimpleNamespace(
        start=lambda: "mysql+pymysql://m:m@127.0.0.1:33069/mirror",
        create_database=lambda url, name: calls.append(("create", name)) or f"{url}/{name}",
        drop_database=lambda url, name: calls.append(("drop", name)),
    )
    monkeypatch.setitem(sys.modules, "devservices.mariadb", fake)
    databases = Databases("r1")
    databases.fresh("steady_mirror_mariadb", "mariadb")
    databases.drop_all()
    assert calls == [
        ("create", "bench_r1_steady_mirror_mariadb"),
        ("drop", "bench_r1_steady_mirror_mariadb"),
    ]


def _run(path: str, rate: float) -> Run:
    figures = {"events_per_s": rate, "seconds": 1.0, "peak_rss_mb": 9.0}
    figures.update({f"cpu_us_{p}": 1.0 for p in PARTS})
    return Run(path, "steady", 1000, figures=figures, table_errors=0)


def test_mariadb_rows_sit_beside_postgresqls_with_their_ratios() -> None:
    results = Results()
    results.workloads["steady"] = Workload("steady", "steady state", 1000, 100, 1)
    for path, rate in (
        ("mirror", 400.0),
        ("debezium", 200.0),
        ("mirror_mariadb", 300.0),
        ("debezium_mariadb", 100.0),
    ):
        results.runs[("steady", path)] = _run(path, rate)
    summary = report.summarize(results, {})
    assert summary["steady_mirror_vs_debezium"] == 2.0
    assert summary["steady_mirror_mariadb_vs_debezium_mariadb"] == 3.0
    assert summary["steady_mirror_mariadb_vs_mirror"] == 0.75
    assert summary["steady_debezium_mariadb_cpu_us_database"] == 1.0
    lines: list[str] = []
    report.print_report(results, summary, lines.append)
    assert (
        "| workload | worker | Debezium | worker / Debezium | worker / worker on PostgreSQL |"
        in lines
    )
    assert "| steady state | 400 | 200 | **2.00** |  |" in lines
    assert "| steady state, on MariaDB | 300 | 100 | **3.00** | **0.75** |" in lines
    assert "| steady state, on MariaDB | 1 / 1 / 1 / 1 / 1 | 1 / 1 / 1 / 1 / 1 |" in lines
    assert (
        "| steady | Debezium on MariaDB | 100 | 1.00 | 1 / 1 / 1 / 1 / 1 | 9.0 | - | ok |" in lines
    )
