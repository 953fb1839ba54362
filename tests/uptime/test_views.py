"""The monitors' pages: the list (uptime from rollups, a fixed number of queries per page),
one monitor's history and charts, the form with the spec's messages, pause, resume,
removal, and the dashboard's summary. Who may do what is proved by the permission matrix;
here, that a viewer's POST changes nothing."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from onwatch.alerts import incidents
from onwatch.alerts.models import EscalationPolicy, Incident, IncidentState
from onwatch.core.models import AuditEntry, Organization
from onwatch.uptime import charts, rollups, state
from onwatch.uptime.forms import PICKER_LIMIT, MonitorForm, initial_settings
from onwatch.uptime.models import CheckResult, Kind, Monitor, Ping, Rollup, State, StateChange
from tests.support.fixtures import make_org, signed_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

HOUR = timedelta(hours=1)
NS = {"svg": charts.SVG_NS}


def make_monitor(org: Organization, name: str = "shop", **kw: Any) -> Monitor:
    kw.setdefault("kind", Kind.HTTP)
    kw.setdefault("config", {"url": "https://shop.example.com/health"})
    return Monitor.objects.create(org=org, name=name, **kw)


def svgs(html: str, css: str) -> list[ET.Element]:
    found = re.findall(rf'<svg [^>]*class="{css}".*?</svg>', html, re.S)
    return [ET.fromstring(s) for s in found]  # noqa: S314 - our own output


def history(m: Monitor, now: datetime) -> None:
    """Twenty hours of real results (one failure) rolled up, and ten older days of daily
    rollups, one of them half down."""
    results = []
    for k in range(1, 21):
        hour = rollups.floor_hour(now) - k * HOUR
        for i in range(10):
            ok = not (k == 3 and i == 0)
            results.append(
                CheckResult(
                    monitor=m,
                    at=hour + timedelta(minutes=5 * i + 1),
                    ok=ok,
                    latency_ms=100 + 10 * k if ok else None,
                )
            )
    CheckResult.objects.bulk_create(results)
    today = rollups.floor_day(now)
    for d in range(3, 13):
        Rollup.objects.create(
            monitor=m,
            period=Rollup.DAY,
            start=today - timedelta(days=d),
            checks=100,
            failures=50 if d == 5 else 0,
            latency_sum_ms=100 * 80,
            latency_max_ms=90,
        )
    rollups.run(now)


def test_the_list_shows_state_latency_and_uptime_from_the_rollups(
    org: Organization, members: Any
) -> None:
    now = timezone.now()
    m = make_monitor(org, state=State.DOWN, state_since=now - 2 * HOUR, last_latency_ms=321)
    make_monitor(org, "cron backup", kind=Kind.HEARTBEAT, config={})
    history(m, now)
    html = signed_in(members["viewer"]).get("/monitors/").content.decode()
    row = re.search(r'<tr class="monitor-down">.*?</tr>', html, re.S)
    assert row, html
    text = row.group(0)
    assert "shop" in text and "HTTP(S)" in text and "321 ms" in text
    assert f"since {timezone.localtime(m.state_since):%Y-%m-%d %H:%M}" in text
    # 24 h: 199 of 200 checks; 30 d adds ten days of 100 checks, 50 failures.
    assert '<td class="uptime-warn">99.50 %</td>' in text
    assert '<td class="uptime-bad">95.75 %</td>' in text
    # A monitor with no history says so, rather than 0 % or 100 %.
    assert "Heartbeat" in html and "no checks" in html
    # A viewer sees no way to add one.
    assert "/monitors/add/" not in html


def test_the_list_filters_by_state_searches_by_name_and_pages(
    org: Organization, members: Any
) -> None:
    for i in range(60):
        make_monitor(org, f"site {i:02}", state=State.UP if i % 3 else State.DOWN)
    make_monitor(org, "Payments API", state=State.PAUSED)
    make_monitor(make_org("Other"), "Payments elsewhere")
    client = signed_in(members["viewer"])
    down = client.get("/monitors/?state=down").content.decode()
    assert down.count('<tr class="monitor-down">') == 20
    assert "monitor-up" not in down and "down (20)" in down and "up (40)" in down
    found = client.get("/monitors/?q=payments").content.decode()
    assert "Payments API" in found and "Payments elsewhere" not in found
    assert found.count("<tr class=") == 1
    first = client.get("/monitors/").content.decode()
    assert first.count("<tr class=") == 50 and "Page 1 of 2 (61 monitors)" in first
    second = client.get("/monitors/?page=2").content.decode()
    assert second.count("<tr class=") == 11 and "site 59" in second and "site 00" not in second
    # The filter survives paging.
    paged = client.get("/monitors/?state=up&q=site").content.decode()
    assert 'href="?state=up&amp;q=site&amp;page=2"' not in paged  # 40 fit on one page
    assert paged.count('<tr class="monitor-up">') == 40


def queries_for_list(client: Any) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get("/monitors/").status_code == 200
    return len(ctx.captured_queries)


def test_a_page_of_the_list_costs_the_same_queries_however_many_monitors(
    org: Organization, members: Any
) -> None:
    client = signed_in(members["viewer"])
    now = timezone.now()
    for i in range(3):
        history(make_monitor(org, f"few {i}"), now)
    few = queries_for_list(client)
    Monitor.objects.bulk_create(make_monitor_row(org, f"many {i}") for i in range(120))
    assert queries_for_list(client) == few


def make_monitor_row(org: Organization, name: str) -> Monitor:
    return Monitor(org=org, name=name, kind=Kind.TCP, config={"host": "db", "port": 5432})


def test_the_detail_shows_evidence_bars_and_response_times(org: Organization, members: Any) -> None:
    now = timezone.now()
    m = make_monitor(org, state=State.DOWN, last_error="status 503 is not accepted")
    history(m, now)
    StateChange.objects.create(
        monitor=m,
        at=now - HOUR,
        old=State.UP,
        new=State.DOWN,
        evidence={
            "ok": False,
            "status": 503,
            "latency_ms": 87,
            "error": "status 503 is not accepted",
            "body": "<h1>Service Unavailable</h1>",
            "days_left": 3,
        },
    )
    incident = incidents.open_incident(org, state.source(m), "shop is down", {}, now=now)
    page = signed_in(members["viewer"]).get(f"/monitors/{m.pk}/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "503" in html and "87 ms" in html and "status 503 is not accepted" in html
    assert "&lt;h1&gt;Service Unavailable&lt;/h1&gt;" in html  # the body, escaped
    assert "days_left: 3" in html
    assert f"/incidents/{incident.pk}/" in html
    assert "GET https://shop.example.com/health" in html
    # 90 bars; the half-down day is red and says so.
    (bars,) = svgs(html, "uptime-bars")
    rects = bars.findall("svg:rect", NS)
    assert len(rects) == 90
    half = f"{rollups.floor_day(now) - timedelta(days=5):%Y-%m-%d}: 50.00 % of 100 checks"
    bad = [r for r in rects if r.get("class") == "bar bad"]
    assert half in [r.find("svg:title", NS).text for r in bad]  # type: ignore[union-attr]
    assert sum(r.get("class") == "bar none" for r in rects) >= 90 - 13
    # 24 h and 30 d of hourly averages: twenty measured hours, slower the older.
    day_chart, month_chart = svgs(html, "response-chart")
    for chart in (day_chart, month_chart):
        d = chart.find("svg:path", NS).get("d", "")  # type: ignore[union-attr]
        ys = [float(y) for y in re.findall(r"[ML][\d.]+,([\d.]+)", d)]
        assert len(ys) == 20
        assert ys == sorted(ys)  # oldest (slowest) first: highest on the chart
    assert "style=" not in html


def test_a_new_monitor_shows_its_first_checks_at_once_one_by_one(
    org: Organization, members: Any
) -> None:
    now = timezone.now()
    m = make_monitor(org, state=State.UP)
    # Three checks in the last minutes, one failed (not enough to go down); no roll-up yet.
    for minutes, ok in ((3, True), (2, False), (1, True)):
        CheckResult.objects.create(
            monitor=m,
            at=now - timedelta(minutes=minutes),
            ok=ok,
            latency_ms=40 if ok else None,
            status_code=200 if ok else 503,
            error="" if ok else "Got status 503, expected 200-299",
        )
    client = signed_in(members["viewer"])
    listed = client.get("/monitors/").content.decode()
    assert "66.66 %" in listed and "no checks" not in listed
    html = client.get(f"/monitors/{m.pk}/").content.decode()
    assert "24 hours: <strong>66.66 %</strong>" in html
    day_chart, _ = svgs(html, "response-chart")
    assert day_chart.find("svg:path", NS) is not None  # a response time is drawn
    (bars,) = svgs(html, "uptime-bars")
    assert bars.findall("svg:rect", NS)[-1].get("class") == "bar bad"  # today
    # Each check, the failure that did not take it down included.
    assert "Recent checks" in html and "1 of the last 3 checks failed" in html
    assert "Got status 503, expected 200-299" in html
    assert html.count('class="check-passed"') == 2 and html.count('class="check-failed"') == 1


def test_a_heartbeat_shows_its_ping_urls_and_last_pings(org: Organization, members: Any) -> None:
    hb = make_monitor(org, "backup", kind=Kind.HEARTBEAT, config={"period": 3600}, slug="backup")
    Ping.objects.create(monitor=hb, type=Ping.Type.FAIL, exit_status=2, body="disk <full>")
    html = signed_in(members["viewer"]).get(f"/monitors/{hb.pk}/").content.decode()
    assert f"http://localhost:{settings.PORT}/ping/{hb.ping_id}</code>" in html
    key = org.ping_key.key  # made on first view, for the slug URL
    assert f"/ping/{key}/backup</code>" in html
    assert "disk &lt;full&gt;" in html and "every 3600 s" in html
    assert "response-chart" not in html  # heartbeats have no response time


def test_another_organizations_monitor_is_not_found(org: Organization, members: Any) -> None:
    theirs = make_monitor(make_org("Other"))
    client = signed_in(members["owner"])
    assert client.get(f"/monitors/{theirs.pk}/").status_code == 404
    assert client.post(f"/monitors/{theirs.pk}/delete/").status_code == 404
    assert Monitor.objects.filter(pk=theirs.pk).exists()


# --- the form -----------------------------------------------------------------------------

HTTP_FORM = {
    "name": "Shop",
    "interval": "60",
    "retry_interval": "20",
    "timeout": "10",
    "confirmations": "3",
    "config_url": "https://shop.example.com/",
    "config_method": "GET",
    "config_accepted_status_codes": "200-299, 301",
    "config_headers": "Authorization: Bearer s3cret-token\nAccept: text/html",
    "config_follow_redirects": "on",
    "config_verify_tls": "on",
    "config_cert_expiry_warn_days": "14",
}


def test_a_deployer_adds_an_http_monitor_and_it_is_audited_without_secrets(
    org: Organization, members: Any
) -> None:
    r = signed_in(members["deployer"]).post("/monitors/add/http/", HTTP_FORM)
    m = Monitor.objects.get(org=org, name="Shop")
    assert r.status_code == 302 and r["Location"] == f"/monitors/{m.pk}/"
    assert m.config == {
        "url": "https://shop.example.com/",
        "accepted_status_codes": ["200-299", 301],
        "headers": {"Authorization": "Bearer s3cret-token", "Accept": "text/html"},
    }
    assert m.state == State.PENDING and m.next_check_at <= timezone.now()
    entry = AuditEntry.objects.get(action="monitor-added")
    assert entry.target == "Shop" and entry.data["kind"] == "http"
    assert "s3cret" not in str(entry.data)
    # The page shows header names, never their values.
    html = signed_in(members["viewer"]).get(f"/monitors/{m.pk}/").content.decode()
    assert "Accept, Authorization" in html and "s3cret" not in html


def test_a_viewer_never_sees_the_password_in_a_monitors_url(
    org: Organization, members: Any
) -> None:
    m = make_monitor(
        org,
        config={"url": "https://shopper:S3cret@shop.example.com:8443/health", "body": "pw=S3cret"},
    )
    html = signed_in(members["viewer"]).get(f"/monitors/{m.pk}/").content.decode()
    assert "S3cret" not in html
    # What is checked stays plain: the user, host and path.
    assert "GET https://shopper:(hidden)@shop.example.com:8443/health" in html
    listed = signed_in(members["viewer"]).get("/monitors/").content.decode()
    assert "S3cret" not in listed


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"config_url": "shop.example.com"}, "config_url", "'url' must be a full http://"),
        ({"config_regex": "([a-z"}, "config_regex", "is not a valid regular expression"),
        (
            {"config_json_path": "data.status"},
            "config_json_expected",
            "'json_expected' is required with 'json_path'",
        ),
        (
            {"config_accepted_status_codes": "200-299, 600"},
            "config_accepted_status_codes",
            "'600' must lie between 100 and 599",
        ),
        ({"config_headers": "no colon here"}, "config_headers", "Write each header as Name: value"),
        ({"timeout": "60"}, "timeout", "'timeout' must be shorter than 'interval'"),
        ({"config_url": ""}, "config_url", "This field is required."),
    ],
)
def test_bad_settings_get_the_specs_message_on_their_field(
    org: Organization, members: Any, changes: dict[str, str], field: str, message: str
) -> None:
    r = signed_in(members["admin"]).post("/monitors/add/http/", {**HTTP_FORM, **changes})
    assert r.status_code == 200
    errors = r.context["form"].errors
    assert any(message in e for e in errors[field]), errors
    assert message.replace("'", "&#x27;") in r.content.decode()
    assert not Monitor.objects.exists()


def test_a_heartbeat_with_both_period_and_cron_is_refused_in_one_line(
    org: Organization, members: Any
) -> None:
    form = {"name": "nightly", "config_period": "3600", "config_cron": "0 3 * * *", "slug": ""}
    r = signed_in(members["admin"]).post("/monitors/add/heartbeat/", form)
    assert r.context["form"].non_field_errors() == [
        "give either 'period' (seconds) or 'cron', not both"
    ]
    form.pop("config_period")
    r = signed_in(members["admin"]).post("/monitors/add/heartbeat/", {**form, "slug": "nightly"})
    hb = Monitor.objects.get(name="nightly")
    assert r.status_code == 302 and hb.kind == Kind.HEARTBEAT
    assert hb.config == {"cron": "0 3 * * *"} and hb.confirmations == 1 and hb.slug == "nightly"
    again = signed_in(members["admin"]).post(
        "/monitors/add/heartbeat/", {**form, "name": "twin", "slug": "nightly"}
    )
    assert "Another monitor already uses this slug" in str(again.context["form"].errors["slug"])


def test_an_unknown_kind_is_not_found(members: Any) -> None:
    assert signed_in(members["admin"]).get("/monitors/add/ftp/").status_code == 404


def test_a_stored_config_round_trips_through_the_form_unchanged(org: Organization) -> None:
    config = {
        "url": "https://api.example.com/v1/health",
        "method": "POST",
        "headers": {"X-Token": "abc"},
        "body": '{"ping": true}',
        "accepted_status_codes": ["200-204", 301],
        "keyword_absent": "error",
        "json_path": "data.items[0].status",
        "json_expected": None,
        "max_latency_ms": 800,
        "follow_redirects": False,
        "cert_expiry_warn_days": 30,
    }
    m = make_monitor(org, config=config)
    initial = initial_settings(m.kind, m.config)
    data = {
        "name": m.name,
        "interval": 60,
        "retry_interval": 20,
        "timeout": 10,
        "confirmations": 3,
        # A browser sends an unticked box as nothing at all.
        **{k: ("on" if v is True else v) for k, v in initial.items() if v is not False},
    }
    form = MonitorForm(data, org=org, kind=m.kind, monitor=m)
    assert form.is_valid(), form.errors
    assert form.cleaned_data["config"] == config


def test_an_edit_writes_only_what_the_form_holds_and_audits_the_change(
    org: Organization, members: Any
) -> None:
    since = timezone.now() - 5 * HOUR
    m = make_monitor(org, state=State.DOWN, state_since=since, failures=4, last_latency_ms=9)
    policy = EscalationPolicy.objects.create(org=org, name="on call")
    changes = {
        "name": "Shop front",
        "config_url": "https://shop.example.com/v2",
        "policy": policy.pk,
    }
    r = signed_in(members["deployer"]).post(f"/monitors/{m.pk}/edit/", {**HTTP_FORM, **changes})
    assert r.status_code == 302
    m.refresh_from_db()
    assert m.name == "Shop front" and m.policy == policy
    assert m.config["url"] == "https://shop.example.com/v2"
    # The prober's columns are left as they were, but for its count of failures, which
    # counted the old address's answers: a new target starts over, checked at once.
    assert (m.state, m.state_since, m.last_latency_ms) == (State.DOWN, since, 9)
    assert m.failures == 0 and m.next_check_at <= timezone.now()
    entry = AuditEntry.objects.get(action="monitor-changed")
    assert entry.data["changed"] == ["name", "config", "policy"]


def test_a_monitor_cannot_depend_on_one_that_depends_on_it(org: Organization, members: Any) -> None:
    top = make_monitor(org, "router")
    middle = make_monitor(org, "db", parent=top)
    make_monitor(org, "app", parent=middle)
    r = signed_in(members["admin"]).post(
        f"/monitors/{top.pk}/edit/",
        {**HTTP_FORM, "name": "router", "parent": Monitor.objects.get(name="app").pk},
    )
    assert "app already depends on this monitor" in r.context["form"].errors["parent"][0]
    top.refresh_from_db()
    assert top.parent is None


def test_a_viewer_cannot_add_change_pause_or_remove(org: Organization, members: Any) -> None:
    m = make_monitor(org)
    viewer = signed_in(members["viewer"])
    assert viewer.post("/monitors/add/http/", HTTP_FORM).status_code == 403
    assert viewer.post(f"/monitors/{m.pk}/edit/", {**HTTP_FORM, "name": "x"}).status_code == 403
    assert viewer.post(f"/monitors/{m.pk}/pause/").status_code == 403
    assert viewer.post(f"/monitors/{m.pk}/delete/").status_code == 403
    m.refresh_from_db()
    assert Monitor.objects.count() == 1 and m.name == "shop" and m.state == State.PENDING


# --- pause, resume, remove ---------------------------------------------------------------


def test_pausing_stops_checks_and_closes_the_open_incident_resuming_checks_at_once(
    org: Organization, members: Any
) -> None:
    m = make_monitor(org, state=State.DOWN, failures=3)
    incidents.open_incident(org, state.source(m), "shop is down", {})
    client = signed_in(members["deployer"])
    r = client.post(f"/monitors/{m.pk}/pause/", follow=True)
    assert "is paused" in r.content.decode()
    m.refresh_from_db()
    assert (m.state, m.enabled, m.failures) == (State.PAUSED, False, 0)
    incident = Incident.objects.get(source=state.source(m))
    assert incident.state == IncidentState.RESOLVED
    assert incident.events.filter(kind="note", text="shop was paused.").exists()
    again = client.post(f"/monitors/{m.pk}/pause/", follow=True)
    assert "paused already" in again.content.decode()
    before = timezone.now()
    client.post(f"/monitors/{m.pk}/resume/")
    m.refresh_from_db()
    assert (m.state, m.enabled) == (State.PENDING, True) and m.next_check_at >= before
    assert [(c.old, c.new) for c in m.changes.order_by("at", "id")] == [
        ("down", "paused"),
        ("paused", "pending"),
    ]
    actions = set(AuditEntry.objects.values_list("action", flat=True))
    assert {"monitor-paused", "monitor-resumed"} <= actions


def test_removing_a_monitor_takes_its_history_and_is_audited(
    org: Organization, members: Any
) -> None:
    m = make_monitor(org)
    history(m, timezone.now())
    r = signed_in(members["deployer"]).post(f"/monitors/{m.pk}/delete/")
    assert r.status_code == 302 and r["Location"] == "/monitors/"
    assert not Monitor.objects.exists() and not Rollup.objects.exists()
    assert AuditEntry.objects.get(action="monitor-removed").target == "shop"


# --- dashboard ----------------------------------------------------------------------------


def test_the_dashboard_counts_monitors_by_state_and_open_incidents(
    org: Organization, members: Any
) -> None:
    for i, s in enumerate([State.UP, State.UP, State.UP, State.DOWN, State.PAUSED]):
        make_monitor(org, f"m{i}", state=s)
    make_monitor(make_org("Other"), "not ours", state=State.DOWN)
    down = Monitor.objects.get(org=org, name="m3")
    incidents.open_incident(org, state.source(down), "m3 is down", {})
    incidents.open_incident(org, "backups.plan:1", "not a monitor", {})
    html = signed_in(members["viewer"]).get("/").content.decode()
    block = re.search(r'<section class="cards uptime-summary">.*?</section>', html, re.S)
    assert block, html
    cards = re.findall(r"<strong>(\d+)</strong> ([a-z ]+)<", block.group(0))
    assert cards == [
        ("3", "up"),
        ("1", "down"),
        ("0", "pending"),
        ("1", "paused"),
        ("1", "open incident"),
    ]
    assert f'href="/monitors/{down.pk}/">m3</a>' in html


def test_an_empty_dashboard_suggests_adding_a_monitor(members: Any) -> None:
    html = signed_in(members["viewer"]).get("/").content.decode()
    assert "Nothing is watched yet" in html


def test_a_new_monitors_form_starts_from_the_specs_defaults(members: Any) -> None:
    client = signed_in(members["deployer"])
    kinds = client.get("/monitors/add/").content.decode()
    for kind in Kind.values:
        assert f'href="/monitors/add/{kind}/"' in kinds
    tls = client.get("/monitors/add/tls/").context["form"]
    assert tls["config_port"].value() == 443 and tls["config_warn_days"].value() == 14
    assert "interval" in tls.fields and "slug" not in tls.fields
    http = client.get("/monitors/add/http/").content.decode()
    assert 'value="200-299"' in http
    heartbeat = client.get("/monitors/add/heartbeat/").context["form"]
    assert heartbeat["config_grace"].value() == 3600 and heartbeat["config_tz"].value() == "UTC"
    assert "interval" not in heartbeat.fields and "slug" in heartbeat.fields


def test_with_many_monitors_depends_on_is_typed_by_name_not_picked_from_a_list(
    org: Organization, members: Any
) -> None:
    Monitor.objects.bulk_create(
        Monitor(org=org, name=f"svc {i}", kind=Kind.TCP, config={"host": "h", "port": 1})
        for i in range(PICKER_LIMIT + 1)
    )
    twin_a = make_monitor(org, "db")
    make_monitor(org, "db")
    client = signed_in(members["admin"])
    page = client.get("/monitors/add/http/").content.decode()
    assert "svc 17" not in page  # no list of every monitor
    assert 'name="parent"' in page
    r = client.post("/monitors/add/http/", {**HTTP_FORM, "parent": "svc 17"})
    assert r.status_code == 302
    assert Monitor.objects.get(name="Shop").parent == Monitor.objects.get(name="svc 17")
    r = client.post("/monitors/add/http/", {**HTTP_FORM, "name": "Shop 2", "parent": "nope"})
    assert "No other monitor is called 'nope'" in r.context["form"].errors["parent"][0]
    r = client.post("/monitors/add/http/", {**HTTP_FORM, "name": "Shop 2", "parent": "db"})
    assert "Several monitors are called 'db'" in r.context["form"].errors["parent"][0]
    r = client.post(
        "/monitors/add/http/", {**HTTP_FORM, "name": "Shop 2", "parent": f"#{twin_a.pk}"}
    )
    assert r.status_code == 302
    shop2 = Monitor.objects.get(name="Shop 2")
    assert shop2.parent == twin_a
    # Editing shows the parent's name in the box.
    assert 'value="db"' in client.get(f"/monitors/{shop2.pk}/edit/").content.decode()
