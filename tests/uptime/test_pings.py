"""The ping URLs, through Django's test client; times that matter go through pings.record
with a hand-set clock."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import resolve

from onwatch.alerts.models import Incident, IncidentState
from onwatch.core.models import Organization
from onwatch.uptime import heartbeats, pings
from onwatch.uptime.models import Kind, Monitor, Ping, State
from onwatch.uptime.pings import Received

T0 = datetime(2025, 1, 15, 9, 0, tzinfo=UTC)


def make_heartbeat(org: Organization, slug: str = "", **config: Any) -> Monitor:
    return Monitor.objects.create(
        org=org,
        name="db dump",
        kind=Kind.HEARTBEAT,
        slug=slug,
        config=heartbeats.validate(config or {"period": 3600, "grace": 60}),
    )


def url(m: Monitor, suffix: str = "") -> str:
    return f"/ping/{m.ping_id}{suffix}"


def last_ping(m: Monitor) -> Ping:
    found = Ping.objects.filter(monitor=m).order_by("-id").first()
    assert found is not None
    return found


def record(m: Monitor, at: datetime, type: str = Ping.Type.SUCCESS, **kw: Any) -> Monitor:
    found = pings.find(m.ping_id)
    assert found is not None
    pings.record(found, Received(type=type, **kw), at)
    return Monitor.objects.get(pk=m.pk)


@pytest.fixture
def hb(org: Organization) -> Monitor:
    return make_heartbeat(org)


# The URL forms


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("suffix", "type", "exit_status"),
    [
        ("", "success", None),
        ("/", "success", None),
        ("/start", "start", None),
        ("/start/", "start", None),
        ("/fail", "fail", None),
        ("/log", "log", None),
        ("/0", "success", 0),
        ("/3", "fail", 3),
        ("/255/", "fail", 255),
    ],
)
def test_each_ping_url_form_records_its_kind(
    hb: Monitor, suffix: str, type: str, exit_status: int | None
) -> None:
    r = Client().get(url(hb, suffix))
    assert (r.status_code, r.content) == (200, b"OK\n")
    p = last_ping(hb)
    assert (p.type, p.exit_status, p.method) == (type, exit_status, "GET")


@pytest.mark.django_db
def test_post_and_head_are_taken_and_other_methods_refused(hb: Monitor) -> None:
    c = Client()
    assert c.post(url(hb), b"all done", content_type="text/plain").status_code == 200
    assert last_ping(hb).body == "all done"
    assert c.head(url(hb)).status_code == 200
    assert last_ping(hb).method == "HEAD"
    r = c.put(url(hb))
    assert r.status_code == 405 and r["Allow"] == "GET, POST, HEAD"
    assert Ping.objects.filter(monitor=hb).count() == 2


@pytest.mark.django_db
def test_pings_need_no_csrf_token_and_no_sign_in(hb: Monitor) -> None:
    r = Client(enforce_csrf_checks=True).post(
        url(hb, "/fail"), b"exit 1", content_type="text/plain"
    )
    assert r.status_code == 200
    assert resolve(url(hb)).func.onwatch_public == "heartbeat pings: the UUID is the credential"  # type: ignore[attr-defined]


@pytest.mark.django_db
def test_an_upper_case_uuid_finds_the_heartbeat(hb: Monitor) -> None:
    assert Client().get(f"/ping/{str(hb.ping_id).upper()}").status_code == 200


@pytest.mark.django_db
def test_ping_details_are_kept(hb: Monitor) -> None:
    Client().get(url(hb), HTTP_USER_AGENT="curl/8.5", REMOTE_ADDR="192.0.2.7")
    p = last_ping(hb)
    assert (p.user_agent, p.remote_addr) == ("curl/8.5", "192.0.2.7")


# Unknown and malformed requests


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "status", "text"),
    [
        # Fixed values: test ids must be the same in every xdist worker.
        ("/ping/0b9d5a41-51a5-4c3e-9d43-1f6f3f7e2c10", 404, "not found"),
        ("/ping/0b9d5a41-51a5-4c3e-9d43-1f6f3f7e2c10/start", 404, "not found"),
        ("/ping/not-a-uuid", 400, "Not a ping URL"),
        ("/ping/", 400, "Not a ping URL"),
        ("/ping/key/slug/with/too/many", 400, "Not a ping URL"),
    ],
)
def test_unknown_and_malformed_urls_get_a_clear_answer(path: str, status: int, text: str) -> None:
    r = Client().get(path)
    assert r.status_code == status
    assert r["Content-Type"].startswith("text/plain")
    assert text in r.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("suffix", "text"),
    [
        ("/256", "Exit status 256 is out of range; use 0-255"),
        ("/99999999999999999999", "out of range"),
        ("/finish", "Unknown ping action 'finish'"),
        ("?rid=12345", "rid '12345' is not a UUID"),
    ],
)
def test_malformed_pings_get_400_and_record_nothing(hb: Monitor, suffix: str, text: str) -> None:
    r = Client().get(url(hb, suffix))
    assert r.status_code == 400
    assert text in r.content.decode()
    assert not Ping.objects.filter(monitor=hb).exists()


@pytest.mark.django_db
def test_a_ping_for_a_non_heartbeat_monitor_is_not_found(org: Organization) -> None:
    m = Monitor.objects.create(
        org=org, name="site", kind=Kind.HTTP, config={"url": "http://localhost/"}
    )
    assert Client().get(url(m)).status_code == 404


# Bodies


@pytest.mark.django_db
def test_a_long_body_is_truncated_and_marked(hb: Monitor) -> None:
    body = b"x" * (pings.BODY_KEEP + 500)
    r = Client().post(url(hb), body, content_type="text/plain")
    assert r.status_code == 200
    kept = last_ping(hb).body
    assert kept.startswith("x" * pings.BODY_KEEP)
    assert kept.endswith(f"[onwatch: body truncated: {len(body)} bytes received, first 10240 kept]")


@pytest.mark.django_db
def test_a_body_over_the_hard_cap_is_refused(hb: Monitor) -> None:
    r = Client().post(url(hb), b"y" * (pings.BODY_REFUSE + 1), content_type="text/plain")
    assert r.status_code == 413
    assert "over 102400 bytes" in r.content.decode()
    assert not Ping.objects.filter(monitor=hb).exists()


@pytest.mark.django_db
def test_a_body_that_is_not_utf8_is_kept_readable(hb: Monitor) -> None:
    Client().post(url(hb), b"caf\xe9 \x00done", content_type="application/octet-stream")
    assert last_ping(hb).body == "caf\ufffd \ufffddone"


# States and incidents through the URLs


@pytest.mark.django_db
def test_a_success_ping_brings_a_new_heartbeat_up(hb: Monitor) -> None:
    Client().get(url(hb))
    hb.refresh_from_db()
    assert hb.state == State.UP
    assert hb.last_ping_at is not None
    assert hb.alarm_at == hb.last_ping_at + timedelta(seconds=3600 + 60)


@pytest.mark.django_db
def test_fail_goes_down_at_once_and_opens_an_incident(hb: Monitor) -> None:
    Client().get(url(hb))
    Client().post(url(hb, "/2"), b"disk full", content_type="text/plain")
    hb.refresh_from_db()
    assert hb.state == State.DOWN and hb.alarm_at is None
    incident = Incident.objects.get(source=f"uptime.monitor:{hb.pk}")
    assert incident.state == IncidentState.OPEN
    assert incident.evidence["error"] == "The job reported failure with exit status 2"
    assert incident.evidence["body"] == "disk full"
    Client().get(url(hb, "/0"))
    incident.refresh_from_db()
    assert incident.state == IncidentState.RESOLVED
    assert Monitor.objects.get(pk=hb.pk).state == State.UP


@pytest.mark.django_db
def test_a_log_ping_is_recorded_and_changes_nothing(hb: Monitor) -> None:
    Client().get(url(hb))
    hb.refresh_from_db()
    before = (hb.state, hb.last_ping_at, hb.alarm_at)
    Client().post(url(hb, "/log"), b"halfway", content_type="text/plain")
    hb.refresh_from_db()
    assert (hb.state, hb.last_ping_at, hb.alarm_at) == before
    assert last_ping(hb).body == "halfway"


@pytest.mark.django_db
def test_a_paused_heartbeat_records_pings_without_changing_state(hb: Monitor) -> None:
    Monitor.objects.filter(pk=hb.pk).update(enabled=False, state=State.PAUSED)
    Client().get(url(hb, "/fail"))
    hb.refresh_from_db()
    assert hb.state == State.PAUSED and hb.alarm_at is None
    assert hb.last_ping_at is not None
    assert not Incident.objects.exists()


# Runs and durations


@pytest.mark.django_db
def test_start_and_finish_give_the_run_duration(hb: Monitor) -> None:
    record(hb, T0, Ping.Type.START)
    m = record(hb, T0 + timedelta(seconds=42.5))
    assert last_ping(m).duration_ms == 42500
    assert m.last_start_at is None


@pytest.mark.django_db
def test_run_ids_pair_each_finish_with_its_own_start(hb: Monitor) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    record(hb, T0, Ping.Type.START, run_id=a)
    record(hb, T0 + timedelta(seconds=10), Ping.Type.START, run_id=b)
    m = record(hb, T0 + timedelta(seconds=30), run_id=a)
    assert last_ping(m).duration_ms == 30000
    # Run b is still going, and still watched.
    assert m.last_start_at == T0 + timedelta(seconds=10)
    m = record(hb, T0 + timedelta(seconds=35), Ping.Type.FAIL, run_id=b)
    assert last_ping(m).duration_ms == 25000
    assert m.last_start_at is None


@pytest.mark.django_db
def test_run_ids_travel_in_the_query_string(hb: Monitor) -> None:
    rid = uuid.uuid4()
    Client().get(url(hb, f"/start?rid={rid}"))
    Client().get(url(hb, f"?rid={rid}"))
    p = last_ping(hb)
    assert p.run_id == rid and p.duration_ms is not None and p.type == "success"


@pytest.mark.django_db
def test_a_run_longer_than_max_duration_is_a_failure(org: Organization) -> None:
    m = make_heartbeat(org, period=3600, grace=60, max_duration=300)
    record(m, T0, Ping.Type.START)
    m = record(m, T0 + timedelta(seconds=301))
    assert m.state == State.DOWN
    assert "took 301.0 s, longer than its limit of 300 s" in m.last_error


@pytest.mark.django_db
def test_a_run_shorter_than_min_duration_is_a_failure(org: Organization) -> None:
    m = make_heartbeat(org, period=3600, grace=60, min_duration=30)
    record(m, T0, Ping.Type.START)
    m = record(m, T0 + timedelta(seconds=2))
    assert m.state == State.DOWN
    assert "took only 2.0 s, less than its minimum of 30 s" in m.last_error
    record(m, T0 + timedelta(seconds=100), Ping.Type.START)
    m = record(m, T0 + timedelta(seconds=160))
    assert m.state == State.UP


# Slug URLs


@pytest.mark.django_db
def test_a_slug_url_pings_the_heartbeat_of_the_keys_organization(org: Organization) -> None:
    m = make_heartbeat(org, slug="db-dump")
    key = pings.ping_key(org)
    assert pings.ping_key(org) == key  # made once
    for suffix in ("", "/", "/start", "/1", "/log/"):
        assert Client().get(f"/ping/{key}/db-dump{suffix}").status_code == 200
    assert [p.type for p in Ping.objects.filter(monitor=m).order_by("id")] == [
        "success",
        "success",
        "start",
        "fail",
        "log",
    ]


@pytest.mark.django_db
def test_create_makes_an_unknown_slug_once(org: Organization) -> None:
    key = pings.ping_key(org)
    assert Client().get(f"/ping/{key}/new-job").status_code == 404
    r = Client().get(f"/ping/{key}/new-job/start?create=1")
    assert (r.status_code, r.content) == (201, b"Created\n")
    made = Monitor.objects.get(org=org, slug="new-job")
    assert (made.kind, made.name, made.confirmations) == (Kind.HEARTBEAT, "new-job", 1)
    assert last_ping(made).type == "start"
    assert Client().get(f"/ping/{key}/new-job?create=1").status_code == 200
    assert Monitor.objects.filter(slug="new-job").count() == 1


@pytest.mark.django_db
def test_slugs_are_kept_apart_by_organization(org: Organization) -> None:
    other = Organization.objects.create(name="Other")
    make_heartbeat(other, slug="db-dump")
    key = pings.ping_key(org)
    assert Client().get(f"/ping/{key}/db-dump").status_code == 404
    assert Client().get("/ping/wrong-key/db-dump?create=1").status_code == 404
    assert not Monitor.objects.filter(org=org).exists()


@pytest.mark.django_db
def test_a_slug_of_another_kind_of_monitor_is_a_conflict(org: Organization) -> None:
    Monitor.objects.create(
        org=org, name="site", kind=Kind.HTTP, slug="site", config={"url": "http://localhost/"}
    )
    r = Client().get(f"/ping/{pings.ping_key(org)}/site?create=1")
    assert r.status_code == 409
    assert "is a monitor of kind http, not a heartbeat" in r.content.decode()


def test_refused_pings_write_no_warning_while_other_not_found_pages_still_do(
    db: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="django.request"):
        for _ in range(5):
            assert Client().get("/ping/0b9d5a41-51a5-4c3e-9d43-1f6f3f7e2c10").status_code == 404
        assert Client().get("/ping/not-a-uuid/x/y/z").status_code in (400, 404)
        assert not [r for r in caplog.records if "/ping/" in r.getMessage()]
        assert Client().get("/status/no-such-page/").status_code == 404
    assert any("/status/no-such-page/" in r.getMessage() for r in caplog.records)
