"""Real receivers for alert deliveries: an SMTP server (aiosmtpd) and an HTTP server that
takes Apprise's json:// webhooks, both on loopback ports of their own. Also a way to add a
channel to the database of a real onwatch (its own data dir or PostgreSQL database)."""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from tests.support.child import alerts as child_alerts
from tests.support.child import call
from tests.support.procs import free_port


def wait_until(check: Callable[[], bool], timeout: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.05)


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain", "html"))
        assert part is not None, "the mail has no body"
        return str(part.get_content())


class _Mailbox:
    def __init__(self) -> None:
        self.mails: list[Mail] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.mails.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), msg))
        return "250 Message accepted for delivery"


class SmtpReceiver:
    """A plain SMTP server (no TLS, no auth) that keeps every mail it is given."""

    def __init__(self) -> None:
        self.port = free_port()
        self._box = _Mailbox()
        self._controller = Controller(self._box, hostname="127.0.0.1", port=self.port)

    @property
    def mails(self) -> list[Mail]:
        return self._box.mails

    def url(self, to: str = "ops@example.com", sender: str = "onwatch@example.com") -> str:
        # mailto:// (not mailtos://) is Apprise's plain-SMTP mode: no STARTTLS, no login.
        return f"mailto://127.0.0.1:{self.port}?from={sender}&to={to}"

    def __enter__(self) -> SmtpReceiver:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()


@dataclass
class Hook:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """An HTTP server that records every request and answers with the next status from
    `statuses`, then with `then` for good (a flaky or a dead endpoint, on demand)."""

    def __init__(self, statuses: list[int] | None = None, then: int = 200) -> None:
        self.hooks: list[Hook] = []
        self.answers: list[int] = []
        self._statuses = list(statuses or [])
        self._then = then
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.port: int = self._server.server_address[1]

    def url(self, path: str = "/hook", userinfo: str = "") -> str:
        auth = f"{userinfo}@" if userinfo else ""
        return f"json://{auth}127.0.0.1:{self.port}{path}"

    def _next_status(self, hook: Hook) -> int:
        with self._lock:
            # Recorded before answering: once the sender has its answer, the hook is here.
            self.hooks.append(hook)
            status = self._statuses.pop(0) if self._statuses else self._then
            self.answers.append(status)
            return status

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                hook = Hook(self.path, dict(self.headers.items()), self.rfile.read(length))
                status = receiver._next_status(hook)
                payload = b"ok" if status < 300 else b"receiver says no"
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        return Handler

    def __enter__(self) -> WebhookReceiver:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def closed_port_url() -> str:
    """A webhook URL on a loopback port nobody listens on: a channel that never works."""
    return f"json://127.0.0.1:{free_port()}/nobody-home"


def add_channels(
    env: dict[str, str], urls: dict[str, str], org: str = "Acme", migrate: bool = False
) -> None:
    """Add channels (name -> Apprise URL) to a real onwatch's database the way onwatch
    itself does, after its start-up checks (and migrations, with `migrate`): the key file
    is checked, the URLs encrypted."""
    call(child_alerts.add_channels, env, org, dict(urls), migrate=migrate)
