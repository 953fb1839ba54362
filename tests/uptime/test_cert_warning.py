"""A certificate about to expire, checked against a real local TLS server with a
short-lived certificate: a warning people are told of once (not an outage), shown wherever
the monitor is listed, re-judged when its warning days change, and cleared by a renewal."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.test import Client
from django.utils import timezone

from onwatch.alerts.models import Incident
from onwatch.alerts.services import add_channel
from onwatch.core import jobs
from onwatch.core.audit import CLI
from onwatch.core.models import Organization
from onwatch.core.services import issue_token
from onwatch.uptime import probes, state
from onwatch.uptime.models import Kind, Monitor, State
from onwatch.uptime.prober import Done, record
from onwatch.uptime.services import OWN, MonitorFields, MonitorInput, change_monitor
from onwatch.uptime.state import Outcome
from tests.support.fixtures import signed_in
from tests.support.receivers import WebhookReceiver
from tests.support.servers import HttpServer, Pki, make_pki

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

SOON = "The certificate expires in 5 days"
SHOWN = f"Warning: {SOON}"  # (the detail page's history keeps the evidence of old checks)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def probe(m: Monitor) -> Outcome:
    async def go() -> Outcome:
        async with aiohttp.ClientSession() as session:
            return await probes.run(m.kind, m.config, 5.0, session)

    return asyncio.run(go())


def check(m: Monitor) -> Monitor:
    """One check as the prober makes it: the real probe, then the prober's write-back."""
    m.refresh_from_db()
    outcome = probe(m)
    Monitor.objects.filter(pk=m.pk).update(claimed_by="test-prober")
    assert record("test-prober", [Done(m, outcome, timezone.now(), 0.0)]) == 1
    m.refresh_from_db()
    return m


def deliveries() -> int:
    return len(jobs.run_pending(kinds=["alerts.deliver"]))


def tls_monitor(org: Organization, port: int, ca_file: Path, **config: Any) -> Monitor:
    settings = {"host": "localhost", "port": port, "ca_file": str(ca_file), **config}
    return Monitor.objects.create(org=org, name="shop cert", kind=Kind.TLS, config=settings)


def test_a_certificate_about_to_expire_is_told_once_shown_everywhere_and_cleared_by_renewal(
    org: Organization, members: dict[str, Any], pki: Pki
) -> None:
    viewer = signed_in(members["viewer"])
    token = issue_token(members["viewer"], org, "test", ["monitors:read"], 30).raw
    api = Client(headers={"authorization": f"Bearer {token}"})
    with HttpServer(pki.expiring) as server, WebhookReceiver() as hooks:
        add_channel(org, "hook", hooks.url())
        m = tls_monitor(org, server.port, pki.ca_file, warn_days=14)
        check(m)
        check(m)
        deliveries()
        assert (m.state, m.warning[: len(SOON)]) == (State.UP, SOON)
        # Told once, as a warning of its own: not an outage, not at every check.
        [hook] = hooks.hooks
        assert hook.json["type"] == "warning"
        assert hook.json["title"] == "shop cert: the certificate expires soon"
        assert "this is a warning, not an outage" in hook.json["message"]
        assert f"/monitors/{m.pk}/" in hook.json["message"]
        assert not Incident.objects.exists()
        for page in ("/monitors/", "/", f"/monitors/{m.pk}/"):
            assert SHOWN in viewer.get(page).content.decode(), page
        [listed] = api.get("/api/v1/monitors/").json()["monitors"]
        assert listed["warning"].startswith(SOON)

        server.renew(pki.good)
        check(m)
        deliveries()
    assert (m.state, m.warning) == (State.UP, "")
    assert [h.json["type"] for h in hooks.hooks] == ["warning", "success"]
    assert hooks.hooks[1].json["title"] == "shop cert: the certificate warning is over"
    assert "days from now" in hooks.hooks[1].json["message"]
    for page in ("/monitors/", "/", f"/monitors/{m.pk}/"):
        assert SHOWN not in viewer.get(page).content.decode(), page


def change_config(m: Monitor, config: dict[str, Any]) -> None:
    fields = MonitorFields.model_validate({n: getattr(m, n) for n in OWN} | {"config": config})
    change_monitor(m, MonitorInput(fields, m.policy_id, m.parent_id), CLI)


def test_changing_the_warning_days_judges_the_certificate_again(
    org: Organization, pki: Pki
) -> None:
    with HttpServer(pki.expiring) as server:
        m = check(tls_monitor(org, server.port, pki.ca_file))  # 14 days by default
        assert m.warning.startswith(SOON)
        config = {**m.config, "warn_days": 3}
        change_config(m, config)
        m.refresh_from_db()
        assert m.next_check_at <= timezone.now()  # checked again at once
        assert check(m).warning == ""
        change_config(m, {**config, "warn_days": 7})
        assert check(m).warning.startswith(SOON)


def test_an_https_monitor_warns_when_the_server_hangs_up_after_answering(
    org: Organization, pki: Pki
) -> None:
    with HttpServer(pki.expiring) as server:
        m = Monitor.objects.create(
            org=org,
            name="shop",
            kind=Kind.HTTP,
            config={"url": server.url("/close"), "ca_file": str(pki.ca_file)},
        )
        assert check(m).warning.startswith(SOON)


def test_an_expired_certificate_passed_without_verification_is_not_called_soon(
    org: Organization, pki: Pki
) -> None:
    with HttpServer(pki.expired) as server, WebhookReceiver() as hooks:
        add_channel(org, "hook", hooks.url())
        m = Monitor.objects.create(
            org=org, name="test host", kind=Kind.HTTP,
            config={"url": server.url("/ok"), "verify_tls": False},
        )  # fmt: skip
        assert check(m).warning.startswith("The certificate expired on ")
        deliveries()
    assert hooks.hooks[0].json["title"] == "test host: the certificate has expired"


def test_a_warning_counts_its_days_when_shown_and_does_not_say_it_works_while_down(
    org: Organization, members: dict[str, Any], pki: Pki
) -> None:
    viewer = signed_in(members["viewer"])
    pem = x509.load_pem_x509_certificate(pki.expiring.cert_file.read_bytes())
    der = pem.public_bytes(serialization.Encoding.DER)
    with HttpServer(pki.expiring) as server:
        m = tls_monitor(org, server.port, pki.ca_file, warn_days=14)
        assert check(m).cert_expires_at == pem.not_valid_after_utc
        # What a check three days ago left: the prober's own words, as of then.
        then = timezone.now() - timedelta(days=3)
        facts = probes.cert_facts(der, then)
        facts["warning"] = probes.expiry_warning(facts, 14)
        state.apply(m, Outcome(ok=True, latency_ms=5, details=facts), then)
    assert m.warning.startswith("The certificate expires in 8 days")
    # Since then, every check failed (the server is gone): the monitor goes down.
    for _ in range(m.confirmations):
        check(m)
    assert m.state == State.DOWN and m.warning
    for page in ("/monitors/", "/", f"/monitors/{m.pk}/"):
        html = viewer.get(page).content.decode()
        assert SHOWN in html and "8 days" not in html, page
    detail = viewer.get(f"/monitors/{m.pk}/").content.decode()
    assert "It still works" not in detail
