"""Settings from the environment: defaults, normalisation, and errors naming the variable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streams.core.errors import SettingsError
from streams.settings import ENVIRONMENT, Settings


def test_defaults_use_the_local_broker_and_a_sqlite_file_in_the_working_directory(
    tmp_path: Path,
) -> None:
    settings = Settings.from_env({}, cwd=tmp_path)
    assert settings.kafka_broker == "kafka://127.0.0.1:9092"
    assert settings.database_url == f"sqlite:///{tmp_path / 'mirror.sqlite3'}"
    assert settings.app_id == "entity-mirror"
    assert settings.web_port == 6066
    assert settings.is_sqlite


def test_values_are_read_and_normalised(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "KAFKA_BROKER": "127.0.0.1:9092, kafka://127.0.0.2:9093",
            "DATABASE_URL": "postgresql://u:p@127.0.0.1:5432/db",
            "APP_ID": "mirror-1",
            "WEB_PORT": "6100",
            "TOPIC_PARTITIONS": "8",
            "BATCH_SIZE": "500",
            "BATCH_WAIT": "0.05",
        },
        cwd=tmp_path,
    )
    assert settings.kafka_broker == "kafka://127.0.0.1:9092;kafka://127.0.0.2:9093"
    assert settings.broker_hosts == ["127.0.0.1:9092", "127.0.0.2:9093"]
    # A plain postgresql:// would select psycopg 3 in SQLAlchemy 2.1, which is not installed.
    assert settings.database_url == "postgresql+psycopg2://u:p@127.0.0.1:5432/db"
    assert (settings.app_id, settings.web_port, settings.topic_partitions) == ("mirror-1", 6100, 8)
    assert (settings.batch_size, settings.batch_wait) == (500, 0.05)
    assert not settings.is_sqlite


def test_the_database_password_is_masked_for_display_and_left_out_of_repr(
    tmp_path: Path,
) -> None:
    settings = Settings.from_env({"DATABASE_URL": "postgresql://u:s3cr%40t@h/db"}, cwd=tmp_path)
    assert settings.database_url == "postgresql+psycopg2://u:s3cr%40t@h/db"
    assert settings.database_url_safe == "postgresql+psycopg2://u:***@h/db"
    assert "s3cr" not in repr(settings)


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("mysql://u:p@h:3306/db", "mysql+pymysql://u:p@h:3306/db"),
        ("mariadb://u:p@h/db", "mariadb+pymysql://u:p@h/db"),
        ("mysql+pymysql://u:p@h/db", "mysql+pymysql://u:p@h/db"),
    ],
)
def test_a_plain_mysql_or_mariadb_url_selects_pymysql(
    given: str, used: str, tmp_path: Path
) -> None:
    # SQLAlchemy's default MySQL driver is mysqlclient, which the project does not install.
    settings = Settings.from_env({"DATABASE_URL": given}, cwd=tmp_path)
    assert settings.database_url == used


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KAFKA_BROKER", "http://127.0.0.1:9092"),
        ("KAFKA_BROKER", "127.0.0.1"),
        ("KAFKA_BROKER", "kafka://127.0.0.1:99999"),
        ("KAFKA_BROKER", " "),
        ("DATABASE_URL", "not a url"),
        ("DATABASE_URL", "mssql://u@h/db"),
        ("DATABASE_URL", "mysql+mysqldb://u@h/db"),
        ("DATABASE_URL", "mariadb://u@h"),
        ("DATABASE_URL", "postgresql+asyncpg://u@h/db"),
        ("DATABASE_URL", "postgresql://u@h"),
        ("APP_ID", "has space"),
        ("APP_ID", ""),
        ("WEB_PORT", "http"),
        ("WEB_PORT", "0"),
        ("WEB_PORT", "70000"),
        ("TOPIC_PARTITIONS", "0"),
        ("BATCH_SIZE", "-1"),
        ("BATCH_WAIT", "soon"),
        ("LOG_LEVEL", "loud"),
        ("TOPIC_PREFIX", "a b"),
        ("ENTITY_MODULES", "not a module"),
    ],
)
def test_a_bad_value_fails_naming_the_variable(name: str, value: str, tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({name: value}, cwd=tmp_path)
    assert name in str(info.value)
    assert "\n" not in str(info.value)


def test_every_documented_variable_has_a_default_that_parses(tmp_path: Path) -> None:
    env = dict(ENVIRONMENT)
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    Settings.from_env(env, cwd=tmp_path)


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = Settings.from_env({}, cwd=tmp_path)
    with pytest.raises(AttributeError):
        settings.app_id = "other"  # type: ignore[misc]


def test_kafka_security_settings_map_to_faust_and_aiokafka(tmp_path: Path) -> None:
    import faust

    from streams.worker import broker_credentials

    plain = Settings.from_env({}, cwd=tmp_path)
    assert plain.kafka_client_options() == {"security_protocol": "PLAINTEXT"}
    assert broker_credentials(plain) is None
    sasl = Settings.from_env(
        {
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": "mirror",
            "KAFKA_SASL_PASSWORD": "s3cret",
        },
        cwd=tmp_path,
    )
    options = sasl.kafka_client_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("mirror", "s3cret")
    assert options["ssl_context"] is not None
    credentials = broker_credentials(sasl)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.username == "mirror" and credentials.ssl_context is not None
    assert "s3cret" not in repr(sasl)  # secrets stay out of logs
    ssl_only = Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "SSL"}, cwd=tmp_path)
    assert isinstance(broker_credentials(ssl_only), faust.SSLCredentials)


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "KERBEROS"}, "KAFKA_SECURITY_PROTOCOL"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "KAFKA_SASL_USERNAME"),
        ({"KAFKA_SASL_MECHANISM": "MD5"}, "KAFKA_SASL_MECHANISM"),
        ({"KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "KAFKA_SSL_CAFILE"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"DLQ_SUFFIX": "has space"}, "DLQ_SUFFIX"),
    ],
)
def test_bad_security_and_logging_values_name_the_variable(
    env: dict[str, str], name: str, tmp_path: Path
) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env(env, cwd=tmp_path)


def test_the_readme_table_lists_every_variable_with_its_declared_default() -> None:
    import re

    from streams.settings import secret_files, shown_default, variables

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n#", 1)[0]
    rows = [line.split("|")[1:3] for line in section.splitlines() if line.startswith("| `")]
    declared = variables()
    files = secret_files()
    documented: set[str] = set()
    for names_cell, default_cell in rows:
        names = re.findall(r"`([A-Z_*]+)`", names_cell)
        matched = {
            name
            for pattern in names
            for name in [*declared, *files]
            if name == pattern or (pattern.endswith("*") and name.startswith(pattern[:-1]))
        }
        assert matched, f"the README documents {names}, which the settings do not declare"
        documented |= matched
        if len(names) == 1 and not names[0].endswith("*") and names[0] in declared:
            variable, default = declared[names[0]]
            want = shown_default(variable, default)
            shown = default_cell.strip()
            assert shown in (f"`{want}`", want) or (want == "" and shown == "empty"), (
                f"README says {names[0]} defaults to {shown}; the settings say {want!r}"
            )
    assert documented == {*declared, *files}, {*declared, *files} - documented


def test_faust_s_variables_are_not_read_but_named(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "KAFKA_BROKER": "kafka://127.0.0.1:9092",
            "BROKER_URL": "kafka://other-cluster:9092",
            "WEB_BIND": "0.0.0.0",
            "FAUST_DATADIR": "/elsewhere",  # what faust's --datadir sets
            "TIMEZONE": "UTC",  # Faust's too, but nothing of the worker's: not named
        },
        cwd=tmp_path,
    )
    assert settings.kafka_broker == "kafka://127.0.0.1:9092"
    assert settings.ignored_faust_variables == ("BROKER_URL", "WEB_BIND", "FAUST_DATADIR")
    assert settings.ignored_variables_warning() == (
        "BROKER_URL, WEB_BIND, FAUST_DATADIR are Faust's and not read by this worker: it is "
        "configured by DATA_DIR, KAFKA_BROKER, WEB_HOST instead"
    )
    assert Settings.from_env({}, cwd=tmp_path).ignored_variables_warning() is None


def test_data_dir_defaults_to_one_per_app_id(tmp_path: Path) -> None:
    assert Settings.from_env({"APP_ID": "m1"}, cwd=tmp_path).data_path == "m1-data"
    assert Settings.from_env({"DATA_DIR": "/d"}, cwd=tmp_path).data_path == "/d"


SECRETS = {
    "DATABASE_URL": ("postgresql://u:pw@h/db", "database_url", "postgresql+psycopg2://u:pw@h/db"),
    "KAFKA_SASL_PASSWORD": ("s3cret ", "kafka_sasl_password", "s3cret "),
    "API_TOKEN": ("t0ken", "api_token", "t0ken"),
}


@pytest.mark.parametrize("name", sorted(SECRETS))
@pytest.mark.parametrize("ending", ["\n", "\r\n", ""])
def test_a_secret_is_read_from_the_file_its_file_variable_names(
    name: str, ending: str, tmp_path: Path
) -> None:
    text, attribute, value = SECRETS[name]
    secret = tmp_path / "secret"
    secret.write_bytes((text + ending).encode())
    settings = Settings.from_env({f"{name}_FILE": str(secret)}, cwd=tmp_path)
    assert getattr(settings, attribute) == value  # one trailing newline is not the secret's


def test_only_one_trailing_newline_is_cut_from_a_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text(" t0ken \n\n")
    settings = Settings.from_env({"API_TOKEN_FILE": str(secret)}, cwd=tmp_path)
    assert settings.api_token == " t0ken \n"


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_a_secret_set_both_ways_is_one_clear_error(name: str, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-the-file")
    env = {name: "from-the-variable", f"{name}_FILE": str(secret)}
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env, cwd=tmp_path)
    assert str(info.value) == (
        f"{name} and {name}_FILE are both set; set one of them "
        f"({name}_FILE names a file holding {name})"
    )
    assert "from-the" not in str(info.value)


def test_an_empty_variable_beside_its_file_counts_as_unset(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("t0ken\n")
    env = {"API_TOKEN": "", "API_TOKEN_FILE": str(secret), "DATABASE_URL_FILE": ""}
    settings = Settings.from_env(env, cwd=tmp_path)
    assert settings.api_token == "t0ken"
    assert settings.database_url == f"sqlite:///{tmp_path / 'mirror.sqlite3'}"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda path: None, "No such file or directory"),
        (lambda path: path.mkdir(), "Is a directory"),
        (lambda path: path.write_bytes(b"\xff\xfe-not-utf8"), "utf-8"),
    ],
)
def test_an_unreadable_secret_file_is_one_line_naming_the_variable_and_path(
    make: Any, reason: str, tmp_path: Path
) -> None:
    path = tmp_path / "secret"
    make(path)
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"KAFKA_SASL_PASSWORD_FILE": str(path)}, cwd=tmp_path)
    message = str(info.value)
    assert message.startswith(f"KAFKA_SASL_PASSWORD_FILE {str(path)!r} cannot be read: ")
    assert reason in message and "\n" not in message


def test_a_secret_read_from_a_file_is_checked_like_the_variable(tmp_path: Path) -> None:
    secret = tmp_path / "url"
    secret.write_text("nosuchdb://x/y\n")
    with pytest.raises(SettingsError, match="DATABASE_URL backend 'nosuchdb' is not supported"):
        Settings.from_env({"DATABASE_URL_FILE": str(secret)}, cwd=tmp_path)


def test_the_file_variants_are_of_the_secrets_only() -> None:
    from streams.settings import secret_files

    assert secret_files() == {f"{name}_FILE": name for name in SECRETS}
    assert {f"{name}_FILE" for name in SECRETS} <= set(ENVIRONMENT)
