"""The PostgreSQL dev-server helpers that decide names and places, tested without a server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devservices import postgres
from devservices.postgres import DevServiceError

REPO = Path("/src/checkout")


@pytest.mark.parametrize("name", ["a", "_x", "test_1", "t_" + "0" * 61])
def test_accepts_plain_lowercase_names(name: str) -> None:
    assert postgres.validate_database_name(name) == name


@pytest.mark.parametrize("name", ["", "A", "1abc", "a-b", "a b", 'x"; DROP', "é", "t_" + "0" * 62])
def test_rejects_other_names(name: str) -> None:
    with pytest.raises(DevServiceError, match="invalid database name"):
        postgres.validate_database_name(name)


def test_refuses_to_drop_system_database() -> None:
    with pytest.raises(DevServiceError, match="system database"):
        postgres.drop_database("postgresql+psycopg2://u:p@127.0.0.1:1/postgres", "template1")


def test_uses_checkout_cache_when_postgres_can_reach_it() -> None:
    asked: list[Path] = []

    def reachable(path: Path) -> bool:
        asked.append(path)
        return True

    root = postgres.choose_runtime_root(REPO, cache_dir=None, as_root=True, reachable=reachable)
    assert root == REPO / ".cache" / "postgres"
    assert asked == [root]


def test_falls_back_to_var_tmp_when_checkout_is_unreachable() -> None:
    root = postgres.choose_runtime_root(
        REPO, cache_dir=None, as_root=True, reachable=lambda _: False
    )
    assert root.parent == Path("/var/tmp")
    assert root.name.startswith("entity-mirror-postgres-")
    assert root == postgres.fallback_runtime_root(REPO)  # stable across runs
    assert root != postgres.fallback_runtime_root(Path("/src/other"))  # per checkout


def test_non_root_never_asks_and_uses_checkout() -> None:
    def reachable(path: Path) -> bool:
        raise AssertionError("not root: the server runs as us, nothing to check")

    root = postgres.choose_runtime_root(REPO, cache_dir=None, as_root=False, reachable=reachable)
    assert root == REPO / ".cache" / "postgres"


def test_cache_dir_override(tmp_path: Path) -> None:
    root = postgres.choose_runtime_root(
        REPO, cache_dir=str(tmp_path), as_root=True, reachable=lambda _: True
    )
    assert root == tmp_path / "postgres"


def test_unreachable_override_is_an_error_not_a_silent_fallback(tmp_path: Path) -> None:
    with pytest.raises(DevServiceError, match="MIRROR_CACHE_DIR"):
        postgres.choose_runtime_root(
            REPO, cache_dir=str(tmp_path), as_root=True, reachable=lambda _: False
        )


def test_layout_is_per_port() -> None:
    lay = postgres.make_layout(Path("/c/postgres"), 54329)
    assert lay.data == Path("/c/postgres/54329/data")
    assert lay.socket_dir == Path("/c/postgres/54329/run")
    assert lay.log.parent == lay.home
    assert lay.lock == Path("/c/postgres/54329.lock")
    assert postgres.make_layout(Path("/c/postgres"), 54330).data != lay.data


def test_too_long_socket_path_means_tcp_only() -> None:
    lay = postgres.make_layout(Path("/" + "d" * 100), 54329)
    assert lay.socket_dir is None
    assert postgres.server_options(54329, None).startswith("-p 54329 -k '' -c ")


def test_server_options_are_shell_quoted() -> None:
    assert postgres.server_options(5, Path("/a b/run")).startswith("-p 5 -k '/a b/run' -c ")


def test_newest_complete_server_wins(tmp_path: Path) -> None:
    for version, binaries in {
        "13": ("initdb", "pg_ctl", "postgres"),
        "15": ("initdb", "pg_ctl", "postgres"),
        "16": ("pg_ctl",),  # client-only leftovers must not be picked
        "common": ("initdb", "pg_ctl", "postgres"),
    }.items():
        bindir = tmp_path / version / "bin"
        bindir.mkdir(parents=True)
        for binary in binaries:
            (bindir / binary).touch()
    assert postgres.newest_bindir(tmp_path) == tmp_path / "15" / "bin"
    assert postgres.newest_bindir(tmp_path / "missing") is None


def test_server_url() -> None:
    assert postgres.server_url(54329) == (
        "postgresql+psycopg2://mirror:mirror@127.0.0.1:54329/postgres"
    )


def test_cli_url_and_bad_port(capsys: pytest.CaptureFixture[str]) -> None:
    assert postgres.main(["url"]) == 0
    assert capsys.readouterr().out.strip() == postgres.server_url(postgres.DEFAULT_PORT)
    assert postgres.main(["url", "--port", "80"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "out of range" in err


def test_import_needs_only_the_standard_library() -> None:
    code = (
        "import sys, devservices.postgres; "
        "print(sorted(m for m in ('sqlalchemy', 'psycopg2') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(postgres.__file__).parent.parent,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "[]"
