"""The watch of each new release is shown on the service's page and set there by those who
may change the service, and read and set through the API; each through services.set_watch
with its audit entry, and the service's own form and update leave it alone."""

from __future__ import annotations

import html
from typing import Any

import pytest

from onwatch.core.models import AuditEntry, Organization
from onwatch.deploys import services
from onwatch.deploys.models import Service
from tests.support.deploys import service_for
from tests.support.fixtures import TokenApi, signed_in

RULE = {
    "seconds": "120",
    "min_requests": "30",
    "error_percent": "2.5",
    "error_factor": "4",
    "latency_factor": "5",
    "latency_ms": "800",
}


@pytest.fixture
def shop(org: Organization) -> Service:
    return service_for(org, "/srv/git/shop.git")


def watch_of(service: Service) -> tuple[Any, ...]:
    service.refresh_from_db()
    return tuple(getattr(service, f) for f in services.WATCH_FIELDS)


def test_the_page_shows_the_watch_and_an_admin_changes_it_through_its_own_form(
    shop: Service, members: dict[str, Any]
) -> None:
    admin, page = signed_in(members["admin"]), f"/services/{shop.pk}/"
    shown = html.unescape(admin.get(page).content.decode())
    assert "After each deploy, each new release is watched for 300 s" in shown
    assert "over 500 ms on average and over 3 times as long" in shown
    saved = admin.post(f"{page}watch/", RULE)
    assert saved.status_code == 302
    assert watch_of(shop) == (120, 30, 2.5, 4.0, 5.0, 800)
    entry = AuditEntry.objects.get(action="service-watch-set")
    assert entry.data["watch_latency_ms"] == 800 and entry.data["watch_latency_factor"] == 5.0
    shown = html.unescape(admin.get(page).content.decode())
    assert "watched for 120 s" in shown and "over 800 ms on average and over 5 times" in shown
    # The service's own form changes the service, and leaves its watch as it was.
    fields = {"name": "shop", "git_url": shop.git_url, "branch": "main", "supersede": "on"}
    assert admin.post(f"{page}edit/", fields).status_code == 302
    assert watch_of(shop) == (120, 30, 2.5, 4.0, 5.0, 800)


def test_a_bad_watch_from_the_page_is_refused_in_one_plain_line(
    shop: Service, members: dict[str, Any]
) -> None:
    admin, page = signed_in(members["admin"]), f"/services/{shop.pk}/"
    before = watch_of(shop)
    refused = admin.post(f"{page}watch/", RULE | {"latency_factor": "0.5"}, follow=True)
    said = html.unescape(refused.content.decode())
    assert "The latency factor is 0 (latency does not count) or 1 to 1000" in said
    typed = admin.post(f"{page}watch/", RULE | {"seconds": "soon"}, follow=True)
    assert "Enter a whole number." in html.unescape(typed.content.decode())
    assert (
        watch_of(shop) == before
        and not AuditEntry.objects.filter(action="service-watch-set").exists()
    )


def test_a_viewer_sees_the_watch_but_no_form_to_change_it(
    shop: Service, members: dict[str, Any]
) -> None:
    viewer, page = signed_in(members["viewer"]), f"/services/{shop.pk}/"
    shown = viewer.get(page).content.decode()
    assert "each new release is watched for 300 s" in shown
    assert f"/services/{shop.pk}/watch/" not in shown
    assert viewer.post(f"{page}watch/", RULE).status_code == 403
    assert watch_of(shop)[0] == 300


def test_the_api_reads_the_watch_with_the_service_and_sets_it_on_its_own(
    org: Organization, shop: Service, members: dict[str, Any]
) -> None:
    api = TokenApi(members["admin"], org, ["services:read", "services:write"])
    base = f"/api/v1/services/{shop.pk}"
    watch = api.call("GET", f"{base}/").json()["watch"]
    assert watch["seconds"] == 300 and watch["latency_ms"] == 500
    assert watch["rule"] == services.watch_rule(shop)
    body = {k: float(v) if "." in v else int(v) for k, v in RULE.items()}
    put = api.call("PUT", f"{base}/watch/", body)
    assert put.status_code == 200, put.content
    assert put.json()["watch"] | {"rule": ""} == body | {"rule": ""}
    assert watch_of(shop) == (120, 30, 2.5, 4.0, 5.0, 800)
    assert AuditEntry.objects.filter(action="service-watch-set").count() == 1
    refused = api.call("PUT", f"{base}/watch/", body | {"min_requests": 0})
    assert refused.status_code == 422
    assert "At least 1 request must be answered" in refused.content.decode()
    partial = api.call("PUT", f"{base}/watch/", {"seconds": 60})
    assert partial.status_code == 422 and watch_of(shop)[0] == 120
