"""Each kind of check against real local servers: passing and failing every assertion,
and failing in time when the target hangs, dribbles or talks nonsense."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from onwatch.uptime import probes
from onwatch.uptime.state import Outcome
from tests.support.servers import (
    DnsServer,
    HttpServer,
    Pki,
    SilentServer,
    closed_port,
    make_pki,
    probe,
)

# Uses no database of onwatch's: scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once


def timed(kind: str, config: dict[str, Any], timeout: float) -> tuple[Outcome, float]:
    started = time.monotonic()
    outcome = probe(kind, config, timeout)
    return outcome, time.monotonic() - started


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def web() -> Iterator[HttpServer]:
    with HttpServer() as server:
        yield server


@pytest.fixture
def secure(pki: Pki) -> Iterator[HttpServer]:
    with HttpServer(pki.good) as server:
        yield server


def http(web: HttpServer, path: str, **config: Any) -> Outcome:
    return probe("http", {"url": web.url(path), **config})


# --- HTTP: status, redirects ------------------------------------------------------------


def test_a_good_page_passes(web: HttpServer) -> None:
    outcome = http(web, "/ok")
    assert (outcome.ok, outcome.status_code, outcome.error) == (True, 200, "")
    assert outcome.latency_ms is not None and 0 <= outcome.latency_ms < 1000
    assert "body" not in outcome.details  # evidence is kept for failures only


def test_a_server_error_fails_with_an_excerpt_of_the_body(web: HttpServer) -> None:
    outcome = http(web, "/error")
    assert not outcome.ok and outcome.status_code == 500
    assert outcome.error == "Got status 500, expected 200-299"
    assert outcome.details["body"] == "Internal error: the database is down"


def test_accepted_codes_may_mix_ranges_and_single_codes(web: HttpServer) -> None:
    assert http(web, "/error", accepted_status_codes=["200-299", 500]).ok
    outcome = http(web, "/ok", accepted_status_codes=["300-399", 404])
    assert outcome.error == "Got status 200, expected 300-399, 404"


def test_redirects_are_followed_by_default(web: HttpServer) -> None:
    outcome = http(web, "/redirect", keyword="Welcome")
    assert outcome.ok and outcome.status_code == 200
    assert web.seen == ["/redirect", "/ok"]


def test_redirects_can_be_judged_themselves(web: HttpServer) -> None:
    outcome = http(web, "/redirect", follow_redirects=False)
    assert outcome.error == "Got status 302, expected 200-299"
    assert http(web, "/redirect", follow_redirects=False, accepted_status_codes=[302]).ok
    assert "/ok" not in web.seen


def test_a_redirect_loop_fails_clearly(web: HttpServer) -> None:
    outcome = http(web, "/loop")
    assert not outcome.ok and outcome.error.startswith("Too many redirects")


def test_method_headers_and_body_are_sent_as_configured(web: HttpServer) -> None:
    config = {"method": "PUT", "headers": {"X-Token": "abc"}, "body": "hello"}
    assert http(web, "/echo", **config, json_path="method", json_expected="PUT").ok
    assert http(web, "/echo", **config, json_path="headers.X-Token", json_expected="abc").ok
    assert http(web, "/echo", **config, json_path="body", json_expected="hello").ok
    outcome = http(web, "/echo", **config, json_path="body", json_expected="bye")
    assert outcome.error == 'body is "hello", expected "bye"'


def test_a_head_request_needs_no_body(web: HttpServer) -> None:
    outcome = http(web, "/ok", method="HEAD")
    assert outcome.ok and outcome.status_code == 200


# --- HTTP: what the answer must say ------------------------------------------------------


def test_keyword_present(web: HttpServer) -> None:
    assert http(web, "/ok", keyword="Welcome to the shop").ok
    outcome = http(web, "/ok", keyword="Checkout")
    assert outcome.error == "The keyword 'Checkout' is not in the answer"
    assert "Welcome to the shop" in outcome.details["body"]


def test_keyword_absent(web: HttpServer) -> None:
    assert http(web, "/ok", keyword_absent="Maintenance").ok
    outcome = http(web, "/ok", keyword_absent="shop")
    assert outcome.error == "The keyword 'shop' is in the answer, and must not be"


def test_regex_present(web: HttpServer) -> None:
    assert http(web, "/ok", regex=r"Version 4\.\d+\.\d+").ok
    outcome = http(web, "/ok", regex=r"Version 5\.\d+")
    assert outcome.error == r"Nothing in the answer matches the pattern 'Version 5\\.\\d+'"


def test_regex_absent(web: HttpServer) -> None:
    assert http(web, "/ok", regex_absent=r"(?i)error|exception").ok
    outcome = http(web, "/error", accepted_status_codes=[500], regex_absent=r"(?i)error")
    assert outcome.error == "The answer matches the pattern '(?i)error', and must not"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("data.items[0].status", "ok"),
        ("data.items[-1].count", 3),
        ("data.items[0].count", "3"),  # a form may quote numbers
        ("data.items[0].live", True),
        ("data.items[0].live", "true"),
        ("code", 200),
        ("data.items[0]", {"status": "ok", "count": 3, "live": True}),
    ],
)
def test_json_path_passes_when_the_value_is_there(
    web: HttpServer, path: str, expected: Any
) -> None:
    outcome = http(web, "/json", json_path=path, json_expected=expected)
    assert outcome.ok, outcome.error


@pytest.mark.parametrize(
    ("path", "expected", "error"),
    [
        ("data.items[0].status", "down", 'data.items[0].status is "ok", expected "down"'),
        ("data.items[0].live", 1, "data.items[0].live is true, expected 1"),
        ("code", 201, "code is 200, expected 201"),
        ("data.items[1].status", "ok", "The answer has nothing at data.items[1].status"),
        ("data.total", 3, "The answer has nothing at data.total"),
        ("data.items.status", "ok", "The answer has nothing at data.items.status"),
    ],
)
def test_json_path_fails_when_the_value_differs_or_is_missing(
    web: HttpServer, path: str, expected: Any, error: str
) -> None:
    outcome = http(web, "/json", json_path=path, json_expected=expected)
    assert (outcome.ok, outcome.error) == (False, error)


def test_json_path_on_an_answer_that_is_not_json(web: HttpServer) -> None:
    outcome = http(web, "/ok", json_path="status", json_expected="ok")
    assert outcome.error == "The answer is not JSON, so json_path cannot be checked"


def test_latency_limit(web: HttpServer) -> None:
    assert http(web, "/slow?ms=50", max_latency_ms=5000).ok
    outcome = http(web, "/slow?ms=300", max_latency_ms=100)
    assert not outcome.ok and outcome.latency_ms is not None and outcome.latency_ms >= 300
    assert outcome.error == f"The answer took {outcome.latency_ms} ms, over the limit of 100 ms"


# --- HTTP: targets that misbehave --------------------------------------------------------


@pytest.mark.parametrize("path", ["/hang", "/dribble"])
def test_a_target_that_hangs_fails_within_the_timeout(web: HttpServer, path: str) -> None:
    outcome, took = timed("http", {"url": web.url(path)}, timeout=1.0)
    assert (outcome.ok, outcome.error) == (False, "No answer within 1 s")
    assert 1.0 <= took < 1.5


def test_a_hanging_target_does_not_hold_up_other_checks(web: HttpServer) -> None:
    paths = ["/hang", "/dribble", "/huge", "/garbage"] + ["/ok"] * 20

    async def one(session: aiohttp.ClientSession, path: str) -> tuple[Outcome, float]:
        started = time.monotonic()
        outcome = await probes.run("http", {"url": web.url(path)}, 2.0, session)
        return outcome, time.monotonic() - started

    async def together() -> list[tuple[Outcome, float]]:
        async with aiohttp.ClientSession() as session:
            return await asyncio.gather(*(one(session, path) for path in paths))

    results = asyncio.run(together())
    assert [outcome.ok for outcome, _ in results] == [False, False, True, False] + [True] * 20
    assert max(took for _, took in results[4:]) < 1.0  # the good ones did not wait


def test_garbage_instead_of_http_fails_clearly(web: HttpServer) -> None:
    outcome, took = timed("http", {"url": web.url("/garbage")}, timeout=3.0)
    assert not outcome.ok and outcome.error.startswith("The answer is not valid HTTP"), outcome
    assert took < 1.0


def test_random_bytes_fail_in_one_readable_line_and_keep_the_whole_text(web: HttpServer) -> None:
    outcome = http(web, "/noise")
    assert not outcome.ok and outcome.error.startswith("The answer is not valid HTTP"), outcome
    assert len(outcome.error) <= 200 and "\n" not in outcome.error
    assert outcome.error.endswith("…")
    # The escaped bytes are still there as evidence, whole.
    assert outcome.details["error_full"].startswith("The answer is not valid HTTP")
    assert len(outcome.details["error_full"]) > 1000


def test_a_huge_body_is_read_only_up_to_the_limit(web: HttpServer) -> None:
    outcome, took = timed("http", {"url": web.url("/huge"), "keyword": "Welcome"}, timeout=5.0)
    assert outcome.ok and outcome.details["truncated"] is True
    assert took < 3.0  # 64 MB were promised; about 1 MB was read
    outcome = probe("http", {"url": web.url("/huge"), "keyword": "Goodbye"})
    assert outcome.error == "The keyword 'Goodbye' is not in the answer"
    assert len(outcome.details["body"]) == 500


def test_a_refused_connection_fails_clearly() -> None:
    port = closed_port()
    outcome = probe("http", {"url": f"http://127.0.0.1:{port}/"})
    assert outcome.error == f"Could not connect to 127.0.0.1:{port}: Connection refused"


def test_invalid_settings_fail_the_check_instead_of_raising() -> None:
    outcome = probe("http", {"url": "gopher://x", "keyword": "a"})
    assert outcome.error == (
        "The monitor's settings are not valid: 'url' must be a full http:// or https:// address"
    )
    assert probe("heartbeat", {}).error.startswith("The monitor's settings are not valid")


# --- HTTPS -------------------------------------------------------------------------------


def test_https_with_a_private_ca_passes_and_reports_the_certificate(
    secure: HttpServer, pki: Pki
) -> None:
    outcome = http(secure, "/ok", ca_file=str(pki.ca_file), keyword="Welcome")
    assert outcome.ok, outcome.error
    assert outcome.details["days_left"] == 89
    assert outcome.details["issuer"] == "CN=onwatch test CA"
    assert outcome.details["subject"] == "CN=localhost"
    assert "warning" not in outcome.details


def test_https_from_an_unknown_authority_fails(secure: HttpServer) -> None:
    outcome = http(secure, "/ok")
    assert not outcome.ok
    assert outcome.error.startswith("The certificate of localhost is not signed by a trusted")
    assert outcome.error.endswith("for a private CA set ca_file")
    assert outcome.details["issuer"] == "CN=onwatch test CA"


def test_https_without_verification_still_reports_the_certificate(secure: HttpServer) -> None:
    outcome = http(secure, "/ok", verify_tls=False)
    assert outcome.ok and outcome.details["subject"] == "CN=localhost"


def test_https_with_an_expired_certificate_fails(pki: Pki) -> None:
    with HttpServer(pki.expired) as server:
        outcome = http(server, "/ok", ca_file=str(pki.ca_file))
        assert outcome.error.startswith("The certificate of localhost expired on 20")
        assert outcome.details["days_left"] == -3 and outcome.details["expired"] is True
        # Told not to verify, it passes but still warns.
        outcome = http(server, "/ok", verify_tls=False)
        assert outcome.ok and outcome.details["warning"].startswith("The certificate expired on 20")


MISMATCH = "The certificate is not valid for localhost (it names wrong.example)"


def test_https_for_the_wrong_name_fails(pki: Pki) -> None:
    with HttpServer(pki.wrong_name) as server:
        outcome = http(server, "/ok", ca_file=str(pki.ca_file))
    assert outcome.error == MISMATCH


def test_https_warns_when_the_certificate_expires_soon(pki: Pki) -> None:
    with HttpServer(pki.expiring) as server:
        outcome = http(server, "/ok", ca_file=str(pki.ca_file))
        assert outcome.ok and outcome.details["warning"].startswith(
            "The certificate expires in 5 days"
        )
        outcome = http(server, "/ok", ca_file=str(pki.ca_file), cert_expiry_warn_days=3)
        assert outcome.ok and "warning" not in outcome.details


def test_https_reports_the_certificate_of_a_server_that_hangs_up_after_answering(
    pki: Pki,
) -> None:
    # Connection: close: the connection is gone by the time the answer is read.
    with HttpServer(pki.expiring) as server:
        outcome = http(server, "/close", ca_file=str(pki.ca_file))
    assert outcome.ok and outcome.status_code == 200
    assert outcome.details["days_left"] == 5
    assert outcome.details["warning"].startswith("The certificate expires in 5 days")


# --- TCP ---------------------------------------------------------------------------------


def test_tcp_connects_to_an_open_port(web: HttpServer) -> None:
    outcome = probe("tcp", {"host": "127.0.0.1", "port": web.port})
    assert outcome.ok and outcome.latency_ms is not None


def test_tcp_fails_on_a_closed_port() -> None:
    port = closed_port()
    outcome = probe("tcp", {"host": "localhost", "port": port})
    assert outcome.error == f"Could not connect to localhost:{port}: Connection refused"


# --- TLS ---------------------------------------------------------------------------------


def tls(port: int, pki: Pki, **config: Any) -> Outcome:
    return probe("tls", {"host": "localhost", "port": port, "ca_file": str(pki.ca_file), **config})


def test_tls_reports_days_left_issuer_and_names(secure: HttpServer, pki: Pki) -> None:
    outcome = tls(secure.port, pki)
    assert outcome.ok, outcome.error
    assert outcome.details["days_left"] == 89
    assert outcome.details["issuer"] == "CN=onwatch test CA"
    assert outcome.details["names"] == ["localhost", "127.0.0.1"]
    assert tls(secure.port, pki, host="127.0.0.1").ok  # the IP address is named too


def test_tls_fails_on_a_name_mismatch(pki: Pki) -> None:
    with HttpServer(pki.wrong_name) as server:
        outcome = tls(server.port, pki)
        assert (
            outcome.error == "The certificate is not valid for localhost (it names wrong.example)"
        )
        assert outcome.details["subject"] == "CN=wrong.example"
        assert tls(server.port, pki, server_name="wrong.example").ok


def test_tls_fails_on_an_expired_certificate(pki: Pki) -> None:
    with HttpServer(pki.expired) as server:
        outcome = tls(server.port, pki)
    assert not outcome.ok and outcome.details["days_left"] == -3
    assert outcome.error == (
        f"The certificate of localhost expired on {outcome.details['expires'][:10]}; renew it"
    )


def test_tls_warns_within_warn_days(pki: Pki) -> None:
    with HttpServer(pki.expiring) as server:
        outcome = tls(server.port, pki, warn_days=7)
        assert outcome.ok and outcome.details["warning"].startswith("The certificate expires in 5")
        assert "warning" not in tls(server.port, pki, warn_days=5).details


def test_tls_fails_without_the_private_ca(secure: HttpServer, pki: Pki) -> None:
    outcome = tls(secure.port, pki, ca_file="")
    assert not outcome.ok and "not signed by a trusted authority" in outcome.error


def test_tls_gives_up_on_a_silent_server_in_time(pki: Pki) -> None:
    with SilentServer() as silent:
        config = {"host": "127.0.0.1", "port": silent.port, "ca_file": str(pki.ca_file)}
        outcome, took = timed("tls", config, timeout=1.0)
    assert (outcome.ok, outcome.error) == (False, "No answer within 1 s")
    assert took < 1.5


def test_tls_fails_on_a_server_that_does_not_speak_tls(web: HttpServer, pki: Pki) -> None:
    outcome = tls(web.port, pki)
    assert not outcome.ok and outcome.error.startswith("The TLS handshake failed: ")
    outcome = probe("http", {"url": web.url("/ok").replace("http:", "https:")})
    assert not outcome.ok and outcome.error.startswith("The TLS handshake failed: ")


def test_tls_fails_on_a_closed_port(pki: Pki) -> None:
    port = closed_port()
    outcome = tls(port, pki)
    assert not outcome.ok and outcome.error.startswith("Could not connect")


def test_a_missing_or_broken_ca_file_is_named(secure: HttpServer, tmp_path: Path) -> None:
    missing = tmp_path / "gone.pem"
    outcome = probe("tls", {"host": "localhost", "port": secure.port, "ca_file": str(missing)})
    assert outcome.error == f"Cannot read the CA file {missing}: No such file or directory"
    broken = tmp_path / "broken.pem"
    broken.write_text("not a certificate")
    outcome = http(secure, "/ok", ca_file=str(broken))
    assert outcome.error == f"The CA file {broken} holds no usable PEM certificate"


# --- DNS ---------------------------------------------------------------------------------

RECORDS = {
    ("shop.test", "A"): ["127.0.0.7", "127.0.0.8"],
    ("shop.test", "AAAA"): ["::7"],
    ("www.shop.test", "CNAME"): ["shop.test."],
    ("shop.test", "MX"): ["10 mail.shop.test."],
    ("shop.test", "TXT"): ['"v=spf1 -all"'],
}


@pytest.fixture
def nameserver() -> Iterator[str]:
    with DnsServer(RECORDS, silent={"slow.test"}) as server:
        yield f"127.0.0.1:{server.port}"


def lookup(nameserver: str, name: str, kind: str, expected: str = "", **more: Any) -> Outcome:
    config = {"name": name, "record_type": kind, "expected": expected, "nameserver": nameserver}
    return probe("dns", config, **more)


@pytest.mark.parametrize(
    ("name", "kind", "expected", "values"),
    [
        ("shop.test", "A", "127.0.0.8", ["127.0.0.7", "127.0.0.8"]),
        ("shop.test", "AAAA", "0:0::7", ["::7"]),
        ("www.shop.test", "CNAME", "shop.test", ["shop.test"]),
        ("shop.test", "MX", "mail.shop.test", ["10 mail.shop.test"]),
        ("shop.test", "MX", "10 mail.shop.test.", ["10 mail.shop.test"]),
        ("shop.test", "TXT", "v=spf1 -all", ["v=spf1 -all"]),
        ("shop.test", "A", "", ["127.0.0.7", "127.0.0.8"]),
    ],
)
def test_dns_passes_when_the_record_holds_the_expected_value(
    nameserver: str, name: str, kind: str, expected: str, values: list[str]
) -> None:
    outcome = lookup(nameserver, name, kind, expected)
    assert outcome.ok, outcome.error
    assert outcome.details["values"] == values


@pytest.mark.parametrize(
    ("name", "kind", "expected", "error"),
    [
        ("shop.test", "A", "10.0.0.1", "shop.test A is 127.0.0.7, 127.0.0.8, expected 10.0.0.1"),
        ("shop.test", "AAAA", "::8", "shop.test AAAA is ::7, expected ::8"),
        (
            "www.shop.test",
            "CNAME",
            "other.test",
            "www.shop.test CNAME is shop.test, expected other.test",
        ),
        (
            "shop.test",
            "MX",
            "mx.shop.test",
            "shop.test MX is 10 mail.shop.test, expected mx.shop.test",
        ),
        ("shop.test", "TXT", "v=spf1", "shop.test TXT is v=spf1 -all, expected v=spf1"),
    ],
)
def test_dns_fails_when_the_value_differs(
    nameserver: str, name: str, kind: str, expected: str, error: str
) -> None:
    outcome = lookup(nameserver, name, kind, expected)
    assert (outcome.ok, outcome.error) == (False, error)


def test_dns_fails_on_a_name_that_does_not_exist(nameserver: str) -> None:
    assert lookup(nameserver, "gone.test", "A").error == "gone.test does not exist"


def test_dns_fails_when_the_name_has_no_such_record(nameserver: str) -> None:
    assert lookup(nameserver, "www.shop.test", "A").error == "www.shop.test has no A record"


def test_dns_gives_up_on_a_silent_server_in_time(nameserver: str) -> None:
    started = time.monotonic()
    outcome = lookup(nameserver, "slow.test", "A", timeout=1.0)
    assert (outcome.ok, outcome.error) == (False, "No answer within 1 s")
    assert time.monotonic() - started < 1.5


def test_dns_takes_a_nameserver_by_host_name(nameserver: str) -> None:
    port = nameserver.rsplit(":", 1)[1]
    assert lookup(f"localhost:{port}", "shop.test", "A", "127.0.0.7").ok
