"""Reading onwatch's environment: every knob is an environment variable with a safe default.

Each helper raises ConfigError with one line that says what is wrong and how to fix it;
`onwatch` turns that into exit code 2 before anything is created on disk.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from onwatch.core.network import is_loopback


class ConfigError(Exception):
    """A setting is malformed or points somewhere unusable. The message is for people."""


def env(name: str, default: str = "") -> str:
    """Read NAME, or the contents of the file named by NAME_FILE (for secrets)."""
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text().strip()
        except OSError as e:
            raise ConfigError(
                f"{name}_FILE={file_name} cannot be read ({e.strerror}); "
                "point it at a readable file or unset it"
            ) from e
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = env(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a yes/no value; use true or false")


def env_int(name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
    raw = env(name, "").strip()
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number; use e.g. {default}") from None
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and {maximum}" if maximum is not None else ""
        raise ConfigError(f"{name}={value} is out of range; use a number between {minimum}{upper}")
    return value


def default_data_dir() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "onwatch"


def data_dir() -> Path:
    raw = env("ONWATCH_DATA_DIR", "")
    return Path(raw).expanduser().absolute() if raw else default_data_dir()


@dataclass(frozen=True)
class BaseUrl:
    scheme: str
    host: str
    port: int | None

    @property
    def https(self) -> bool:
        return self.scheme == "https"

    @property
    def origin(self) -> str:
        port = f":{self.port}" if self.port else ""
        return f"{self.scheme}://{self.host}{port}"


def base_url(default: str) -> BaseUrl:
    raw = env("ONWATCH_BASE_URL", default).strip().rstrip("/")
    parts = urlsplit(raw)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        raise ConfigError(
            f"ONWATCH_BASE_URL={raw!r} is not a web address; use e.g. https://onwatch.example.com"
        )
    if parts.path not in ("", "/"):
        raise ConfigError(
            f"ONWATCH_BASE_URL={raw!r} has a path; onwatch must be served at the root of its host"
        )
    return BaseUrl(parts.scheme, parts.hostname, port)


def plain_http_over_network(site: BaseUrl, allowed: bool) -> bool:
    """True when people reach onwatch over plain HTTP from other machines, which they may
    only do by choice. Browsers keep Secure cookies over plain HTTP for this machine alone;
    anywhere else they drop the session and CSRF cookies and nobody can sign in."""
    if site.https or is_loopback(site.host):
        return False
    if not allowed:
        raise ConfigError(
            f"ONWATCH_BASE_URL={site.origin} is plain HTTP to another machine, where browsers "
            "drop onwatch's sign-in cookies; serve it over HTTPS through Caddy or another "
            f"proxy and set ONWATCH_BASE_URL=https://{site.host}, or, on a network you trust, "
            "set ONWATCH_ALLOW_PLAIN_HTTP=true (every page then shows a warning)"
        )
    return True


def unreachable_elsewhere(listen_host: str, site: BaseUrl) -> str:
    """A warning line when onwatch listens beyond this machine but believes it is reached
    at a loopback address: browsers elsewhere would get "Bad Request" (their Host is not
    one onwatch answers to). A warning, not a refusal: a container published on this
    machine's localhost is a fair reason to listen on 0.0.0.0."""
    if is_loopback(listen_host) or not is_loopback(site.host):
        return ""
    return (
        f"onwatch: listening on {listen_host}, but ONWATCH_BASE_URL is {site.origin}: "
        "browsers on other machines get 'Bad Request' until ONWATCH_BASE_URL names the "
        "address they use (https://… through a proxy)"
    )


# A host name: labels of letters, digits and inner hyphens (or an IPv4 address); no
# wildcard, no port, no scheme.
HOST_NAME = re.compile(
    r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
)
# Caddy adds this to each request it sends on to onwatch (deploys/caddy.py), with
# proxy_token's value: only requests that carry it count as HTTPS. Anyone on this machine
# can reach onwatch's loopback port with a forged X-Forwarded-Proto; not this token.
PROXY_HEADER = "X-Onwatch-Proxy"
LOCAL_SUFFIXES = (".localhost", ".local", ".internal")


def own_domain(raw: str, listen_host: str) -> str:
    """ONWATCH_DOMAIN (`onwatch up --domain`): the name onwatch is reached at through
    Caddy, or "" for none. onwatch itself then stays on loopback, behind Caddy."""
    domain = raw.strip().lower().rstrip(".")
    if not domain:
        return ""
    numeric = domain.replace(".", "").isdigit()
    if not HOST_NAME.fullmatch(domain) or (numeric and not _ipv4(domain)):
        raise ConfigError(
            f"ONWATCH_DOMAIN={raw!r} is not a host name; use a name like ops.example.com "
            "(no https://, no port)"
        )
    if domain == "localhost":
        # HTTPS there would hold for every port of localhost (HSTS knows no ports): plain
        # `onwatch up` and the user's other local servers would stop opening.
        raise ConfigError(
            "ONWATCH_DOMAIN=localhost would move every local server to HTTPS; "
            "use onwatch.localhost instead"
        )
    if not is_loopback(listen_host):
        raise ConfigError(
            f"ONWATCH_HOST={listen_host} with a domain would let browsers around Caddy; "
            "onwatch listens on 127.0.0.1 behind it: unset ONWATCH_HOST"
        )
    return domain


def _ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def is_local_name(domain: str) -> bool:
    """Names no public authority signs for: Caddy's own local authority does (`tls internal`)."""
    return domain == "localhost" or domain.endswith(LOCAL_SUFFIXES) or _ipv4(domain)


def proxy_token(secret_key: str) -> str:
    """The value Caddy sends in PROXY_HEADER: derived from the secret key, so it needs no
    file of its own and changes with it."""
    return hmac.new(secret_key.encode(), b"onwatch-caddy-proxy", hashlib.sha256).hexdigest()


def database_from_url(url: str, sqlite_default: Path) -> dict[str, Any]:
    """Turn DATABASE_URL into a Django DATABASES entry; empty means SQLite in the data dir."""
    if not url:
        return sqlite_config(sqlite_default)
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        # sqlite:///relative/path or sqlite:////absolute/path, as most tools spell it.
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path:
            raise ConfigError(
                f"DATABASE_URL={url!r} names no file; use sqlite:////path/to/onwatch.sqlite3"
            )
        return sqlite_config(Path(unquote(path)).absolute())
    if parts.scheme in ("postgres", "postgresql", "pgsql"):
        options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        host = options.pop("host", None) or unquote(parts.hostname or "")
        name = unquote(parts.path.lstrip("/"))
        if not name:
            raise ConfigError(
                f"DATABASE_URL={redact(url)!r} names no database; "
                "use postgresql://user:password@host:5432/onwatch"
            )
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(
                f"DATABASE_URL={redact(url)!r} has a bad port; use a number like 5432"
            ) from None
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": host,
            "PORT": str(port or ""),
            "CONN_MAX_AGE": 0,
            "OPTIONS": options,
        }
    raise ConfigError(
        f"DATABASE_URL={redact(url)!r} is not a database onwatch supports; "
        "use postgresql://… or sqlite:///…, or unset it for the built-in SQLite"
    )


def sqlite_config(path: Path) -> dict[str, Any]:
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "OPTIONS": {
            # IMMEDIATE makes every write transaction take the write lock up front, so two
            # processes claiming the same job serialise instead of failing on upgrade.
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": (
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;"
            ),
        },
    }


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url
