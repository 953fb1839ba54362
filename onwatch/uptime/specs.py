"""What `Monitor.config` may hold for each kind of check, with safe defaults.

`validate(kind, config)` is the one gate for the UI, the API and YAML import: it returns
the config to store (defaults left out, so an exported file reads like the imported one)
or raises SpecError with one sentence that names the field.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails


class SpecError(ValueError):
    """A monitor's settings are not usable. The message is for people."""


_HOST = re.compile(r"^[A-Za-z0-9_.:\-\[\]]+$")
_RANGE = re.compile(r"^\s*(\d{3})\s*(?:-\s*(\d{3})\s*)?$")
# A path such as `data.items[0].status`: keys separated by dots, list indexes in brackets.
_JSON_PATH = re.compile(r"^(?:[^.\[\]]+|\[-?\d+\])(?:\.[^.\[\]]+|\[-?\d+\])*$")
_JSON_STEP = re.compile(r"([^.\[\]]+)|\[(-?\d+)\]")


def check_host(value: str, field: str) -> str:
    value = value.strip()
    if not value or len(value) > 253 or not _HOST.match(value):
        raise ValueError(f"'{field}' must be a host name or IP address, such as db.example.com")
    return value


def check_port(value: int, field: str = "port") -> int:
    if not 1 <= value <= 65535:
        raise ValueError(f"'{field}' must be a port number from 1 to 65535")
    return value


def split_hostport(text: str, default_port: int) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]:port` or a bare IPv6 address."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or str(default_port)
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, str(default_port)
    if not port.isdigit():
        raise ValueError(f"'{port}' is not a port number")
    return host, int(port)


def json_steps(path: str) -> list[str | int]:
    """The keys and indexes of a JSON path, in order."""
    return [int(index) if index else key for key, index in _JSON_STEP.findall(path)]


def status_ranges(codes: list[int | str]) -> list[tuple[int, int]]:
    """Accepted status codes as inclusive ranges: 301 → (301, 301), "200-299" → (200, 299)."""
    ranges = []
    for code in codes:
        found = _RANGE.match(str(code))
        if found is None:
            raise ValueError(f"'{code}' is not a status code or a range such as 200-299")
        low, high = int(found[1]), int(found[2] or found[1])
        if not 100 <= low <= high <= 599:
            raise ValueError(f"'{code}' must lie between 100 and 599, low before high")
        ranges.append((low, high))
    return ranges


def _any_2xx() -> list[int | str]:
    return ["200-299"]


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class HttpSpec(Spec):
    url: str
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    body: str = ""
    accepted_status_codes: list[int | str] = Field(default_factory=_any_2xx)
    keyword: str = ""  # must appear in the answer
    keyword_absent: str = ""  # must not appear
    regex: str = ""  # must match somewhere in the answer
    regex_absent: str = ""  # must match nowhere
    json_path: str = ""  # e.g. data.items[0].status; then json_expected must equal it
    json_expected: Any = None
    max_latency_ms: int | None = Field(default=None, gt=0)
    follow_redirects: bool = True
    verify_tls: bool = True
    cert_expiry_warn_days: int = Field(default=14, ge=0)
    # A PEM file of extra trusted authorities, for targets signed by a private CA.
    ca_file: str = ""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        scheme, _, rest = value.partition("://")
        host = rest.split("/", 1)[0].split("?", 1)[0]
        if scheme.lower() not in ("http", "https") or not host or " " in value:
            raise ValueError("'url' must be a full http:// or https:// address")
        return value

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name) or "\n" in text:
                raise ValueError(f"'headers' has an invalid header: {name!r}")
        return value

    # Before pydantic's own checks, so a bad entry gets our message rather than a union's.
    @field_validator("accepted_status_codes", mode="before")
    @classmethod
    def _codes(cls, value: Any) -> Any:
        if not isinstance(value, list) or not value:
            example = '["200-299", 301]'
            raise ValueError(f"'accepted_status_codes' must be a list of codes, such as {example}")
        try:
            status_ranges(value)
        except ValueError as e:
            raise ValueError(f"'accepted_status_codes': {e}") from None
        return value

    @field_validator("regex", "regex_absent")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as e:
            raise ValueError(
                f"the pattern {value!r} is not a valid regular expression: {e}"
            ) from None
        return value

    @field_validator("json_path")
    @classmethod
    def _json_path(cls, value: str) -> str:
        if value and not _JSON_PATH.match(value):
            raise ValueError("'json_path' must look like data.items[0].status")
        return value

    @model_validator(mode="after")
    def _json_pair(self) -> HttpSpec:
        given = "json_expected" in self.model_fields_set
        if self.json_path and not given:
            raise ValueError(
                "'json_expected' is required with 'json_path': the value to find there"
            )
        if given and not self.json_path:
            raise ValueError("'json_expected' needs 'json_path', the place to look for it")
        return self


class TcpSpec(Spec):
    host: str
    port: int

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return check_host(value, "host")

    @field_validator("port")
    @classmethod
    def _port(cls, value: int) -> int:
        return check_port(value)


class DnsSpec(Spec):
    name: str
    record_type: Literal["A", "AAAA", "CNAME", "MX", "TXT"] = "A"
    expected: str = ""  # one of the answers must equal it; empty: any answer will do
    nameserver: str = ""  # host[:port]; empty: the system's resolver

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value or len(value) > 253 or " " in value:
            raise ValueError("'name' must be a domain name, such as example.com")
        return value

    @field_validator("record_type", mode="before")
    @classmethod
    def _type(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("nameserver")
    @classmethod
    def _nameserver(cls, value: str) -> str:
        if value:
            try:
                host, port = split_hostport(value, 53)
            except ValueError as e:
                raise ValueError(f"'nameserver' must be host or host:port; {e}") from None
            check_host(host, "nameserver")
            check_port(port, "nameserver")
        return value


class TlsSpec(Spec):
    host: str
    port: int = 443
    server_name: str = ""  # the name to ask for and check (SNI); empty: host
    warn_days: int = Field(default=14, ge=0)
    # A PEM file of extra trusted authorities, for certificates from a private CA.
    ca_file: str = ""

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return check_host(value, "host")

    @field_validator("port")
    @classmethod
    def _port(cls, value: int) -> int:
        return check_port(value)

    def checked_name(self) -> str:
        return self.server_name or self.host


SPECS: dict[str, type[Spec]] = {"http": HttpSpec, "tcp": TcpSpec, "dns": DnsSpec, "tls": TlsSpec}
LABELS = {"http": "an HTTP", "tcp": "a TCP", "dns": "a DNS", "tls": "a TLS"}


def parse(kind: str, config: dict[str, Any]) -> Spec:
    model = SPECS.get(kind)
    if model is None:
        raise SpecError(f"'{kind}' is not a kind of check; use one of {', '.join(SPECS)}")
    if not isinstance(config, dict):
        raise SpecError("The settings must be a mapping of names to values")
    try:
        return model.model_validate(config)
    except ValidationError as e:
        raise SpecError(_sentence(e.errors()[0], LABELS[kind])) from None


def validate(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """The config to store for a monitor of this kind, or SpecError."""
    if kind == "heartbeat":
        # Heartbeats keep their spec with their schedule logic, which builds on this
        # module; imported here so that `validate` stays the one gate for every kind.
        from onwatch.uptime import heartbeats

        return heartbeats.validate(config)
    spec = parse(kind, config)
    found: dict[str, Any] = spec.model_dump(mode="json", exclude_defaults=True)
    if isinstance(spec, HttpSpec) and spec.json_path:
        found["json_expected"] = spec.json_expected  # null is a value one may expect
    return found


def _where(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _sentence(error: ErrorDetails, label: str) -> str:
    field = _where(error["loc"])
    if error["type"] == "extra_forbidden":
        return f"'{field}' is not a setting of {label} check; remove it"
    if error["type"] == "missing":
        return f"'{field}' is required for {label} check"
    if error["type"] == "value_error":
        # Our own validators already name the field.
        return str(error["ctx"]["error"])
    message = error["msg"]
    return f"'{field}' is not valid: {message[:1].lower()}{message[1:]}"


HIDDEN = "(hidden)"


def for_readers(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """A monitor's settings as those who may see but not change monitors get them: header
    values, a request body and a password in the URL often carry credentials, so they are
    hidden; everything else (and the header names) stays, to say what is being checked."""
    if kind != "http":
        return config
    shown = dict(config)
    if shown.get("headers"):
        shown["headers"] = dict.fromkeys(shown["headers"], HIDDEN)
    if shown.get("body"):
        shown["body"] = HIDDEN
    url = str(shown.get("url", ""))
    parts = urlsplit(url)
    if parts.password is not None:
        port = f":{parts.port}" if parts.port else ""
        shown["url"] = urlunsplit(
            parts._replace(netloc=f"{parts.username}:{HIDDEN}@{parts.hostname}{port}")
        )
    return shown
