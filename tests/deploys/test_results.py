"""Results people act on: a failed pipeline alerts whoever pushed (on their own channel)
and the service's channels, saying who pushed; "fixed" goes to the same people. Real
pipelines against real repositories, the real Apprise against local receivers, and
webhooks signed as GitHub signs them."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from onwatch.alerts.services import add_channel, set_own_channel
from onwatch.core import jobs
from onwatch.core.audit import SYSTEM, Actor
from onwatch.core.models import Organization
from onwatch.deploys import services
from onwatch.deploys.api import pipeline_out
from onwatch.deploys.models import Pipeline, Service
from tests.support.deploys import commit, project
from tests.support.fixtures import make_member, signed_in
from tests.support.receivers import Hook, WebhookReceiver

# The job's heartbeat thread reads what this test wrote: real commits, not one transaction.
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fast_passwords"),
]


def run(pipeline: Pipeline) -> Pipeline:
    [job] = jobs.run_pending(kinds=[services.KIND])
    assert pipeline.job is not None and job.pk == pipeline.job.pk
    pipeline.refresh_from_db()
    return pipeline


def deliver_all() -> None:
    jobs.run_pending(kinds=["alerts.deliver"])


def titles(hooks: list[Hook]) -> list[str]:
    return [h.json["title"] for h in hooks]


def add_service(org: Organization, repo: Path, channel_ids: list[int] | None) -> Service:
    fields = services.ServiceFields(name="shop", git_url=str(repo), alert_channels=channel_ids)
    return services.add_service(org, fields, SYSTEM)


def test_a_failed_pipeline_tells_who_ran_it_and_the_services_channels_and_fixed_the_same(
    org: Organization, tmp_path: Path, settings: Any
) -> None:
    settings.OWN_CHANNELS_PRIVATE = True  # the receivers listen on this machine
    deployer = make_member(org, "deployer", email="dee@acme.example")
    deployer.first_name, deployer.last_name = "Dee", "Ploy"
    deployer.save()
    repo = tmp_path / "repo"
    commit(repo, project(passing=False), "Break the sum")
    with WebhookReceiver() as team, WebhookReceiver() as others, WebhookReceiver() as own:
        chosen = add_channel(org, "team", team.url("/team"))
        add_channel(org, "everyone else", others.url("/others"))
        set_own_channel(org, deployer, own.url("/dee"), SYSTEM)
        service = add_service(org, repo, [chosen.pk])
        red = run(services.run_pipeline(service, Actor(deployer.username, user=deployer), "ui"))
        assert red.state == "failed" and red.pusher == deployer
        deliver_all()
        failed = f"Pipeline #{red.pk} of shop (main) failed at test"
        assert titles(team.hooks) == [failed] and titles(own.hooks) == [failed]
        assert others.hooks == [], "a channel the service did not choose heard of it"
        body = own.hooks[0].json["message"]
        assert "Started by: Dee Ploy <dee@acme.example>" in body
        assert "What is wrong: test: exited with 1" in body and "AssertionError: 2 != 3" in body

        commit(repo, project(passing=True), "Fix the sum")
        green = run(services.run_pipeline(service, SYSTEM, "cli"))
        assert green.state == "succeeded" and green.pusher is None
        deliver_all()
        fixed = f"Pipeline #{green.pk} of shop (main) passes again: fixed"
        # The same people as the failure: the one who broke it hears it is fixed.
        assert titles(team.hooks)[1:] == [fixed] and titles(own.hooks)[1:] == [fixed]
        assert others.hooks == []
        assert "Started by: system (run now (command line))" in own.hooks[1].json["message"]


def github_push(service: Service, sha: str, pusher: str, author: str) -> Any:
    commit_ = {"id": sha, "message": "Change", "author": {"name": "Someone", "email": author}}
    payload: dict[str, Any] = {"ref": "refs/heads/main", "after": sha, "head_commit": commit_}
    if pusher:
        payload["pusher"] = {"name": "someone", "email": pusher}
    body = json.dumps(payload).encode()
    signature = hmac.new(service.webhook_secret.encode(), body, hashlib.sha256).hexdigest()
    return Client().post(
        f"/hooks/deploys/{service.pk}/",
        body,
        content_type="application/json",
        HTTP_X_GITHUB_EVENT="push",
        HTTP_X_GITHUB_DELIVERY=str(uuid.uuid4()),
        HTTP_X_HUB_SIGNATURE_256=f"sha256={signature}",
    )


def test_a_webhook_push_alerts_the_member_with_the_pushers_email_or_says_they_are_none(
    org: Organization, tmp_path: Path, settings: Any
) -> None:
    settings.OWN_CHANNELS_PRIVATE = True  # the receivers listen on this machine
    member = make_member(org, "deployer", email="dee@acme.example")
    viewer = make_member(org, "viewer")
    repo = tmp_path / "repo"
    broken = commit(repo, project(passing=False), "Break the sum")
    with WebhookReceiver() as everyone, WebhookReceiver() as own:
        add_channel(org, "everyone", everyone.url("/all"))
        set_own_channel(org, member, own.url("/dee"), SYSTEM)
        service = add_service(org, repo, None)
        # The forge names the pusher's e-mail in another case than the account's.
        assert (
            github_push(service, broken, "Dee@Acme.Example", "ana@example.com").status_code == 201
        )
        red = run(Pipeline.objects.get(commit=broken))
        assert red.pusher == member
        deliver_all()
        [told] = own.hooks
        assert "Pushed by: dee@acme.example" in told.json["message"]
        assert titles(everyone.hooks) == [told.json["title"]]

        again = commit(repo, project(passing=False, extra="        pass\n"), "Still broken")
        r = github_push(service, again, "stranger@elsewhere.example", "ana@example.com")
        assert r.status_code == 201
        second = run(Pipeline.objects.get(commit=again))
        assert second.pusher is None and second.pusher_email == "stranger@elsewhere.example"
        deliver_all()
        assert len(own.hooks) == 1, "the member heard of a push that was not theirs"
        said = everyone.hooks[-1].json["message"]
        assert (
            "Pushed by: stranger@elsewhere.example, who is not a member of Acme "
            "(so only the service's channels hear about it)"
        ) in said
    assert pipeline_out(second)["pushed_by"] == "stranger@elsewhere.example (not a member)"
    assert pipeline_out(red)["pushed_by"] == "dee@acme.example"
    page = signed_in(viewer).get(f"/services/{service.pk}/").content.decode()
    assert '<td class="pushed-by">dee@acme.example</td>' in page
    assert '<td class="pushed-by">stranger@elsewhere.example (not a member)</td>' in page


def test_without_a_pusher_the_commit_authors_email_names_the_member(
    org: Organization, tmp_path: Path
) -> None:
    member = make_member(org, "deployer", email="ana@example.com")
    service = add_service(org, tmp_path / "none", None)
    sha = "3f786850e387550fdab836ed7e6dc881de23001b"
    assert github_push(service, sha, "", "ANA@example.com").status_code == 201
    assert Pipeline.objects.get().pusher == member
    # A member of another organization with that e-mail is nobody here.
    other = make_member(Organization.objects.create(name="Other"), "owner", email="o@x.example")
    push = services.Push(commit=sha, emails=("o@x.example",))
    assert services.who_pushed(org, Actor("webhook"), push) == (None, "o@x.example")
    assert services.who_pushed(org, Actor(other.username, user=other), services.Push()) == (
        None,
        "",
    )
