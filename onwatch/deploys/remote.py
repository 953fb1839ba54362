"""Deploys on an SSH host: RemotePlace (place_of makes one of a Host) does there what a
deploy does on this machine, over one ssh connection per deploy, through the agent
(agent.py) it runs on the host with the host venv's Python. The agent is a zipapp of
onwatch's own Django-free modules (the switch, Caddy and supervisord ones), so a switch on a
host is the same code as here; it is uploaded to `~/.onwatch/agent-<hash>.pyz` when the host
has not that one yet.

The ssh command lines come from core/ssh.py (the org's key, the pinned host keys only), and
ssh's own words become what to do through hosts.classify. A connection lost in the middle
of a request is one PlaceError naming the host; what serves there keeps serving, since the
host's process manager (supervisord, or systemd's user manager) and Caddy do not depend
on the connection (agent.py says what becomes of the request itself).

On a host, builds and web processes run as the deploy user, without bubblewrap: the host is
the service's own, and that user (no root, hostchecks.py) is the boundary there."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import queue
import subprocess
import tarfile
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import asdict
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

from onwatch.core import ssh
from onwatch.deploys import agent, caddy, hostchecks, hosts, switch
from onwatch.deploys.models import Host
from onwatch.deploys.places import Counted, PlaceError, Ran

ROOT = Path(__file__).resolve().parents[2]
# What the agent is made of: modules that import nothing of Django (lint-free to check:
# building the archive imports none of them, the host's Python does).
AGENT_MODULES = (
    "onwatch/__init__.py",
    "onwatch/config.py",
    "onwatch/core/__init__.py",
    "onwatch/core/network.py",
    "onwatch/deploys/__init__.py",
    "onwatch/deploys/agent.py",
    "onwatch/deploys/caddy.py",
    "onwatch/deploys/procman.py",
    "onwatch/deploys/switch.py",
    "onwatch/deploys/systemd.py",
    "onwatch/deploys/unixhttp.py",
)
MAIN = "from onwatch.deploys.agent import main\n\nraise SystemExit(main())\n"
# The host's own folder for onwatch, as hostprobe.sh and hostprepare.sh find it.
HOST_DIR = 'd="${ONWATCH_HOST_DIR:-$HOME/.onwatch}"'
UPLOAD_SECONDS = 120
CLOSE_SECONDS = 10
POLL_SECONDS = 0.2
# The agent says "alive" every agent.ALIVE_SECONDS while a request runs: this long without
# a word, the host is taken as gone (a network that drops silently keeps ssh waiting).
SILENCE_SECONDS = 6 * agent.ALIVE_SECONDS


class AgentMissing(Exception):
    """The host has not this agent yet."""


class Gone(Exception):
    """The connection ended; the message, when there is one, says why."""


class Busy(Exception):
    """The link is answering another request (asked from one of its callbacks)."""


class CallbackFailed(Exception):
    """onwatch's own callback failed mid-request; the agent was asked to stop, and
    `result` is what it answered in the end."""

    def __init__(self, error: Exception, result: dict[str, Any]) -> None:
        super().__init__(str(error))
        self.error, self.result = error, result


@cache
def agent_archive() -> tuple[str, bytes]:
    """The agent's zipapp and the start of its hash: the same bytes for the same code (no
    timestamps in it), so a host keeps the one it has until onwatch changes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in AGENT_MODULES:
            archive.writestr(zipfile.ZipInfo(name), (ROOT / name).read_bytes())
        archive.writestr(zipfile.ZipInfo("__main__.py"), MAIN)
    data = buffer.getvalue()
    return hashlib.sha256(data).hexdigest()[:16], data


def serve_command(digest: str) -> str:
    return (
        f'{HOST_DIR}; a="$d/agent-{digest}.pyz"; '
        """[ -x "$d/venv/bin/python" ] || { echo '{"unprepared": true}'; exit 3; }; """
        """[ -f "$a" ] || { echo '{"missing": true}'; exit 3; }; """
        'exec "$d/venv/bin/python" "$a" serve "$d"'
    )


def upload_command(digest: str) -> str:
    """Copied in whole or not at all, into a file of its own (two deploys may upload at
    once) that only the deploy user can read; the agents of older onwatch versions go
    (each agent imports all it needs as it starts, so one still running is not
    disturbed)."""
    made = f'"$d/agent-{digest}.pyz"'
    return (
        f'umask 077; {HOST_DIR}; mkdir -p "$d" && t=$(mktemp "$d/.agent.XXXXXX") && '
        f'{{ cat > "$t" && mv "$t" {made} || {{ rm -f "$t"; exit 1; }}; }} && '
        f'for old in "$d"/agent-*.pyz; do [ "$old" = {made} ] || rm -f "$old"; done'
    )


class Link:
    """One ssh connection to the agent: JSON lines each way, read by a thread of its own."""

    def __init__(self, argv: list[str], stderr: Path) -> None:
        # What the agent's Python says if it fails (a traceback): why the connection ended;
        # of this connection only, not an earlier one's.
        with stderr.open("wb") as said:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=said
            )
        self.inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.number = 0
        self.busy = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in iter(self.proc.stdout.readline, b""):
            try:
                message = json.loads(line)
            except ValueError:
                continue  # what a login script printed: not the agent's
            if isinstance(message, dict):
                self.inbox.put(message)
        self.inbox.put(None)

    def send(self, message: dict[str, Any], payload: Path | None = None) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(message).encode() + b"\n")
            if payload is not None:
                with payload.open("rb") as f:
                    while chunk := f.read(agent.TAR_CHUNK):
                        self.proc.stdin.write(chunk)
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise Gone() from None

    def ask(
        self,
        op: str,
        args: dict[str, Any],
        on_event: Callable[[dict[str, Any]], None] = lambda event: None,
        cancelled: threading.Event | None = None,
        payload: Path | None = None,
    ) -> dict[str, Any]:
        """The request's result message; its events go to on_event as they come. One
        request at a time: Busy when asked again from inside on_event."""
        if not self.busy.acquire(blocking=False):
            raise Busy()
        try:
            self.number += 1
            self.send({"id": self.number, "op": op, "args": args}, payload)
            return self._result(self.number, on_event, cancelled)
        finally:
            self.busy.release()

    def _result(
        self,
        number: int,
        on_event: Callable[[dict[str, Any]], None],
        cancelled: threading.Event | None,
    ) -> dict[str, Any]:
        """Read until the request's result, never longer than SILENCE_SECONDS without a
        word; when on_event fails, the agent is asked to stop and its result awaited."""
        failed: Exception | None = None
        heard, asked_to_stop = time.monotonic(), False
        while True:
            stop = failed is not None or (cancelled is not None and cancelled.is_set())
            if stop and not asked_to_stop:
                self.send({"id": number, "op": "cancel"})
                asked_to_stop = True
            message = self._next(heard)
            if message is None or not _for(message, number):
                continue
            heard = time.monotonic()
            if "event" not in message:
                if failed is not None:
                    raise CallbackFailed(failed, message)
                return message
            if failed is None and message["event"] != "alive":
                try:
                    on_event(message)
                except Exception as e:
                    failed = e

    def _next(self, heard: float) -> dict[str, Any] | None:
        try:
            message = self.inbox.get(timeout=POLL_SECONDS)
        except queue.Empty:
            if time.monotonic() - heard > SILENCE_SECONDS:
                self.proc.kill()
                raise Gone(f"it said nothing for {SILENCE_SECONDS:g} s") from None
            return None
        if message is None:
            raise Gone()
        if message.get("missing"):
            raise AgentMissing()
        return message

    def close(self) -> None:
        """The agent ends when its stdin does; killed if it does not within seconds."""
        if self.proc.stdin is not None:
            with suppress(BrokenPipeError):
                self.proc.stdin.close()
        try:
            self.proc.wait(CLOSE_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _for(message: dict[str, Any], number: int) -> bool:
    """Of this request: its id, or the agent's error about a line it could not read."""
    said_id = message.get("id", "none")
    return said_id == number or (said_id is None and "error" in message)


def on_our_clock(step: switch.Step, skew: float) -> switch.Step:
    """A host's step timed by this machine's clock: a deploy's steps on several hosts (and
    when its release went live on the last) are then of one clock."""
    if not skew:
        return step
    by = timedelta(seconds=skew)
    return dataclasses.replace(
        step,
        started=step.started - by,
        ended=step.ended - by if step.ended else None,
        live_at=step.live_at - by if step.live_at else None,
    )


def before_of(event: dict[str, Any]) -> list[agent.Sum] | None:
    """What a switch's before_count carried (None: the agent could not read the count)."""
    if event.get("sums", event.get("answers")) is None:
        return None
    return sums_of(event)


def sums_of(said: dict[str, Any]) -> list[agent.Sum]:
    """The sums an agent sent, or, from an agent older than them (a host not prepared
    again since), the answers it sent line by line, summed here."""
    if "sums" in said:
        return [agent.Sum(**s) for s in said["sums"]]
    return agent.summed(caddy.Answer(**a) for a in said["answers"])


class RemotePlace:
    """An SSH host as a Place (places.py), from plain data: how to sign in (`target`), and
    its Caddy's `options` (its ports). Its own supervisord and Caddy, its releases in its
    own folder. place_of makes one from a Host."""

    def __init__(self, target: hosts.Target, options: caddy.Options) -> None:
        assert target.endpoint is not None, "this machine is LocalPlace's"
        self.name, self.target, self.options = target.name, target, options
        self.session: ssh.Session | None = None
        self.link: Link | None = None
        self.dir = ""
        self.uploaded = False  # whether this place had to upload the agent (tests, logs)
        # What the host's Caddy counted until its switch's own count began (counted_before).
        self.before: list[agent.Sum] | None = None
        # How far the host's clock is ahead of this one's, as it said at the connection's
        # setup (older agents do not: 0): its switch's steps are timed by this one's.
        self.skew = 0.0

    # --- the connection ----------------------------------------------------------------------

    def _link(self) -> Link:
        if self.link is not None:
            return self.link
        if self.session is None:
            self.session = ssh.Session(self.target.private_key, self.target.known_hosts)
        try:
            self.link = self._connect()
        except AgentMissing:
            self._upload()
            self.link = self._connect()
        return self.link

    def _connect(self) -> Link:
        assert self.session is not None and self.target.endpoint is not None
        digest, _ = agent_archive()
        argv = self.session.args(self.target.endpoint, serve_command(digest))
        self.session.log.write_text("")  # what ssh says is of this connection only
        link = Link(argv, self._stderr())
        try:
            said = link.ask("setup", {"options": asdict(self.options)})
        except Gone as e:
            link.close()
            raise PlaceError(self._why_gone(link, "connection", str(e))) from None
        except AgentMissing:
            link.close()
            raise
        value = self._value(said)
        self.dir = str(value["dir"])
        if value.get("clock") is not None:
            # Within the one-way latency of its answer, a few ms: far below what is said.
            self.skew = float(value["clock"]) - time.time()
        return link

    def _upload(self) -> None:
        assert self.session is not None and self.target.endpoint is not None
        digest, data = agent_archive()
        argv = self.session.args(self.target.endpoint, upload_command(digest))
        try:
            done = subprocess.run(argv, input=data, capture_output=True, timeout=UPLOAD_SECONDS)
        except subprocess.TimeoutExpired:
            raise PlaceError(
                f"onwatch's agent could not be copied to {self.name} within {UPLOAD_SECONDS} s; "
                "check the connection and deploy again"
            ) from None
        if done.returncode == 255:
            raise PlaceError(str(hosts.classify(self.name, self.session.log_text())))
        if done.returncode != 0:
            said = (done.stderr.decode(errors="replace").strip().splitlines() or ["no reason"])[-1]
            raise PlaceError(f"onwatch's agent could not be copied to {self.name}: {said[:300]}")
        self.uploaded = True

    def _stderr(self) -> Path:
        assert self.session is not None
        return self.session.dir / "agent.log"

    def _why_gone(self, link: Link, during: str, why: str, live: str | None = None) -> str:
        """One line: what ssh or the host said when the connection ended (`why`: what
        onwatch saw itself), and what serves there now (`live`, when known)."""
        assert self.session is not None
        try:
            code = link.proc.wait(CLOSE_SECONDS)
        except subprocess.TimeoutExpired:
            code = None
        said = self.session.log_text()
        if code == 255 and said.strip() and not why:
            return str(hosts.classify(self.name, said))
        if code == 3:
            return (
                f"{self.name} is not prepared for deploys: run `onwatch hosts check "
                f"{self.name} --prepare`, then deploy again"
            )
        told = (said + self._stderr().read_text(errors="replace")).strip().splitlines()
        last = why or (told[-1].strip()[:300] if told else "the connection ended")
        then = live or "what runs there runs on without onwatch: deploy again once the host answers"
        return f"{self.name} went away during the {during} ({last}); {then}"

    def _ask(
        self,
        op: str,
        args: dict[str, Any],
        during: str,
        on_event: Callable[[dict[str, Any]], None] = lambda event: None,
        cancelled: threading.Event | None = None,
        payload: Path | None = None,
        live: Callable[[], str] | None = None,
    ) -> Any:
        link = self._link()
        try:
            said = link.ask(op, args, on_event, cancelled, payload)
        except (Gone, AgentMissing) as e:
            self.link = None
            link.close()
            raise PlaceError(self._why_gone(link, during, str(e), live and live())) from None
        except Busy:
            raise PlaceError(
                f"{self.name} was asked something during the {during}, which onwatch does "
                "not do (one request at a time on a connection): report this as a bug"
            ) from None
        except CallbackFailed as e:
            raise PlaceError(self._failed_here(e, during)) from e.error
        return self._value(said)

    def _failed_here(self, failed: CallbackFailed, during: str) -> str:
        """onwatch failed mid-request and asked the host to stop: what the host did."""
        error, result = failed.error, failed.result
        what = f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
        if "error" in result:
            then = f"the host stopped: {result['message']}"
        elif isinstance(value := result.get("value"), dict) and "release" in value:
            then = f"the host finished it all the same: {value['release']} serves {value['domain']}"
        else:
            then = "the host finished it all the same"
        return f"{self.name}: onwatch failed during the {during} ({what}); {then}"

    def _value(self, said: dict[str, Any]) -> Any:
        if said.get("error") == "switch":
            raise switch.SwitchFailed(said["message"], agent.record_of(said["record"]))
        if "error" in said:
            raise PlaceError(f"{self.name}: {said['message']}")
        return said.get("value")

    # --- the Place ---------------------------------------------------------------------------

    def ensure_ready(self) -> None:
        self._ask("ensure_ready", {}, "start of its supervisord and Caddy")

    def free_ports(self, count: int, avoid: frozenset[int] = frozenset()) -> list[int]:
        asked = {"count": count, "avoid": sorted(avoid)}
        return [int(p) for p in self._ask("free_ports", asked, "choice of ports")]

    def put_site(self, site: caddy.Site) -> bool:
        if why := caddy.site_problem(site):
            raise PlaceError(why)
        return bool(self._ask("put_site", {"site": agent.site_json(site)}, "change of Caddy"))

    def release_folder(self, service_id: int, release_id: int) -> str:
        self._link()
        return f"{self.dir}/releases/{service_id}/{release_id}"

    def has_folder(self, folder: str) -> bool:
        return bool(self._ask("has_folder", {"folder": folder}, "look at its releases"))

    def receive(self, folder: str, source: Path) -> None:
        with tempfile.NamedTemporaryFile(prefix="onwatch-release-", suffix=".tar") as tar:
            pack(source, Path(tar.name))
            size = Path(tar.name).stat().st_size
            args = {"folder": folder, "size": size}
            self._ask("receive", args, "copy of the release's files", payload=Path(tar.name))

    def run(
        self,
        folder: str,
        command: str,
        env: Mapping[str, str],
        seconds: float,
        on_line: Callable[[str], None],
        cancelled: threading.Event,
    ) -> Ran:
        args = {"folder": folder, "command": command, "env": dict(env), "seconds": seconds}
        ran = self._ask("run", args, "build", lambda event: on_line(str(event["text"])), cancelled)
        return Ran(
            ran["exit_code"],
            ran["reason"],
            float(ran["seconds"]),
            ran["last_lines"],
            str(ran.get("unsandboxed") or ""),
        )

    def switch(
        self,
        site: caddy.Site,
        release: switch.Release,
        on_step: Callable[[switch.Step], None],
        gate: switch.Gate,
        keep_counting: bool = False,
        before_count: Callable[[], None] = lambda: None,
    ) -> switch.Switch:
        args = {
            "site": agent.site_json(site),
            "release": agent.release_json(release),
            "gate": asdict(gate),
            "keep_counting": keep_counting,
        }
        link = self._link()
        seen: list[switch.Step] = []
        self.before = None

        def on_event(event: dict[str, Any]) -> None:
            if event["event"] == "step":
                seen.append(on_our_clock(agent.step_of(event["step"]), self.skew))
                on_step(seen[-1])
            elif event["event"] == "before_count":
                self.before = before_of(event)
                before_count()
                link.send({"id": event["id"], "op": "continue"})

        def live() -> str:
            return live_after(seen, site, release.label)

        return agent.record_of(self._ask("switch", args, "switch", on_event, live=live))

    def serving(self, site: caddy.Site) -> str | None:
        said = self._ask("serving", {"site": agent.site_json(site)}, "look at what serves")
        return None if said is None else str(said)

    def remove_folders(self, folders: list[str]) -> None:
        self._ask("remove_folders", {"folders": folders}, "removal of old releases")

    def stop_serving(self, ports: set[int]) -> None:
        self._ask("stop_serving", {"ports": sorted(ports)}, "stop of the service")

    # --- what the host's Caddy counted (caddy.py's counting, there), for the watch ----------

    def start_counting(self, domain: str) -> None:
        self._ask("start_counting", {"domain": domain}, "start of Caddy's count", live=_serves_on)

    def counting(self, domain: str) -> bool:
        args = {"domain": domain}
        return bool(self._ask("counting", args, "look at Caddy's count", live=_serves_on))

    def counted_from(self, domain: str, offset: int) -> Counted:
        args = {"domain": domain, "offset": offset}
        said = self._ask("counted_from", args, "count's read", live=_serves_on)
        clock = said.get("clock")  # None from an older agent: its clock is taken as right
        return Counted(sums_of(said), int(said["offset"]), None if clock is None else float(clock))

    def counted_before(self, domain: str) -> list[agent.Sum]:
        """In a switch's before_count, what the agent read with it (the connection is the
        switch's then); else read now."""
        if self.before is not None:
            return self.before
        if self.link is not None and self.link.busy.locked():
            # The switch's own connection, whose before_count carried no answers (the
            # agent could not read Caddy's count then): none counted there, not a bug.
            return []
        return self.counted_from(domain, 0).sums

    def stop_counting(self, domain: str) -> None:
        self._ask("stop_counting", {"domain": domain}, "end of Caddy's count")

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None
        if self.session is not None:
            self.session.close()
            self.session = None


def _serves_on() -> str:
    """A host lost while the watch read its count: nothing there changed (no "deploy
    again", as a lost deploy says)."""
    return "what serves there serves on without onwatch"


def live_after(seen: list[switch.Step], site: caddy.Site, label: str) -> str:
    """What serves the site on a host a switch lost touch with, from the steps it heard."""
    moved = any(s.name == "switch" and s.ended is not None and s.ok for s in seen)
    if moved:
        return (
            f"{label} took {site.domain}'s traffic before that and serves it there; the host "
            "finishes the switch on its own"
        )
    return (
        f"traffic had not moved to {label}: what served {site.domain} there serves on, and "
        f"the host stops {label}; deploy again once the host answers"
    )


def place_of(host: Host) -> RemotePlace:
    """The SSH host as a Place, signed in to with the org's key and its pinned host keys,
    its Caddy on the host's own ports. A deploy never pins a host key itself (its
    connection carries the service's secrets): PlaceError when the key was forgotten."""
    if not host.local and not host.known_hosts.strip():
        raise PlaceError(
            f"{host.name}'s host key was forgotten: run `onwatch hosts check {host.name}` "
            "to pin it again, then deploy"
        )
    return RemotePlace(hostchecks.target(host), options_of(host))


def options_of(host: Host) -> caddy.Options:
    return caddy.Options(host.caddy_https, host.http_port, host.https_port, host.health_port)


def pack(source: Path, tar_path: Path) -> None:
    """The tree without its .git, owned by no one in particular: the host's deploy user
    owns what it unpacks."""

    def anonymous(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with tarfile.open(tar_path, "w") as tar:
        for child in sorted(source.iterdir()):
            if child.name != ".git":
                tar.add(child, arcname=child.name, filter=anonymous)
