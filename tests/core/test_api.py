"""The JSON API: bearer tokens with scopes, checked against the owner's role on every call."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from onwatch.alerts import services
from onwatch.core import audit
from onwatch.core.models import ApiToken, AuditEntry, Job, JobState, Membership, Organization
from onwatch.core.services import issue_token
from tests.support.fixtures import make_member, make_org

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

CHANNEL_URL = "json://127.0.0.1:9/hook?secret=hunter2-very-secret"


def token_for(user: Any, scopes: list[str], days: int = 30) -> str:
    org = Membership.objects.get(user=user).org
    return issue_token(user, org, "test", scopes, days).raw


def get(path: str, raw: str | None) -> Any:
    headers = {"authorization": f"Bearer {raw}"} if raw is not None else {}
    return Client().get(path, headers=headers)


def org_of(user: Any) -> Organization:
    return Membership.objects.get(user=user).org


def test_channels_list_names_and_services_but_never_urls(members: dict[str, Any]) -> None:
    org = org_of(members["viewer"])
    ch = services.add_channel(org, "ops hook", CHANNEL_URL)
    services.add_channel(make_org("Other"), "theirs", CHANNEL_URL)
    r = get("/api/v1/channels/", token_for(members["viewer"], ["channels:read"]))
    assert r.status_code == 200
    assert r.json() == {"channels": [{"id": ch.pk, "name": "ops hook", "service": ch.service}]}
    assert "hunter2" not in r.content.decode() and "127.0.0.1" not in r.content.decode()


def test_jobs_include_the_install_wide_ones_and_not_other_organizations(
    members: dict[str, Any],
) -> None:
    org = org_of(members["viewer"])
    mine = Job.objects.create(org=org, kind="core.noop", state=JobState.FAILED, error="boom")
    wide = Job.objects.create(org=None, kind="core.sleep")
    theirs = Job.objects.create(org=make_org("Other"), kind="core.noop")
    raw = token_for(members["viewer"], ["jobs:read"])
    ids = [j["id"] for j in get("/api/v1/jobs/", raw).json()["jobs"]]
    assert ids == [wide.pk, mine.pk]
    failed = get("/api/v1/jobs/?state=failed", raw).json()["jobs"]
    assert [j["id"] for j in failed] == [mine.pk] and "error" not in failed[0]
    assert get("/api/v1/jobs/?limit=1", raw).json()["jobs"][0]["id"] == wide.pk
    detail = get(f"/api/v1/jobs/{mine.pk}/", raw).json()
    assert detail["error"] == "boom" and detail["state"] == "failed"
    assert detail["install_wide"] is False and "payload" not in detail
    missing = get(f"/api/v1/jobs/{theirs.pk}/", raw)
    assert missing.status_code == 404 and "No job" in missing.json()["error"]


def test_a_running_jobs_detail_carries_the_lines_it_wrote_so_far(
    members: dict[str, Any],
) -> None:
    from onwatch.core import jobs

    owner = members["owner"]
    jobs.enqueue("core.sleep", {}, org=org_of(owner))
    running = jobs.claim("test-worker", ["core.sleep"])
    assert running is not None
    jobs.JobContext(running).log("step one of two done")
    detail = get(f"/api/v1/jobs/{running.pk}/", token_for(owner, ["jobs:read"])).json()
    assert detail["state"] == "running" and "step one of two done" in detail["log"]


@pytest.mark.parametrize("role", ["deployer", "admin", "owner"])
def test_no_token_can_silence_an_alert_whatever_its_owner_may_do(
    members: dict[str, Any], role: str
) -> None:
    # A token does what its scopes say, not all its owner's role allows: no scope stands
    # for stopping an outage notice, so even an owner's jobs:cancel token cannot.
    job = Job.objects.create(org=org_of(members[role]), kind="alerts.deliver", queue="alerts")
    url = f"/api/v1/jobs/{job.pk}/cancel/"
    headers = {"authorization": f"Bearer {token_for(members[role], ['jobs:cancel'])}"}
    r = Client().post(url, headers=headers)
    assert r.status_code == 403, r.content
    said = r.json()["error"]
    assert "sends an alert" in said and f"onwatch jobs cancel {job.pk} --alerts-too" in said
    assert Job.objects.get(pk=job.pk).state == JobState.QUEUED
    assert not AuditEntry.objects.filter(action="job-cancelled").exists()


def test_a_jobs_cancel_token_still_cancels_other_work(members: dict[str, Any]) -> None:
    job = Job.objects.create(org=org_of(members["deployer"]), kind="core.sleep")
    headers = {"authorization": f"Bearer {token_for(members['deployer'], ['jobs:cancel'])}"}
    r = Client().post(f"/api/v1/jobs/{job.pk}/cancel/", headers=headers)
    assert r.status_code == 200 and r.json()["state"] == "cancelled", r.content


def test_bad_parameters_get_a_400_that_says_what_is_allowed(members: dict[str, Any]) -> None:
    raw = token_for(members["admin"], ["jobs:read", "audit:read"])
    for path, words in (
        ("/api/v1/jobs/?state=sleeping", "state must be one of"),
        ("/api/v1/jobs/?limit=0", "limit must be"),
        ("/api/v1/jobs/?limit=abc", "limit must be"),
        ("/api/v1/audit/?before=x", "before must be"),
    ):
        r = get(path, raw)
        assert r.status_code == 400 and words in r.json()["error"], path


def test_audit_reads_newest_first_in_pages_of_the_own_organization(
    members: dict[str, Any],
) -> None:
    org = org_of(members["admin"])
    raw = token_for(members["admin"], ["audit:read"])  # itself audited, before the rest
    for i in range(5):
        audit.record("thing", actor="tester", org=org, target=f"t{i}")
    audit.record("elsewhere", actor="tester", org=make_org("Other"))
    first = get("/api/v1/audit/?limit=3", raw).json()["entries"]
    assert [e["target"] for e in first] == ["t4", "t3", "t2"]
    rest = get(f"/api/v1/audit/?before={first[-1]['seq']}", raw).json()["entries"]
    assert [e["action"] for e in rest] == ["thing", "thing", "token-created"]
    assert [e["target"] for e in rest[:2]] == ["t1", "t0"]


@pytest.mark.parametrize(
    "header",
    [None, "Bearer ow_00000000_unknown", "Basic dXNlcjpwYXNz", "Bearer "],
    ids=["missing", "unknown", "wrong-scheme", "empty"],
)
def test_missing_or_unknown_tokens_get_401_with_a_json_error(
    members: dict[str, Any], header: str | None
) -> None:
    headers = {"authorization": header} if header is not None else {}
    r = Client().get("/api/v1/jobs/", headers=headers)
    assert r.status_code == 401
    assert r["Content-Type"] == "application/json" and r.json()["error"]


def test_expired_and_revoked_tokens_get_401(members: dict[str, Any]) -> None:
    expired, revoked = (token_for(members["viewer"], ["jobs:read"]) for _ in range(2))
    assert get("/api/v1/jobs/", expired).status_code == 200
    past = timezone.now() - timedelta(seconds=1)
    ApiToken.objects.filter(prefix=expired.split("_")[1]).update(expires_at=past)
    ApiToken.objects.filter(prefix=revoked.split("_")[1]).update(revoked_at=timezone.now())
    for raw in (expired, revoked):
        r = get("/api/v1/jobs/", raw)
        assert r.status_code == 401 and "unknown, revoked or expired" in r.json()["error"]


def test_a_token_lacking_the_scope_gets_403(members: dict[str, Any]) -> None:
    raw = token_for(members["owner"], ["channels:read"])
    r = get("/api/v1/jobs/", raw)
    assert r.status_code == 403 and "jobs:read" in r.json()["error"]


def test_a_token_whose_owner_was_demoted_loses_what_the_new_role_lacks(
    members: dict[str, Any],
) -> None:
    raw = token_for(members["admin"], ["audit:read", "jobs:read"])
    assert get("/api/v1/audit/", raw).status_code == 200
    Membership.objects.filter(user=members["admin"]).update(role="viewer")
    r = get("/api/v1/audit/", raw)
    assert r.status_code == 403 and "no longer has this permission" in r.json()["error"]
    # What a viewer still holds keeps working.
    assert get("/api/v1/jobs/", raw).status_code == 200


def test_a_token_of_a_removed_member_gets_403(members: dict[str, Any]) -> None:
    stray = make_member(org_of(members["owner"]), "viewer", "gone@acme.example")
    raw = token_for(stray, ["jobs:read"])
    Membership.objects.filter(user=stray).delete()
    assert get("/api/v1/jobs/", raw).status_code == 403


def test_a_signed_in_session_is_not_an_api_credential(members: dict[str, Any]) -> None:
    client = Client()
    client.force_login(members["owner"])
    assert client.get("/api/v1/jobs/").status_code == 401


def test_the_api_only_reads(members: dict[str, Any]) -> None:
    raw = token_for(members["owner"], ["jobs:read"])
    r = Client().post("/api/v1/jobs/", headers={"authorization": f"Bearer {raw}"})
    assert r.status_code == 405


def test_a_job_is_cancelled_through_the_api_audited_as_the_tokens_owner(
    members: dict[str, Any],
) -> None:
    from onwatch.core.models import AuditEntry

    deployer = members["deployer"]
    job = Job.objects.create(org=org_of(deployer), kind="core.sleep")
    wide = Job.objects.create(org=None, kind="core.sleep")
    headers = {"authorization": f"Bearer {token_for(deployer, ['jobs:cancel'])}"}
    r = Client().post(f"/api/v1/jobs/{job.pk}/cancel/", headers=headers)
    assert r.status_code == 200, r.content
    assert (r.json()["state"], r.json()["cancel_requested_by"]) == ("cancelled", deployer.email)
    assert AuditEntry.objects.get(action="job-cancelled").actor == deployer.email
    again = Client().post(f"/api/v1/jobs/{job.pk}/cancel/", headers=headers)
    assert again.status_code == 409 and "already ended" in again.json()["error"]
    # Install-wide jobs are no one organization's to stop.
    assert Client().post(f"/api/v1/jobs/{wide.pk}/cancel/", headers=headers).status_code == 404
    assert Job.objects.get(pk=wide.pk).state == JobState.QUEUED
