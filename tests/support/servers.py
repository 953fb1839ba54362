"""Real local targets for uptime checks, each on a free loopback port of its own: an HTTP
server with routes that pass and fail checks in every way, the same over TLS with
certificates made here (a private CA, and leaves that are good, expired, soon to expire,
or for the wrong name), and a small UDP DNS server answering from a dict."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from onwatch.uptime import probes
from onwatch.uptime.state import Outcome

# --- certificates ------------------------------------------------------------------------

Key = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Leaf:
    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class Pki:
    ca_file: Path  # the private CA that signed every leaf below
    good: Leaf  # localhost and 127.0.0.1, valid for 90 days
    expiring: Leaf  # localhost, 5 days left
    expired: Leaf  # localhost, ended 3 days ago
    wrong_name: Leaf  # wrong.example only


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(path: Path, cert: x509.Certificate, key: Key) -> Leaf:
    cert_file, key_file = path.with_suffix(".crt"), path.with_suffix(".key")
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Leaf(cert_file, key_file)


_CA_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def _ca(now: datetime) -> tuple[x509.Certificate, Key]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("onwatch test CA"))
        .issuer_name(_name("onwatch test CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=30))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    ca: tuple[x509.Certificate, Key], names: list[x509.GeneralName], start: datetime, end: datetime
) -> tuple[x509.Certificate, Key]:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(str(names[0].value)))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def make_pki(directory: Path) -> Pki:
    now = datetime.now(UTC)
    ca = _ca(now)
    (directory / "ca.crt").write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    local = [x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))]
    day = timedelta(days=1)
    leaves = {
        "good": _leaf(ca, local, now - day, now + 90 * day),
        "expiring": _leaf(ca, local, now - day, now + 5 * day + timedelta(hours=1)),
        "expired": _leaf(ca, local, now - 60 * day, now - 3 * day),
        "wrong_name": _leaf(ca, [x509.DNSName("wrong.example")], now - day, now + 90 * day),
    }
    written = {name: _write(directory / name, *pair) for name, pair in leaves.items()}
    return Pki(ca_file=directory / "ca.crt", **written)


# --- HTTP(S) -----------------------------------------------------------------------------

PAGE = b"<html><title>Shop</title><body>Welcome to the shop. Version 4.2.1</body></html>"
DOCUMENT = {"data": {"items": [{"status": "ok", "count": 3, "live": True}]}, "code": 200}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        route = getattr(self, "route_" + url.path.strip("/").replace("-", "_"), None)
        self.query = {key: values[0] for key, values in parse_qs(url.query).items()}
        self.server.seen.append(url.path)
        if route is None:
            self.reply(404, b"no such page")
        else:
            route()

    do_POST = do_PUT = do_HEAD = do_DELETE = do_GET

    def reply(self, status: int, body: bytes, kind: str = "text/html; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def route_ok(self) -> None:
        self.reply(200, PAGE)

    def route_close(self) -> None:
        # Answers, then hangs up (Connection: close), as many servers and proxies do.
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(PAGE)

    def route_error(self) -> None:
        self.reply(500, b"Internal error: the database is down")

    def route_binary_error(self) -> None:
        # A crashed backend's 500 with a core dump or image where an error page should be.
        self.reply(500, os.urandom(2048), "application/octet-stream")

    def route_json(self) -> None:
        self.reply(200, json.dumps(DOCUMENT).encode(), "application/json")

    def route_redirect(self) -> None:
        self.send_response(302)
        self.send_header("Location", "/ok")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def route_loop(self) -> None:
        self.send_response(302)
        self.send_header("Location", "/loop")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def route_slow(self) -> None:
        time.sleep(int(self.query.get("ms", "300")) / 1000)
        self.reply(200, PAGE)

    def route_hang(self) -> None:
        # Accepts the request, then never answers (until the server stops).
        self.server.stopping.wait(30)

    def route_dribble(self) -> None:
        # Promises a body and sends one byte at a time, slower than any timeout allows.
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        while not self.server.stopping.wait(0.2):
            self._send(b"x")

    def route_garbage(self) -> None:
        self.wfile.write(b"\x00\xffSSH-2.0-nonsense\r\n\x13\x37 not http at all\r\n\r\n")
        self.close_connection = True

    def route_noise(self) -> None:
        # A kilobyte of random bytes where an answer should be (not even a status line), the
        # same on every run and with no line break: how much of it the HTTP parser quotes
        # depends on where the first line ends, and os.urandom's sometimes ended it early.
        noise = bytes(b for b in random.Random(1024).randbytes(4096) if b not in b"\r\n")
        self.wfile.write(noise[:1024])
        self.close_connection = True

    def route_huge(self) -> None:
        # 64 MB promised, sent until the client stops reading.
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(64 * 1024 * 1024))
        self.end_headers()
        chunk = b"Welcome " + b"a" * 65528
        for _ in range(1024):
            if not self._send(chunk):
                return

    def route_echo(self) -> None:
        size = int(self.headers.get("Content-Length") or 0)
        seen = {
            "method": self.command,
            "headers": dict(self.headers.items()),
            "body": self.rfile.read(size).decode(),
        }
        self.reply(200, json.dumps(seen).encode(), "application/json")

    def _send(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True
            return False
        return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many checks at once must not wait for a SYN retry

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stopping = threading.Event()
        self.seen: list[str] = []


class HttpServer:
    """`with HttpServer() as web:` then `web.url("/ok")`; pass a Leaf to serve HTTPS."""

    def __init__(self, leaf: Leaf | None = None) -> None:
        self._server = _Server()
        self.scheme = "http"
        if leaf is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(leaf.cert_file, leaf.key_file)
            self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,))

    def renew(self, leaf: Leaf) -> None:
        """Serve another certificate from now on, on the same port (a renewal)."""
        ctx = getattr(self._server.socket, "context", None)
        assert isinstance(ctx, ssl.SSLContext), "renew() is for a server started with a leaf"
        ctx.load_cert_chain(leaf.cert_file, leaf.key_file)

    @property
    def seen(self) -> list[str]:
        return self._server.seen

    def url(self, path: str, host: str = "localhost") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def __enter__(self) -> HttpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()


def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class SilentServer:
    """Accepts TCP connections and never says a word: a hung TLS or HTTP server."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.close()


# --- DNS ---------------------------------------------------------------------------------


class DnsServer:
    """Answers UDP queries from `records`: {("shop.test", "A"): ["127.0.0.7"], ...}.

    Names in `silent` get no answer at all; names it does not know get NXDOMAIN.
    """

    def __init__(self, records: dict[tuple[str, str], list[str]], silent: set[str]) -> None:
        self.records = {(name.rstrip(".").lower(), kind): v for (name, kind), v in records.items()}
        self.silent = silent
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.1)  # to notice `stopping` soon
        self.port: int = self._sock.getsockname()[1]
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                wire, peer = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            reply = self._answer(dns.message.from_wire(wire))
            if reply is not None:
                self._sock.sendto(reply.to_wire(), peer)

    def _answer(self, query: dns.message.Message) -> dns.message.Message | None:
        question = query.question[0]
        name = question.name.to_text().rstrip(".").lower()
        if name in self.silent:
            return None
        response = dns.message.make_response(query)
        kind = dns.rdatatype.to_text(question.rdtype)
        values = self.records.get((name, kind))
        if values:
            rrset = dns.rrset.from_text_list(question.name, 60, dns.rdataclass.IN, kind, values)
            response.answer.append(rrset)
        elif not any(known == name for known, _ in self.records):
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response

    def __enter__(self) -> DnsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._thread.join()
        self._sock.close()


def probe(kind: str, config: dict[str, Any], timeout: float = 5.0) -> Outcome:
    async def go() -> Outcome:
        async with aiohttp.ClientSession() as session:
            return await probes.run(kind, config, timeout, session)

    return asyncio.run(go())
