"""The public status page: chosen names, states, 90 daily bars, incident history and
maintenance notices, and nothing that was not chosen for it. Then the pages that manage
status pages: who may, what they save, and that it is audited."""

from __future__ import annotations

import itertools
import re
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from onwatch.alerts import incidents
from onwatch.alerts.models import Maintenance
from onwatch.core.models import AuditEntry, Organization
from onwatch.uptime import status_page
from onwatch.uptime.models import Monitor, Rollup, State, StatusPage, StatusPageItem
from onwatch.uptime.state import Outcome, apply, source
from tests.support.fixtures import make_org, signed_in

pytestmark = pytest.mark.usefixtures("fast_passwords")

# Things only the console may know: none of them may reach a public page or badge.
SECRETS = [
    "db-primary-internal-7731",
    "10.1.2.3",
    "secret-admin",
    "ECONNREFUSED from secret-backend-42",
    "hidden-billing-worker-5521",
    "on-call note: root password rotated",
    "private-window-zz",
    "other-team-window-qq",
    "uptime.monitor:",
]


def monitor(org: Organization, name: str, **kw: Any) -> Monitor:
    kw.setdefault("config", {"url": f"http://10.1.2.3/secret-admin/{name}"})
    return Monitor.objects.create(org=org, name=name, kind="http", **kw)


def day(now: datetime, ago: int) -> datetime:
    """The start of the day `ago` days before today, in onwatch's zone."""
    return status_page.bar_days(now)[-1 - ago]


def daily(m: Monitor, start: datetime, checks: int, failures: int = 0) -> None:
    Rollup.objects.create(
        monitor=m, period=Rollup.DAY, start=start, checks=checks, failures=failures
    )


def make_page(org: Organization, *items: tuple[Monitor, str], **kw: Any) -> StatusPage:
    kw.setdefault("slug", "acme")
    kw.setdefault("title", "Acme status")
    page = StatusPage.objects.create(org=org, **kw)
    for n, (m, label) in enumerate(items):
        StatusPageItem.objects.create(page=page, monitor=m, label=label, position=n)
    return page


def public(url: str) -> str:
    r = Client().get(url)
    assert r.status_code == 200, r.status_code
    return r.content.decode()


def fills(html: str, item: StatusPageItem) -> list[str]:
    block = html.split(f'id="item-{item.pk}"', 1)[1].split("</svg>", 1)[0]
    return re.findall(r'<rect class="bar bar-\w+" [^>]*fill="(#[0-9a-f]{6})"', block)


def go_down(m: Monitor, error: str, now: datetime) -> None:
    for n in range(m.confirmations):
        apply(m, Outcome(ok=False, error=error, status_code=503), now + timedelta(seconds=n))


# --- the public page ----------------------------------------------------------------------


def test_anyone_sees_labels_states_and_ninety_daily_bars_coloured_by_uptime(
    org: Organization, midday: datetime
) -> None:
    now = midday
    shop = monitor(org, "shop-internal", state=State.UP)
    api = monitor(org, "api-internal", state=State.DOWN)
    daily(shop, day(now, 1), 1000)
    daily(shop, day(now, 2), 1000, 5)
    daily(shop, day(now, 3), 1000, 30)
    daily(shop, day(now, 4), 1000, 500)
    page = make_page(org, (shop, "Web shop"), (api, "Public API"))
    items = list(page.items.all())

    html = public("/status/acme/")

    assert "Acme status" in html and "Partial outage" in html
    assert "Web shop" in html and "Public API" in html
    assert html.index("Web shop") < html.index("Public API")
    assert "Operational" in html and "Outage" in html
    colours = fills(html, items[0])
    assert len(colours) == 90 and len(fills(html, items[1])) == 90
    c = status_page.COLOURS
    assert colours[-5:] == [c["bad"], c["warn"], c["minor"], c["good"], c["none"]]
    assert set(colours[:-5]) == {c["none"]}
    # 4,000 checks, 535 failed, floored to the hundredth.
    assert "86.62% uptime" in html and "No data yet" in html
    assert fills(html, items[1]) == [c["none"]] * 90
    assert 'style="' not in html and "<script" not in html


def test_bars_follow_the_days_of_onwatchs_time_zone(org: Organization, settings: Any) -> None:
    settings.TIME_ZONE = "Pacific/Auckland"
    now = timezone.now()
    days = status_page.bar_days(now)
    assert len(days) == 90 and days[-1] <= now < days[-1] + timedelta(hours=25)
    local = [timezone.localtime(d, timezone.get_default_timezone()) for d in days]
    assert all((d.hour, d.minute) == (0, 0) for d in local)
    assert [(b - a).days for a, b in itertools.pairwise(local)] == [1] * 89


@pytest.mark.parametrize(
    ("states", "line"),
    [
        (["up", "up"], "All systems operational"),
        (["up", "down"], "Partial outage"),
        (["down", "down", "paused"], "Major outage"),
        (["up", "maintenance"], "Maintenance in progress"),
        (["up", "pending", "paused"], "All systems operational"),
        (["pending"], "Status not known yet"),
        ([], "Status not known yet"),
    ],
)
def test_the_overall_line_sums_up_the_states(states: list[str], line: str) -> None:
    assert status_page.overall(states).text == line


def test_a_paused_or_disabled_monitor_shows_as_not_monitored(org: Organization) -> None:
    paused = monitor(org, "a", state=State.PAUSED)
    disabled = monitor(org, "b", state=State.DOWN, enabled=False)
    make_page(org, (paused, "Reports"), (disabled, "Exports"))
    html = public("/status/acme/")
    assert html.count("Not monitored") == 2 and "Outage" not in html


@pytest.mark.django_db
def test_an_unknown_page_is_not_found() -> None:
    assert Client().get("/status/nope/").status_code == 404


def test_incidents_are_titled_by_the_chosen_name_and_show_how_long_they_lasted(
    org: Organization,
) -> None:
    now = timezone.now()
    shop = monitor(org, "shop-internal")
    api = monitor(org, "api-internal")
    page = make_page(org, (shop, "Web shop"), (api, "Public API"))
    incidents.open_incident(
        org, source(shop), "shop-internal is down", {}, now=now - timedelta(days=3)
    )
    incidents.resolve_incident(org, source(shop), {}, now=now - timedelta(days=3, minutes=-42))
    incidents.open_incident(
        org, source(api), "api-internal is down", {}, now=now - timedelta(hours=1)
    )
    # Older than 90 days and over: history the page no longer shows.
    incidents.open_incident(org, source(shop), "old", {}, now=now - timedelta(days=120))
    incidents.resolve_incident(org, source(shop), {}, now=now - timedelta(days=119))

    html = public("/status/acme/")
    section = html.split("Incident history", 1)[1]
    assert "Public API is down" in section and "Web shop was down" in section
    assert section.index("Public API is down") < section.index("Web shop was down")
    assert "for 42 min" in section and "Ongoing" in section and "Resolved" in section
    assert section.count('<li class="incident') == 2

    page.show_incidents = False
    page.save()
    html = public("/status/acme/")
    assert "Incident history" not in html and "Web shop was down" not in html


def test_public_maintenance_is_announced_and_marks_what_it_covers(org: Organization) -> None:
    now = timezone.now()
    shop = monitor(org, "shop-internal", state=State.DOWN)
    api = monitor(org, "api-internal", state=State.UP)
    other = monitor(org, "elsewhere", state=State.UP)
    make_page(org, (shop, "Web shop"), (api, "Public API"))
    Maintenance.objects.create(
        org=org,
        name="Database upgrade",
        sources=[source(shop)],
        starts_at=now - timedelta(minutes=10),
        ends_at=now + timedelta(minutes=50),
    )
    Maintenance.objects.create(
        org=org,
        name="Network work",
        starts_at=now + timedelta(days=2),
        ends_at=now + timedelta(days=2, hours=1),
    )
    Maintenance.objects.create(
        org=org, name="Weekly restart", cron="30 3 * * 0", tz="Europe/Prague", duration_minutes=15
    )
    Maintenance.objects.create(
        org=org,
        name="Long over",
        starts_at=now - timedelta(days=2),
        ends_at=now - timedelta(days=1),
    )
    Maintenance.objects.create(
        org=org,
        name="Far ahead",
        starts_at=now + timedelta(days=60),
        ends_at=now + timedelta(days=61),
    )
    Maintenance.objects.create(
        org=org, name="private-window-zz", public=False,
        starts_at=now - timedelta(minutes=1), ends_at=now + timedelta(hours=1),
    )  # fmt: skip
    Maintenance.objects.create(
        org=org, name="other-team-window-qq", sources=[source(other)],
        starts_at=now - timedelta(minutes=1), ends_at=now + timedelta(hours=1),
    )  # fmt: skip

    html = public("/status/acme/")
    section = html.split("Maintenance</h2>", 1)[1].split("</section>", 1)[0]
    assert "Database upgrade" in section and "In progress" in section
    assert "Affects Web shop" in section and "Affects all services" in section
    assert "Network work" in section and "Weekly restart" in section and "Next:" in section
    for hidden in ("Long over", "Far ahead", "private-window-zz", "other-team-window-qq"):
        assert hidden not in html
    # The shop is down, but inside an announced window: that is maintenance, not an outage.
    assert "Maintenance in progress" in html and "Outage" not in html
    assert section.index("Database upgrade") < section.index("Network work")


def test_the_page_and_badges_leak_nothing_that_was_not_chosen(org: Organization) -> None:
    now = timezone.now()
    db = monitor(org, "db-primary-internal-7731", state=State.UP)
    hidden = monitor(org, "hidden-billing-worker-5521", state=State.UP)
    go_down(db, "ECONNREFUSED from secret-backend-42", now - timedelta(hours=2))
    go_down(hidden, "ECONNREFUSED from secret-backend-42", now - timedelta(hours=2))
    db.refresh_from_db()
    assert db.state == State.DOWN and "10.1.2.3" in db.config["url"]
    incident = incidents.current(org, source(db))
    assert incident is not None and "db-primary-internal-7731" in incident.title
    incidents.add_note(incident, "ann", "on-call note: root password rotated")
    Maintenance.objects.create(
        org=org, name="private-window-zz", public=False,
        starts_at=now + timedelta(hours=1), ends_at=now + timedelta(hours=2),
    )  # fmt: skip
    Maintenance.objects.create(
        org=org, name="other-team-window-qq", sources=[source(hidden)],
        starts_at=now + timedelta(hours=1), ends_at=now + timedelta(hours=2),
    )  # fmt: skip
    page = make_page(org, (db, "Customer database"))
    item = page.items.get()

    bodies = [
        public("/status/acme/"),
        public(f"/status/acme/badge/{item.pk}.svg"),
        public(f"/status/acme/badge/{item.pk}/uptime.svg"),
    ]
    assert "Customer database is down" in bodies[0] and "Major outage" in bodies[0]
    for body in bodies:
        assert "Customer database" in body
        found = [s for s in SECRETS if s in body]
        assert not found, f"leaked {found}"


# --- managing status pages ----------------------------------------------------------------


def items_data(
    rows: list[tuple[Any, str, str]], total: int = 4, initial: int = 0
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "items-TOTAL_FORMS": str(total),
        "items-INITIAL_FORMS": str(initial),
        "items-MIN_NUM_FORMS": "0",
        "items-MAX_NUM_FORMS": "1000",
    }
    for i in range(total):
        m, label, position = rows[i] if i < len(rows) else (None, "", "")
        data[f"items-{i}-monitor"] = str(m.pk) if m else ""
        data[f"items-{i}-label"] = label
        data[f"items-{i}-position"] = position
    return data


def page_post(slug: str, rows: list[tuple[Any, str, str]], **kw: Any) -> dict[str, Any]:
    data = {"title": "Acme status", "slug": slug, "intro": "Write to help@acme.example"}
    data |= {"show_incidents": "on", **kw}
    return {**data, **items_data(rows)}


def test_an_admin_adds_a_page_in_the_chosen_order_and_it_is_audited(
    org: Organization, members: Any
) -> None:
    shop, api = monitor(org, "shop-internal"), monitor(org, "api-internal")
    client = signed_in(members["admin"])
    assert "Add a status page" in client.get("/status-pages/").content.decode()

    r = client.post(
        "/status-pages/add/",
        page_post("acme", [(shop, "Web shop", "2"), (api, " Public API ", "1")]),
    )

    page = StatusPage.objects.get(slug="acme")
    assert r.status_code == 302 and r["Location"] == f"/status-pages/{page.pk}/"
    assert page.org == org and page.intro == "Write to help@acme.example" and page.show_incidents
    assert [(i.label, i.monitor, i.position) for i in page.items.all()] == [
        ("Public API", api, 0),
        ("Web shop", shop, 1),
    ]
    entry = AuditEntry.objects.get(action="status-page-added")
    assert entry.target == "Acme status" and entry.actor == members["admin"].email
    assert entry.data["items"] == ["Public API = api-internal", "Web shop = shop-internal"]
    html = client.get(f"/status-pages/{page.pk}/").content.decode()
    assert f"/status/acme/badge/{page.items.first().pk}.svg" in html  # type: ignore[union-attr]
    assert "/status/acme/" in client.get("/status-pages/").content.decode()


def test_editing_keeps_the_item_ids_that_badges_use(org: Organization, members: Any) -> None:
    shop, api, jobs = (monitor(org, n) for n in ("shop-internal", "api-internal", "jobs"))
    page = make_page(org, (shop, "Web shop"), (api, "Public API"))
    shop_item = page.items.get(monitor=shop)
    client = signed_in(members["owner"])
    # The form shows what is there now.
    html = client.get(f"/status-pages/{page.pk}/").content.decode()
    assert 'value="Web shop"' in html and 'value="Public API"' in html

    data = page_post("acme-status", [(shop, "Shop", ""), (jobs, "Background jobs", "")])
    del data["show_incidents"]  # an unticked box is not sent at all
    r = client.post(f"/status-pages/{page.pk}/", data)

    assert r.status_code == 302
    page.refresh_from_db()
    assert page.slug == "acme-status" and not page.show_incidents
    rows = [(i.pk == shop_item.pk, i.label, i.monitor) for i in page.items.all()]
    assert rows == [(True, "Shop", shop), (False, "Background jobs", jobs)]
    entry = AuditEntry.objects.get(action="status-page-changed")
    assert entry.data["slug"] == "acme-status" and entry.data["show_incidents"] is False
    assert Client().get("/status/acme/").status_code == 404
    assert Client().get(f"/status/acme-status/badge/{shop_item.pk}.svg").status_code == 200


@pytest.mark.parametrize(
    ("rows", "error"),
    [
        ([], "Pick at least one monitor to show on the page."),
        ([("shop", "", "")], "Give this monitor a public name; its own is never shown."),
        ([(None, "Orphan", "")], "Pick the monitor this public name is for."),
        (
            [("shop", "A", ""), ("shop", "B", "")],
            "shop-internal is listed twice; show each monitor once.",
        ),
    ],
)
def test_bad_rows_are_refused_with_a_reason(
    org: Organization, members: Any, rows: list[tuple[Any, str, str]], error: str
) -> None:
    shop = monitor(org, "shop-internal")
    filled = [(shop if m == "shop" else None, label, pos) for m, label, pos in rows]
    r = signed_in(members["admin"]).post("/status-pages/add/", page_post("acme", filled))
    assert r.status_code == 200 and error in r.content.decode()
    assert not StatusPage.objects.exists()
    assert not AuditEntry.objects.filter(action__startswith="status-page").exists()


def test_an_address_is_taken_once_across_organizations(org: Organization, members: Any) -> None:
    other = make_org("Globex")
    make_page(other, (monitor(other, "theirs"), "Theirs"), slug="acme")
    r = signed_in(members["admin"]).post(
        "/status-pages/add/", page_post("acme", [(monitor(org, "shop"), "Shop", "")])
    )
    assert "Another status page already uses this address; pick another." in r.content.decode()
    assert StatusPage.objects.count() == 1


def test_another_organizations_monitors_and_pages_are_out_of_reach(
    org: Organization, members: Any
) -> None:
    other = make_org("Globex")
    theirs = monitor(other, "theirs")
    their_page = make_page(other, (theirs, "Theirs"), slug="globex")
    client = signed_in(members["admin"])
    r = client.post("/status-pages/add/", page_post("acme", [(theirs, "Stolen", "")]))
    assert r.status_code == 200 and "Select a valid choice" in r.content.decode()
    assert "theirs" not in client.get("/status-pages/add/").content.decode()
    assert client.get(f"/status-pages/{their_page.pk}/").status_code == 404
    assert client.post(f"/status-pages/{their_page.pk}/delete/").status_code == 404
    assert "globex" not in client.get("/status-pages/").content.decode()


def test_removing_a_page_takes_it_and_its_badges_offline(org: Organization, members: Any) -> None:
    page = make_page(org, (monitor(org, "shop"), "Shop"))
    item = page.items.get()
    r = signed_in(members["admin"]).post(f"/status-pages/{page.pk}/delete/")
    assert r.status_code == 302 and not StatusPage.objects.exists()
    assert AuditEntry.objects.get(action="status-page-removed").data == {"slug": "acme"}
    assert Client().get("/status/acme/").status_code == 404
    assert Client().get(f"/status/acme/badge/{item.pk}.svg").status_code == 404


def test_only_admins_and_owners_manage_status_pages(org: Organization, members: Any) -> None:
    page = make_page(org, (monitor(org, "shop"), "Shop"))
    for role in ("viewer", "deployer"):
        client = signed_in(members[role])
        assert client.get("/status-pages/").status_code == 403
        assert client.post(f"/status-pages/{page.pk}/delete/").status_code == 403
        assert "Status pages" not in client.get("/").content.decode()
    assert "Status pages" in signed_in(members["admin"]).get("/").content.decode()
    assert StatusPage.objects.exists()
