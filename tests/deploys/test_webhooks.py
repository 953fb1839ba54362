"""Webhooks signed the way each forge signs them (the HMAC computed here), sent to the
service's webhook address: a push to its branch queues a pipeline of the pushed commit;
every refusal is one plain line and a delivery the service's page lists."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from onwatch.core.models import Organization
from onwatch.deploys import services, webhooks
from onwatch.deploys.models import Pipeline, Service, Trigger, WebhookDelivery
from tests.support.deploys import service_for
from tests.support.fixtures import signed_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]
SHA = "3f786850e387550fdab836ed7e6dc881de23001b"


def push(ref: str = "refs/heads/main", after: str = SHA) -> bytes:
    commit = {"id": after, "message": "Fix the cart", "author": {"name": "Ana", "email": "a@x"}}
    return json.dumps({"ref": ref, "after": after, "head_commit": commit}).encode()


def hmac_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def github(secret: str, body: bytes, event: str = "push") -> dict[str, str]:
    return {
        "HTTP_X_GITHUB_EVENT": event,
        "HTTP_X_GITHUB_DELIVERY": str(uuid.uuid4()),
        "HTTP_X_HUB_SIGNATURE_256": f"sha256={hmac_hex(secret, body)}",
    }


def send(service: Service, body: bytes, headers: dict[str, str]) -> Any:
    url = f"/hooks/deploys/{service.pk}/"
    # WSGI environ keys (HTTP_X_…), never one of post()'s own arguments.
    environ: dict[str, Any] = headers
    return Client().post(url, body, content_type="application/json", **environ)


def said(r: Any) -> str:
    body: bytes = r.content
    return body.decode().strip()


@pytest.fixture
def service(org: Organization) -> Service:
    return service_for(org, "/srv/git/shop.git")


def test_a_signed_github_push_to_the_branch_queues_a_pipeline_of_the_pushed_commit(
    service: Service, members: dict[str, Any]
) -> None:
    r = send(service, push(), github(service.webhook_secret, push()))
    pipeline = Pipeline.objects.get()
    assert (r.status_code, said(r)) == (201, f"Queued pipeline #{pipeline.pk} for 3f78685")
    assert (pipeline.commit, pipeline.trigger, pipeline.branch) == (SHA, Trigger.WEBHOOK, "main")
    assert (pipeline.author, pipeline.message) == ("Ana <a@x>", "Fix the cart")
    assert pipeline.job is not None and pipeline.job.queue == "pipelines"
    [delivery] = WebhookDelivery.objects.all()
    assert (delivery.source, delivery.event, delivery.pipeline) == ("github", "push", pipeline)
    page = signed_in(members["viewer"]).get(f"/services/{service.pk}/").content.decode()
    assert f"201: Queued pipeline #{pipeline.pk} for 3f78685" in page
    assert f"/hooks/deploys/{service.pk}/" in page
    assert service.webhook_secret not in page  # for admins only
    assert (
        service.webhook_secret
        in signed_in(members["admin"]).get(f"/services/{service.pk}/").content.decode()
    )


@pytest.mark.parametrize("forge", ["gitea", "forgejo"])
def test_gitea_and_forgejo_sign_with_a_bare_hex_hmac(service: Service, forge: str) -> None:
    body = push()
    headers = {
        f"HTTP_X_{forge.upper()}_EVENT": "push",
        f"HTTP_X_{forge.upper()}_DELIVERY": str(uuid.uuid4()),
        f"HTTP_X_{forge.upper()}_SIGNATURE": hmac_hex(service.webhook_secret, body),
    }
    r = send(service, body, headers)
    assert r.status_code == 201, said(r)
    assert WebhookDelivery.objects.get().source == forge
    headers[f"HTTP_X_{forge.upper()}_SIGNATURE"] = hmac_hex("another secret", body)
    headers[f"HTTP_X_{forge.upper()}_DELIVERY"] = str(uuid.uuid4())
    assert send(service, body, headers).status_code == 401
    assert Pipeline.objects.count() == 1


def test_gitlab_sends_the_secret_as_its_token(service: Service) -> None:
    body = json.dumps({"ref": "refs/heads/main", "after": "0" * 40, "checkout_sha": SHA}).encode()
    headers = {
        "HTTP_X_GITLAB_EVENT": "Push Hook",
        "HTTP_X_GITLAB_EVENT_UUID": str(uuid.uuid4()),
        "HTTP_X_GITLAB_TOKEN": service.webhook_secret,
    }
    r = send(service, body, headers)
    assert r.status_code == 201, said(r)
    assert Pipeline.objects.get().commit == SHA
    wrong = {**headers, "HTTP_X_GITLAB_TOKEN": "guess", "HTTP_X_GITLAB_EVENT_UUID": "u2"}
    r = send(service, body, wrong)
    assert (r.status_code, said(r)) == (
        401,
        "The X-Gitlab-Token is not this service's webhook secret",
    )


def unsigned(h: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in h.items() if k != "HTTP_X_HUB_SIGNATURE_256"}


REFUSALS: dict[str, tuple[Callable[[str, bytes], dict[str, str]], int, str]] = {
    "missing signature": (
        lambda s, b: unsigned(github(s, b)),
        401,
        "No X-Hub-Signature-256 header: set the webhook's secret to the service's webhook secret",
    ),
    "wrong secret": (
        lambda s, b: github("not the secret", b),
        401,
        "The signature does not match: the webhook's secret is not this service's",
    ),
    "body changed after signing": (
        lambda s, b: github(s, b.replace(b"Fix", b"Pwn")),
        401,
        "The signature does not match: the webhook's secret is not this service's",
    ),
    "no delivery id": (
        lambda s, b: {**github(s, b), "HTTP_X_GITHUB_DELIVERY": ""},
        400,
        "The delivery has no id header, so a replay could not be told apart",
    ),
    "unknown sender": (
        lambda s, b: {"HTTP_X_HUB_SIGNATURE_256": "sha256=" + hmac_hex(s, b)},
        400,
        "Not a webhook onwatch knows: send it from GitHub, Gitea, Forgejo or GitLab "
        "(no X-GitHub-Event, X-Gitea-Event, X-Forgejo-Event or X-Gitlab-Event header)",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_delivery_that_is_not_signed_right_is_refused_in_one_line_and_listed(
    service: Service, case: str
) -> None:
    headers_of, status, line = REFUSALS[case]
    r = send(service, push(), headers_of(service.webhook_secret, push()))
    assert (r.status_code, said(r)) == (status, line)
    assert not Pipeline.objects.exists()
    [delivery] = WebhookDelivery.objects.all()
    assert (delivery.status, delivery.outcome, delivery.claimed_id) == (status, line, None)


def test_a_replayed_delivery_is_refused_and_queues_nothing(service: Service) -> None:
    headers = github(service.webhook_secret, push())
    assert send(service, push(), headers).status_code == 201
    r = send(service, push(), headers)
    assert r.status_code == 409
    assert said(r).startswith(f"Delivery {headers['HTTP_X_GITHUB_DELIVERY']} was already received")
    assert Pipeline.objects.count() == 1
    assert [d.status for d in WebhookDelivery.objects.order_by("pk")] == [201, 409]


def test_a_signed_body_replayed_with_a_new_id_is_refused_and_queues_nothing(
    service: Service,
) -> None:
    first = github(service.webhook_secret, push())
    assert send(service, push(), first).status_code == 201
    again = github(service.webhook_secret, push())  # the same signature, a fresh id
    r = send(service, push(), again)
    assert r.status_code == 409
    assert said(r).startswith(f"Delivery {again['HTTP_X_GITHUB_DELIVERY']} repeats one")
    assert f"as delivery {first['HTTP_X_GITHUB_DELIVERY']}" in said(r)
    assert Pipeline.objects.count() == 1
    assert [d.status for d in WebhookDelivery.objects.order_by("pk")] == [201, 409]


def test_a_push_of_a_commit_already_tested_on_the_branch_queues_nothing(
    service: Service,
) -> None:
    assert send(service, push(), github(service.webhook_secret, push())).status_code == 201
    newer = push(after="b" * 40)
    assert send(service, newer, github(service.webhook_secret, newer)).status_code == 201
    [old, new] = Pipeline.objects.order_by("pk")
    # Another body (a forge may add fields) naming the old commit again.
    body = json.dumps({"ref": "refs/heads/main", "after": SHA, "forced": True}).encode()
    r = send(service, body, github(service.webhook_secret, body))
    assert (r.status_code, said(r)) == (202, f"Already tested: pipeline #{old.pk} for 3f78685")
    assert Pipeline.objects.count() == 2
    new.refresh_from_db()
    assert new.state == "queued"  # not superseded by the old commit


def test_a_body_over_a_mebibyte_is_refused_before_it_is_read(service: Service) -> None:
    body = push()[:-1] + b', "padding": "' + b"x" * webhooks.MAX_BODY + b'"}'
    r = send(service, body, github(service.webhook_secret, body))
    assert (r.status_code, said(r)) == (413, "The body is over 1024 KiB; onwatch takes no more")
    assert not Pipeline.objects.exists()
    assert WebhookDelivery.objects.get().status == 413


def test_pings_and_pushes_to_other_branches_are_answered_without_a_run(service: Service) -> None:
    ping = json.dumps({"zen": "Keep it logically awesome."}).encode()
    r = send(service, ping, github(service.webhook_secret, ping, event="ping"))
    assert r.status_code == 200 and said(r).startswith("Pong")
    other = push(ref="refs/heads/feature")
    r = send(service, other, github(service.webhook_secret, other))
    assert (r.status_code, said(r)) == (
        202,
        "Ignored: a push to refs/heads/feature; shop tests main",
    )
    r = send(service, push(), github(service.webhook_secret, push(), event="issues"))
    assert r.status_code == 202 and "'issues'" in said(r)
    gone = push(after="0" * 40)
    r = send(service, gone, github(service.webhook_secret, gone))
    assert (r.status_code, said(r)) == (202, "Ignored: branch main was deleted")
    assert not Pipeline.objects.exists()
    assert WebhookDelivery.objects.count() == 4


def test_a_new_secret_replaces_the_old_one_at_once(
    service: Service, members: dict[str, Any]
) -> None:
    old = service.webhook_secret
    r = signed_in(members["admin"]).post(f"/services/{service.pk}/webhook-secret/")
    service.refresh_from_db()
    assert r.status_code == 302 and service.webhook_secret not in ("", old)
    assert send(service, push(), github(old, push())).status_code == 401
    assert send(service, push(), github(service.webhook_secret, push())).status_code == 201


def test_a_service_without_a_secret_refuses_every_delivery(org: Organization) -> None:
    service = service_for(org, "/srv/git/shop.git")
    Service.objects.filter(pk=service.pk).update(webhook_secret="")
    r = send(service, push(), github("", push()))
    assert (r.status_code, said(r)) == (
        403,
        "This service has no webhook secret yet; make one on its page",
    )
    assert not Pipeline.objects.exists()


def test_an_unknown_service_and_a_get_are_answered_plainly(service: Service) -> None:
    r = Client().post("/hooks/deploys/999999/", push(), content_type="application/json")
    assert r.status_code == 404 and "copy it from the service's page" in said(r)
    assert Client().get(f"/hooks/deploys/{service.pk}/").status_code == 405


def test_delivery_ids_are_kept_thirty_days_then_aged_out(service: Service) -> None:
    headers = github(service.webhook_secret, push())
    assert send(service, push(), headers).status_code == 201
    old_pk = Pipeline.objects.get().pk
    old = timezone.now() - services.DELIVERIES_KEPT - timedelta(minutes=1)
    WebhookDelivery.objects.update(received_at=old)
    other = push(ref="refs/heads/feature")
    send(service, other, github(service.webhook_secret, other))  # ages out the old one
    assert WebhookDelivery.objects.count() == 1
    r = send(service, push(), headers)  # its id and body are no longer known: not a replay
    assert (r.status_code, said(r)) == (202, f"Already tested: pipeline #{old_pk} for 3f78685")


def test_a_secret_in_the_pushed_author_or_message_is_masked_before_it_is_kept(
    org: Organization, members: dict[str, Any]
) -> None:
    token = "tok-9f2c41d7e5a3b8"
    service = service_for(org, "/srv/git/shop.git", secrets={"DEPLOY_TOKEN": token})
    commit = {"id": SHA, "message": f"Use {token} for now", "author": {"name": f"ci {token}"}}
    body = json.dumps({"ref": "refs/heads/main", "after": SHA, "head_commit": commit}).encode()
    assert send(service, body, github(service.webhook_secret, body)).status_code == 201
    pipeline = Pipeline.objects.get()
    assert pipeline.message == "Use [secret DEPLOY_TOKEN] for now"
    assert pipeline.author == "ci [secret DEPLOY_TOKEN]"
    page = signed_in(members["viewer"]).get(f"/services/{service.pk}/").content.decode()
    assert token not in page


def test_unsigned_deliveries_are_listed_up_to_fifty_an_hour_then_only_logged(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    hour_ago = timezone.now() - timedelta(hours=1, minutes=1)
    old = [
        WebhookDelivery(service=service, received_at=hour_ago, status=401, outcome="old")
        for _ in range(50)
    ]
    WebhookDelivery.objects.bulk_create(old)  # older than an hour: they do not count
    forged = github("not-the-secret", push())
    for _ in range(50 + 3):
        assert send(service, push(), forged).status_code == 401
    assert send(service, b"{}", {"HTTP_X_SOMETHING": "x"}).status_code == 400
    recent = WebhookDelivery.objects.filter(received_at__gt=hour_ago)
    assert recent.count() == 50
    dropped = [r for r in caplog.records if "not listed" in r.getMessage()]
    assert len(dropped) == 4
    assert "The signature does not match" in dropped[0].getMessage()
    # A signed delivery is still listed, whatever was refused before it.
    assert send(service, push(), github(service.webhook_secret, push())).status_code == 201
    assert WebhookDelivery.objects.filter(status=201, signed=True).count() == 1
