"""Reading settings from the environment: every malformed value is one clear sentence."""

from __future__ import annotations

from pathlib import Path

import pytest

from onwatch.config import (
    ConfigError,
    base_url,
    data_dir,
    database_from_url,
    env,
    env_bool,
    env_int,
    plain_http_over_network,
    redact,
)

SQLITE = Path("/srv/onwatch/onwatch.sqlite3")


def test_a_variable_can_come_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("ONWATCH_THING_FILE", str(secret))
    monkeypatch.setenv("ONWATCH_THING", "ignored")
    assert env("ONWATCH_THING") == "s3cret"


def test_an_unreadable_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONWATCH_THING_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"ONWATCH_THING_FILE=.* cannot be read"):
        env("ONWATCH_THING")


@pytest.mark.parametrize(
    ("raw", "value"), [("", True), ("yes", True), ("On", True), ("0", False), ("false", False)]
)
def test_yes_no_values(monkeypatch: pytest.MonkeyPatch, raw: str, value: bool) -> None:
    monkeypatch.setenv("ONWATCH_FLAG", raw)
    assert env_bool("ONWATCH_FLAG", True) is value


def test_a_yes_no_value_that_is_neither_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONWATCH_FLAG", "maybe")
    with pytest.raises(ConfigError, match="'maybe' is not a yes/no value; use true or false"):
        env_bool("ONWATCH_FLAG", False)


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("abc", "ONWATCH_N='abc' is not a whole number; use e.g. 8000"),
        ("0", "ONWATCH_N=0 is out of range; use a number between 1 and 65535"),
        ("65536", "ONWATCH_N=65536 is out of range; use a number between 1 and 65535"),
    ],
)
def test_numbers(monkeypatch: pytest.MonkeyPatch, raw: str, says: str) -> None:
    monkeypatch.setenv("ONWATCH_N", raw)
    with pytest.raises(ConfigError) as refused:
        env_int("ONWATCH_N", 8000, minimum=1, maximum=65535)
    assert str(refused.value) == says
    monkeypatch.setenv("ONWATCH_N", " 8080 ")
    assert env_int("ONWATCH_N", 8000, minimum=1, maximum=65535) == 8080


def test_the_data_dir_defaults_to_xdg_data_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ONWATCH_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert data_dir() == tmp_path / "onwatch"
    monkeypatch.setenv("ONWATCH_DATA_DIR", "relative/dir")
    assert data_dir().is_absolute()


def test_a_base_url_gives_scheme_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONWATCH_BASE_URL", "https://ops.example.com:8443/")
    site = base_url("http://localhost:8000")
    assert (site.https, site.host, site.port, site.origin) == (
        True,
        "ops.example.com",
        8443,
        "https://ops.example.com:8443",
    )


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("notaurl", "is not a web address; use e.g. https://onwatch.example.com"),
        ("ftp://example.com", "is not a web address"),
        ("http://example.com:99999", "is not a web address"),
        ("https://example.com/onwatch", "has a path; onwatch must be served at the root"),
    ],
)
def test_a_bad_base_url_is_refused(monkeypatch: pytest.MonkeyPatch, raw: str, says: str) -> None:
    monkeypatch.setenv("ONWATCH_BASE_URL", raw)
    with pytest.raises(ConfigError, match=says):
        base_url("http://localhost:8000")


@pytest.mark.parametrize(
    "raw", ["http://localhost:8000", "http://127.0.0.1:8000", "http://[::1]:8000", "https://x.lan"]
)
def test_plain_http_on_this_machine_or_https_needs_no_choice(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("ONWATCH_BASE_URL", raw)
    assert plain_http_over_network(base_url(raw), allowed=False) is False


def test_plain_http_to_another_machine_is_refused_unless_chosen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ONWATCH_BASE_URL", "http://192.168.1.20:8000")
    site = base_url("http://localhost:8000")
    with pytest.raises(ConfigError, match=r"HTTPS .* or, on a network you trust, set ONWATCH_A"):
        plain_http_over_network(site, allowed=False)
    assert plain_http_over_network(site, allowed=True) is True


def test_no_database_url_means_sqlite_in_the_data_dir() -> None:
    db = database_from_url("", SQLITE)
    assert (db["ENGINE"], db["NAME"]) == ("django.db.backends.sqlite3", str(SQLITE))
    assert db["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


def test_a_sqlite_url_names_its_file() -> None:
    assert database_from_url("sqlite:////var/lib/ow.db", SQLITE)["NAME"] == "/var/lib/ow.db"


def test_a_postgresql_url_becomes_django_settings() -> None:
    db = database_from_url("postgres://ow:p%40ss@db.internal:6543/onwatch?sslmode=require", SQLITE)
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["USER"], db["PASSWORD"], db["HOST"], db["PORT"], db["NAME"]) == (
        "ow",
        "p@ss",
        "db.internal",
        "6543",
        "onwatch",
    )
    assert db["OPTIONS"] == {"sslmode": "require"}


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://ow:hunter2@db/onwatch", "is not a database onwatch supports"),
        ("postgresql://ow:hunter2@db:port/onwatch", "has a bad port; use a number like 5432"),
        ("postgresql://ow:hunter2@db:5432", "names no database"),
        ("sqlite://", "names no file"),
    ],
)
def test_a_bad_database_url_is_refused_without_its_password(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        database_from_url(url, SQLITE)
    assert says in str(refused.value)
    assert "hunter2" not in str(refused.value)


def test_redact_hides_only_the_password() -> None:
    assert redact("postgresql://ow:hunter2@db/x") == "postgresql://ow:***@db/x"
    assert redact("postgresql://ow@db/x") == "postgresql://ow@db/x"
