"""How one check is made and judged: HTTP(S), TCP connect, DNS record, TLS certificate.

`run` never raises (except for cancellation): whatever goes wrong, from a refused
connection to a target that dribbles bytes forever, becomes a failed Outcome with one
sentence saying what happened, inside the check's timeout.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver
from cryptography import x509

from onwatch.uptime import specs
from onwatch.uptime.state import Outcome

BODY_LIMIT = 1024 * 1024  # read at most this much of an answer
EXCERPT = 500  # characters of the answer kept as evidence of a failure
USER_AGENT = "onwatch-uptime/1"

Check = Callable[[Any, aiohttp.ClientSession], Awaitable[Outcome]]


async def run(
    kind: str, config: dict[str, Any], timeout: float, session: aiohttp.ClientSession
) -> Outcome:
    """Make one check of this kind; the answer comes within `timeout` seconds."""
    return (await _run(kind, config, timeout, session)).readable()


async def _run(
    kind: str, config: dict[str, Any], timeout: float, session: aiohttp.ClientSession
) -> Outcome:
    started = time.perf_counter()
    try:
        spec = specs.parse(kind, config)
    except specs.SpecError as e:
        return Outcome(ok=False, error=f"The monitor's settings are not valid: {e}")
    try:
        async with asyncio.timeout(timeout):
            return await CHECKS[kind](spec, session)
    except TimeoutError:
        return Outcome(ok=False, latency_ms=_ms(started), error=f"No answer within {timeout:g} s")
    except Exception as e:  # a check must never take the prober down with it
        return Outcome(ok=False, latency_ms=_ms(started), error=_describe(e))


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


class ProbeError(Exception):
    """A check cannot be made as configured; the message says why, for people."""


def _describe(e: BaseException) -> str:
    """Name what went wrong with a connection in words, whatever raised it."""
    if isinstance(e, ProbeError):
        return str(e)
    if isinstance(e, ssl.SSLCertVerificationError):
        return cert_rejected(e, "the server", None)
    if isinstance(e, aiohttp.ClientConnectorCertificateError):
        return cert_rejected(e.certificate_error, e.host, None)
    if isinstance(e, aiohttp.ClientConnectorDNSError | socket.gaierror):
        return f"Could not resolve {getattr(e, 'host', 'the host name')}: no such host"
    if isinstance(e, aiohttp.ClientConnectorSSLError):
        return f"The TLS handshake failed: {_reason(e.os_error)}"
    if isinstance(e, aiohttp.ClientConnectorError):
        return f"Could not connect to {e.host}:{e.port}: {_reason(e.os_error)}"
    if isinstance(e, aiohttp.ServerDisconnectedError):
        return "The server closed the connection without answering"
    if isinstance(e, aiohttp.TooManyRedirects):
        return "Too many redirects (more than 10); check the URL or turn off follow_redirects"
    if isinstance(e, aiohttp.ClientPayloadError):
        return "The answer's body was cut off or malformed"
    if isinstance(e, aiohttp.ClientResponseError):
        return f"The answer is not valid HTTP: {e.message}"
    if isinstance(e, ssl.SSLError):
        return f"The TLS handshake failed: {_reason(e)}"
    if isinstance(e, OSError):
        return f"Could not connect: {_reason(e)}"
    if isinstance(e, dns.exception.DNSException):
        return f"The DNS lookup failed: {e}"
    return f"The check failed: {type(e).__name__}: {e}"


def _reason(e: OSError) -> str:
    if isinstance(e, ssl.SSLError):
        return str(e.reason or e)  # OpenSSL's own code, e.g. WRONG_VERSION_NUMBER
    # asyncio words a refused connection as "Connect call failed (address)"; say why.
    return os.strerror(e.errno) if isinstance(e.errno, int) and e.errno > 0 else str(e)


# --- certificates ---------------------------------------------------------------------


def cert_facts(der: bytes, now: datetime) -> dict[str, Any]:
    """What a certificate says that an operator cares about."""
    cert = x509.load_der_x509_certificate(der)
    not_after = cert.not_valid_after_utc
    return {
        # Whole days, counted towards zero: 5 days 23 hours left is 5; expired: negative.
        "days_left": int((not_after - now).total_seconds() / 86400),
        "expired": not_after <= now,
        "expires": not_after.isoformat(),
        "issuer": cert.issuer.rfc4514_string(),
        "subject": cert.subject.rfc4514_string(),
        "names": _cert_names(cert),
    }


def _cert_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    dns_names: list[str] = san.get_values_for_type(x509.DNSName)
    return dns_names + [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]


def expiry_warning(facts: dict[str, Any], warn_days: int) -> str:
    days, day = facts["days_left"], facts["expires"][:10]
    if facts["expired"]:
        return f"The certificate expired on {day}; renew it"
    if days < warn_days:
        return f"The certificate expires in {days} days, on {day}; renew it"
    return ""


# OpenSSL's reasons for refusing a certificate (X509_V_ERR_*), in words.
_EXPIRED, _NOT_YET, _MISMATCH = 10, 9, 62
_UNTRUSTED = {18, 19, 20, 21}


def cert_rejected(err: Exception, name: str, facts: dict[str, Any] | None) -> str:
    """Why verification refused a certificate (an ssl.SSLCertVerificationError), in words."""
    code = getattr(err, "verify_code", None)
    reason = getattr(err, "verify_message", "") or str(err)
    if code == _EXPIRED:
        when = f" on {facts['expires'][:10]}" if facts else ""
        return f"The certificate of {name} expired{when}; renew it"
    if code == _NOT_YET:
        return f"The certificate of {name} is not valid yet; check the server's clock"
    if code == _MISMATCH:
        names = f" (it names {', '.join(facts['names']) or facts['subject']})" if facts else ""
        return f"The certificate is not valid for {name}{names}"
    if code in _UNTRUSTED:
        return (
            f"The certificate of {name} is not signed by a trusted authority"
            f" ({reason}); for a private CA set ca_file"
        )
    return f"The certificate of {name} was refused: {reason}"


_contexts: dict[tuple[str, int], ssl.SSLContext] = {}
_unverified: dict[str, ssl.SSLContext] = {}


def verifying_context(ca_file: str) -> ssl.SSLContext:
    """One context per CA file (reloaded when the file changes): building one is slow."""
    try:
        key = (ca_file, os.stat(ca_file).st_mtime_ns if ca_file else 0)
        if key not in _contexts:
            _contexts[key] = ssl.create_default_context(cafile=ca_file or None)
    except ssl.SSLError:
        raise ProbeError(f"The CA file {ca_file} holds no usable PEM certificate") from None
    except OSError as e:
        raise ProbeError(f"Cannot read the CA file {ca_file}: {_reason(e)}") from None
    return _contexts[key]


def _trusting_context() -> ssl.SSLContext:
    # Only to read a certificate that verification refused, so we can say why.
    if "trusting" not in _unverified:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        _unverified["trusting"] = ctx
    return _unverified["trusting"]


async def fetch_cert(host: str, port: int, name: str, ctx: ssl.SSLContext) -> bytes:
    """The server's certificate (DER), after a TLS handshake under `ctx`."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(
        asyncio.Protocol, host, port, ssl=ctx, server_hostname=name
    )
    try:
        der: bytes | None = transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        transport.close()
    if not der:
        raise ssl.SSLError("the server sent no certificate")
    return der


async def _refused_facts(host: str, port: int, name: str) -> dict[str, Any]:
    der = await fetch_cert(host, port, name, _trusting_context())
    return cert_facts(der, datetime.now(UTC))


# --- TLS ---------------------------------------------------------------------------------


async def check_tls(spec: specs.TlsSpec, session: aiohttp.ClientSession) -> Outcome:
    started = time.perf_counter()
    try:
        der = await fetch_cert(
            spec.host, spec.port, spec.checked_name(), verifying_context(spec.ca_file)
        )
    except ssl.SSLCertVerificationError as e:
        facts = await _refused_facts(spec.host, spec.port, spec.checked_name())
        error = cert_rejected(e, spec.checked_name(), facts)
        return Outcome(ok=False, latency_ms=_ms(started), error=error, details=facts)
    facts = cert_facts(der, datetime.now(UTC))
    warning = expiry_warning(facts, spec.warn_days)
    if warning:
        facts["warning"] = warning
    return Outcome(ok=True, latency_ms=_ms(started), details=facts)


# --- TCP ---------------------------------------------------------------------------------


async def check_tcp(spec: specs.TcpSpec, session: aiohttp.ClientSession) -> Outcome:
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    try:
        transport, _ = await loop.create_connection(asyncio.Protocol, spec.host, spec.port)
    except socket.gaierror:
        return Outcome(ok=False, error=f"Could not resolve {spec.host}: no such host")
    except OSError as e:
        error = f"Could not connect to {spec.host}:{spec.port}: {_reason(e)}"
        return Outcome(ok=False, latency_ms=_ms(started), error=error)
    transport.close()
    return Outcome(ok=True, latency_ms=_ms(started))


# --- DNS ---------------------------------------------------------------------------------

_system_resolver: dns.asyncresolver.Resolver | None = None


async def _resolver(nameserver: str) -> dns.asyncresolver.Resolver:
    global _system_resolver
    if not nameserver:
        # Reading the system's configuration once is enough; it rarely changes.
        if _system_resolver is None:
            _system_resolver = dns.asyncresolver.Resolver()
        return _system_resolver
    host, port = specs.split_hostport(nameserver, 53)
    loop = asyncio.get_running_loop()
    found = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver(str(found[0][4][0]), port)]
    return resolver


def _record_text(rdata: Any, record_type: str) -> str:
    if record_type == "TXT":
        return "".join(part.decode("utf-8", "replace") for part in rdata.strings)
    if record_type == "MX":
        return f"{rdata.preference} {rdata.exchange.to_text().rstrip('.')}"
    return str(rdata.to_text()).rstrip(".")


def _matches(expected: str, values: list[str], record_type: str) -> bool:
    want = expected.strip().rstrip(".").lower()
    if record_type == "TXT":
        return expected in values
    if record_type in ("A", "AAAA"):
        # 2001:db8::1 and 2001:DB8:0::1 are the same address.
        return _address(want) in {_address(value) for value in values}
    # An MX record matches on the mail host alone too: "mail.example.com" or "10 mail...".
    return any(want in (value.lower(), value.lower().split(" ")[-1]) for value in values)


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


async def check_dns(spec: specs.DnsSpec, session: aiohttp.ClientSession) -> Outcome:
    started = time.perf_counter()
    resolver = await _resolver(spec.nameserver)
    try:
        # The check's own timeout governs, not dnspython's default lifetime of 5 s.
        answer = await resolver.resolve(spec.name, spec.record_type, search=False, lifetime=3600)
    except dns.resolver.NXDOMAIN:
        return Outcome(ok=False, latency_ms=_ms(started), error=f"{spec.name} does not exist")
    except dns.resolver.NoAnswer:
        error = f"{spec.name} has no {spec.record_type} record"
        return Outcome(ok=False, latency_ms=_ms(started), error=error)
    except dns.resolver.NoNameservers as e:
        return Outcome(ok=False, latency_ms=_ms(started), error=f"No name server answered: {e}")
    values = sorted(_record_text(rdata, spec.record_type) for rdata in answer)
    outcome = Outcome(ok=True, latency_ms=_ms(started), details={"values": values})
    if spec.expected and not _matches(spec.expected, values, spec.record_type):
        outcome.ok = False
        outcome.error = (
            f"{spec.name} {spec.record_type} is {', '.join(values)}, expected {spec.expected}"
        )
    return outcome


# --- HTTP --------------------------------------------------------------------------------


class Answer:
    """What came back: status, (up to BODY_LIMIT of) body, certificate facts."""

    def __init__(self, status: int, body: bytes, charset: str | None, truncated: bool) -> None:
        self.status, self.body, self.truncated = status, body, truncated
        try:
            self.text = body.decode(charset or "utf-8", "replace")
        except LookupError:  # a charset Python does not know
            self.text = body.decode("utf-8", "replace")
        self.cert: dict[str, Any] = {}


def _tls_option(spec: specs.HttpSpec) -> ssl.SSLContext | bool:
    if not spec.verify_tls:
        return False
    return verifying_context(spec.ca_file) if spec.ca_file else True


async def _fetch(spec: specs.HttpSpec, session: aiohttp.ClientSession) -> Answer:
    headers = {"User-Agent": USER_AGENT, **spec.headers}
    async with session.request(
        spec.method,
        spec.url,
        headers=headers,
        data=spec.body.encode() if spec.body else None,
        allow_redirects=spec.follow_redirects,
        ssl=_tls_option(spec),
    ) as resp:
        der = _peer_cert(resp)
        body = await _read_body(resp.content)
        answer = Answer(resp.status, body[:BODY_LIMIT], resp.charset, len(body) > BODY_LIMIT)
        final = resp.url
    if der is None and final.scheme == "https" and final.host:
        der = await _cert_again(final.host, final.port or 443)
    if der:
        answer.cert = cert_facts(der, datetime.now(UTC))
    return answer


def _peer_cert(resp: aiohttp.ClientResponse) -> bytes | None:
    # `resp.connection` is already back in the pool when a short body came with the
    # headers, so ask the protocol the answer came on; aiohttp keeps it as `_protocol`.
    # Should that ever change, answers merely lose their certificate details.
    transport = getattr(getattr(resp, "_protocol", None), "transport", None)
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    der: bytes | None = ssl_object.getpeercert(binary_form=True) if ssl_object else None
    return der


async def _cert_again(host: str, port: int) -> bytes | None:
    """The certificate of a server that hung up right after answering (Connection: close):
    its connection is gone before the answer is read, so ask it once more. Only to report
    it: the answer itself was verified (or verification is off) already."""
    try:
        return await fetch_cert(host, port, host, _trusting_context())
    except (OSError, ssl.SSLError):
        return None  # it answered, so the check stands; only the expiry is unknown


async def _read_body(stream: aiohttp.StreamReader) -> bytes:
    # One byte past the limit tells us the answer was longer; the rest is never read.
    chunks: list[bytes] = []
    size = 0
    while size <= BODY_LIMIT:
        chunk = await stream.read(BODY_LIMIT + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


async def check_http(spec: specs.HttpSpec, session: aiohttp.ClientSession) -> Outcome:
    started = time.perf_counter()
    try:
        answer = await _fetch(spec, session)
    except aiohttp.ClientConnectorCertificateError as e:
        return await _cert_failure(e, started)
    outcome = Outcome(ok=True, latency_ms=_ms(started), status_code=answer.status)
    outcome.details.update(answer.cert)
    error = _judge(spec, answer, outcome.latency_ms or 0)
    if error:
        outcome.ok, outcome.error = False, error
        # PostgreSQL's jsonb cannot hold NUL: a binary answer would lose the whole outage.
        outcome.details["body"] = answer.text[:EXCERPT].replace("\x00", "\ufffd")
    warning = expiry_warning(answer.cert, spec.cert_expiry_warn_days) if answer.cert else ""
    if warning:
        outcome.details["warning"] = warning
    if answer.truncated:
        outcome.details["truncated"] = True
    return outcome


async def _cert_failure(e: aiohttp.ClientConnectorCertificateError, started: float) -> Outcome:
    # The host that refused may be one a redirect led to, so take it from the error.
    facts = await _refused_facts(e.host, e.port or 443, e.host)
    error = cert_rejected(e.certificate_error, e.host, facts)
    return Outcome(ok=False, latency_ms=_ms(started), error=error, details=facts)


def _judge(spec: specs.HttpSpec, answer: Answer, latency_ms: int) -> str:
    """The first assertion the answer fails, in words; empty if it passes them all."""
    for judge in (_judge_status, _judge_keywords, _judge_regex, _judge_json):
        error = judge(spec, answer)
        if error:
            return error
    if spec.max_latency_ms is not None and latency_ms > spec.max_latency_ms:
        return f"The answer took {latency_ms} ms, over the limit of {spec.max_latency_ms} ms"
    return ""


def _judge_status(spec: specs.HttpSpec, answer: Answer) -> str:
    ranges = specs.status_ranges(spec.accepted_status_codes)
    if any(low <= answer.status <= high for low, high in ranges):
        return ""
    accepted = ", ".join(str(code) for code in spec.accepted_status_codes)
    return f"Got status {answer.status}, expected {accepted}"


def _judge_keywords(spec: specs.HttpSpec, answer: Answer) -> str:
    if spec.keyword and spec.keyword not in answer.text:
        return f"The keyword {spec.keyword!r} is not in the answer"
    if spec.keyword_absent and spec.keyword_absent in answer.text:
        return f"The keyword {spec.keyword_absent!r} is in the answer, and must not be"
    return ""


def _judge_regex(spec: specs.HttpSpec, answer: Answer) -> str:
    if spec.regex and not re.search(spec.regex, answer.text):
        return f"Nothing in the answer matches the pattern {spec.regex!r}"
    if spec.regex_absent and re.search(spec.regex_absent, answer.text):
        return f"The answer matches the pattern {spec.regex_absent!r}, and must not"
    return ""


_MISSING = object()


def json_lookup(document: Any, path: str) -> Any:
    """The value at a path such as `data.items[0].status`, or _MISSING."""
    for step in specs.json_steps(path):
        document = _step_into(document, step)
        if document is _MISSING:
            break
    return document


def _step_into(document: Any, step: str | int) -> Any:
    if isinstance(step, int) and isinstance(document, list):
        return document[step] if -len(document) <= step < len(document) else _MISSING
    if isinstance(step, str) and isinstance(document, dict):
        return document.get(step, _MISSING)
    return _MISSING


def _same(found: Any, expected: Any) -> bool:
    # True is not 1 here, but 200 is "200": a form or YAML file may quote what it expects.
    if isinstance(found, bool) == isinstance(expected, bool) and found == expected:
        return True
    scalar = found is None or isinstance(found, int | float | bool)
    return scalar and isinstance(expected, str) and json.dumps(found) == expected


def _judge_json(spec: specs.HttpSpec, answer: Answer) -> str:
    if not spec.json_path:
        return ""
    try:
        document = json.loads(answer.text)
    except ValueError:
        return "The answer is not JSON, so json_path cannot be checked"
    found = json_lookup(document, spec.json_path)
    if found is _MISSING:
        return f"The answer has nothing at {spec.json_path}"
    if not _same(found, spec.json_expected):
        shown, wanted = json.dumps(found)[:100], json.dumps(spec.json_expected)[:100]
        return f"{spec.json_path} is {shown}, expected {wanted}"
    return ""


CHECKS: dict[str, Check] = {
    "http": check_http,
    "tcp": check_tcp,
    "dns": check_dns,
    "tls": check_tls,
}
