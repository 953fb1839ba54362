"""SVG badges: a status page item's state and its 30-day uptime, public and cacheable."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timedelta

import pytest
from django.test import Client
from django.utils import timezone

from onwatch.alerts.models import Maintenance
from onwatch.core.models import Organization
from onwatch.uptime import badges, status_page
from onwatch.uptime.models import Monitor, Rollup, State, StatusPage, StatusPageItem
from onwatch.uptime.state import source

SVG = "{http://www.w3.org/2000/svg}"


def item(org: Organization, label: str = "Web shop", **kw: object) -> StatusPageItem:
    m = Monitor.objects.create(org=org, name="shop-internal", kind="http", **kw)
    page, _ = StatusPage.objects.get_or_create(org=org, slug="acme", title="Acme")
    return StatusPageItem.objects.create(page=page, monitor=m, label=label)


def badge(url: str) -> tuple[ET.Element, dict[str, str]]:
    """The badge parsed as XML (so it is well-formed), and its response headers."""
    r = Client().get(url)
    assert r.status_code == 200
    return ET.fromstring(r.content), dict(r.headers)  # noqa: S314  (our own output)


def texts(svg: ET.Element) -> list[str]:
    return [t.text or "" for t in svg.iter(f"{SVG}text")]


def value_fill(svg: ET.Element) -> str:
    return svg.findall(f"{SVG}g/{SVG}rect")[1].attrib["fill"]


@pytest.mark.parametrize(
    ("state", "enabled", "value", "colour"),
    [
        (State.UP, True, "up", badges.STATE_COLOURS["up"]),
        (State.DOWN, True, "down", badges.STATE_COLOURS["down"]),
        (State.PENDING, True, "pending", badges.STATE_COLOURS["pending"]),
        (State.DOWN, False, "paused", badges.STATE_COLOURS["paused"]),
    ],
)
def test_the_state_badge_says_the_state_in_its_colour(
    org: Organization, state: str, enabled: bool, value: str, colour: str
) -> None:
    it = item(org, state=state, enabled=enabled)
    svg, headers = badge(f"/status/acme/badge/{it.pk}.svg")
    assert headers["Content-Type"] == "image/svg+xml; charset=utf-8"
    cache = {d.strip() for d in headers["Cache-Control"].split(",")}
    assert {"public", "max-age=60"} <= cache
    assert texts(svg) == ["Web shop", value]
    assert value_fill(svg) == colour
    assert svg.find(f"{SVG}title").text == f"Web shop: {value}"  # type: ignore[union-attr]


def test_a_monitor_in_announced_maintenance_shows_maintenance(org: Organization) -> None:
    it = item(org, state=State.DOWN)
    now = timezone.now()
    Maintenance.objects.create(
        org=org,
        name="upgrade",
        sources=[source(it.monitor)],
        starts_at=now - timedelta(minutes=5),
        ends_at=now + timedelta(minutes=5),
    )
    svg, _ = badge(f"/status/acme/badge/{it.pk}.svg")
    assert texts(svg)[1] == "maintenance"
    Maintenance.objects.update(public=False)
    svg, _ = badge(f"/status/acme/badge/{it.pk}.svg")
    assert texts(svg)[1] == "down"


def test_the_uptime_badge_reads_thirty_days_of_rollups(org: Organization, midday: datetime) -> None:
    it = item(org, state=State.UP)
    now = midday
    days = status_page.bar_days(now)
    for ago, failures in ((1, 0), (2, 30), (29, 0)):
        Rollup.objects.create(
            monitor=it.monitor, period=Rollup.DAY, start=days[-1 - ago], checks=1000,
            failures=failures,
        )  # fmt: skip
    # Older than 30 days: outside the badge's window, though its failures are many.
    Rollup.objects.create(
        monitor=it.monitor, period=Rollup.DAY, start=days[-1 - 40], checks=1000, failures=900
    )
    svg, headers = badge(f"/status/acme/badge/{it.pk}/uptime.svg")
    assert headers["Content-Type"].startswith("image/svg+xml")
    assert "max-age=60" in headers["Cache-Control"]
    assert texts(svg) == ["Web shop", "99%"]  # 2,970 of 3,000
    assert value_fill(svg) == status_page.COLOURS["minor"]


def test_an_uptime_badge_without_data_says_so(org: Organization) -> None:
    it = item(org)
    svg, _ = badge(f"/status/acme/badge/{it.pk}/uptime.svg")
    assert texts(svg) == ["Web shop", "no data"]
    assert value_fill(svg) == status_page.COLOURS["none"]


def test_a_label_cannot_break_out_of_the_svg(org: Organization) -> None:
    it = item(org, label='<script>alert("x")</script> & co')
    svg, _ = badge(f"/status/acme/badge/{it.pk}.svg")
    assert texts(svg)[0] == '<script>alert("x")</script> & co'
    assert not list(svg.iter(f"{SVG}script"))


def test_a_long_label_is_shortened_and_the_badge_grows_with_its_text(org: Organization) -> None:
    short, _ = badge(f"/status/acme/badge/{item(org, label='Shop').pk}.svg")
    long_item = StatusPageItem.objects.create(
        page=StatusPage.objects.get(),
        monitor=Monitor.objects.create(org=org, name="other", kind="http"),
        label="A very long public name for a service " * 2,
    )
    svg, _ = badge(f"/status/acme/badge/{long_item.pk}.svg")
    assert len(texts(svg)[0]) == badges.LABEL_MAX and texts(svg)[0].endswith("…")
    assert int(svg.attrib["width"]) > int(short.attrib["width"])


def test_an_item_is_reached_only_through_its_own_page(org: Organization) -> None:
    it = item(org)
    StatusPage.objects.create(org=org, slug="other", title="Other")
    assert Client().get(f"/status/other/badge/{it.pk}.svg").status_code == 404
    assert Client().get(f"/status/other/badge/{it.pk}/uptime.svg").status_code == 404
    assert Client().get(f"/status/acme/badge/{it.pk + 1000}.svg").status_code == 404
