"""Webhooks from forges (GitHub, Gitea, Forgejo, GitLab): one address per service, the
request signed with the service's webhook secret. A push to the service's branch queues a
pipeline of the pushed commit; everything else is answered with one plain line and kept
as a delivery on the service's page, so nothing is taken and dropped unseen.

    POST /hooks/deploys/<service id>/
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from onwatch.core.audit import Actor
from onwatch.core.decorators import public
from onwatch.deploys import services
from onwatch.deploys.models import Service, WebhookDelivery
from onwatch.deploys.services import Push

log = logging.getLogger("onwatch.webhooks")

MAX_BODY = 1024 * 1024
SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
# Which header names the forge, checked in this order: Gitea and Forgejo also send
# GitHub's headers for compatibility, so GitHub's come last.
EVENT = {
    "forgejo": "HTTP_X_FORGEJO_EVENT",
    "gitea": "HTTP_X_GITEA_EVENT",
    "gitlab": "HTTP_X_GITLAB_EVENT",
    "github": "HTTP_X_GITHUB_EVENT",
}
DELIVERY_ID = {
    "forgejo": ("HTTP_X_FORGEJO_DELIVERY", "HTTP_X_GITEA_DELIVERY"),
    "gitea": ("HTTP_X_GITEA_DELIVERY",),
    "gitlab": ("HTTP_X_GITLAB_EVENT_UUID", "HTTP_IDEMPOTENCY_KEY"),
    "github": ("HTTP_X_GITHUB_DELIVERY",),
}
SIGNATURE = {
    "forgejo": "HTTP_X_FORGEJO_SIGNATURE",
    "gitea": "HTTP_X_GITEA_SIGNATURE",
    "github": "HTTP_X_HUB_SIGNATURE_256",
}
PUSH_EVENT = {"gitlab": "Push Hook"}
PING_EVENT = "ping"
REASON = "forges' webhooks: the signature made with the service's webhook secret is the credential"


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def text(status: int, message: str) -> HttpResponse:
    return HttpResponse(message + "\n", status=status, content_type="text/plain; charset=utf-8")


@public(REASON)
@csrf_exempt
def hook(request: HttpRequest, pk: int) -> HttpResponse:
    if request.method != "POST":
        answer = text(405, "Webhooks are sent with POST")
        answer["Allow"] = "POST"
        return answer
    service = Service.objects.select_related("org").filter(pk=pk).first()
    if service is None:
        return text(404, "No service has this webhook address; copy it from the service's page")
    delivery = WebhookDelivery(received_at=timezone.now(), status=0, outcome="")
    try:
        delivery.status, delivery.outcome = receive(request, service, delivery)
    except Refused as e:
        delivery.status, delivery.outcome = e.status, str(e)
    except Exception as e:
        log.exception("webhook delivery to service %s failed", service.pk)
        delivery.status = 500
        delivery.outcome = f"onwatch could not handle it ({type(e).__name__}); send it again"
    if delivery.signed:
        services.note_delivery(service, delivery)
    elif not services.note_unsigned(service, delivery):
        # Past the hourly limit of listed ones: the log alone counts them.
        log.warning(
            "webhook to service %s refused, not listed (over %s unsigned in the last hour): %s %s",
            service.pk,
            services.UNSIGNED_KEPT_PER_HOUR,
            delivery.status,
            delivery.outcome,
        )
    return text(delivery.status, delivery.outcome)


def receive(request: HttpRequest, service: Service, delivery: WebhookDelivery) -> tuple[int, str]:
    body = read_body(request)
    meta = request.META
    source = source_of(meta)
    delivery.source = source
    delivery.event = meta.get(EVENT[source], "")[:60]
    delivery.delivery_id = delivery_id_of(source, meta)[:200]
    if not service.webhook_secret:
        raise Refused(403, "This service has no webhook secret yet; make one on its page")
    problem = signature_problem(source, meta, body, service.webhook_secret)
    if problem:
        raise Refused(401, problem)
    delivery.signed = True
    if not delivery.delivery_id:
        raise Refused(400, "The delivery has no id header, so a replay could not be told apart")
    body_sha256 = hashlib.sha256(body).hexdigest()
    delivery.body_sha256 = body_sha256
    if not services.claim_delivery(service, delivery):
        raise Refused(409, replay(service, delivery.delivery_id, body_sha256))
    return act(service, source, delivery, body)


def replay(service: Service, delivery_id: str, body_sha256: str) -> str:
    first = services.first_delivery(service, delivery_id)
    if first:
        return f"Delivery {delivery_id} was already received{_at(first)}"
    first = services.first_delivery_of_body(service, body_sha256)
    earlier = f" as delivery {first.delivery_id}" if first else ""
    return (
        f"Delivery {delivery_id} repeats one already received{_at(first)}{earlier}: "
        "the same signed content with a new id"
    )


def _at(delivery: WebhookDelivery | None) -> str:
    return f" at {delivery.received_at:%Y-%m-%d %H:%M:%S} UTC" if delivery else ""


def read_body(request: HttpRequest) -> bytes:
    """The body, refused before it is read when it is over MAX_BODY."""
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if not declared.isdigit():
        raise Refused(400, "The Content-Length header is not a number")
    too_big = Refused(413, f"The body is over {MAX_BODY // 1024} KiB; onwatch takes no more")
    if int(declared) > MAX_BODY:
        raise too_big
    body = request.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise too_big
    return body


def source_of(meta: dict[str, Any]) -> str:
    for source, header in EVENT.items():
        if meta.get(header):
            return source
    raise Refused(
        400,
        "Not a webhook onwatch knows: send it from GitHub, Gitea, Forgejo or GitLab "
        "(no X-GitHub-Event, X-Gitea-Event, X-Forgejo-Event or X-Gitlab-Event header)",
    )


def delivery_id_of(source: str, meta: dict[str, Any]) -> str:
    found = [meta.get(h, "").strip() for h in DELIVERY_ID[source]]
    return next((f for f in found if f), "")


def signature_problem(source: str, meta: dict[str, Any], body: bytes, secret: str) -> str | None:
    """Why the request is not signed with `secret`, or None when it is. Compared in
    constant time: how long a comparison takes tells nothing of the secret."""
    if source == "gitlab":
        token = meta.get("HTTP_X_GITLAB_TOKEN", "")
        if not token:
            return "No X-Gitlab-Token: set the webhook's secret token to the service's secret"
        if not hmac.compare_digest(token.encode(), secret.encode()):
            return "The X-Gitlab-Token is not this service's webhook secret"
        return None
    header = SIGNATURE[source]
    # Gitea and Forgejo send GitHub's header too (the same HMAC with "sha256=" before it).
    given = meta.get(header, "") or meta.get(SIGNATURE["github"], "")
    if not given:
        name = header.removeprefix("HTTP_").replace("_", "-").title()
        return f"No {name} header: set the webhook's secret to the service's webhook secret"
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    given = given.strip().removeprefix("sha256=")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return "The signature does not match: the webhook's secret is not this service's"
    return None


def act(service: Service, source: str, delivery: WebhookDelivery, body: bytes) -> tuple[int, str]:
    """What a signed delivery asks for: a ping is answered, a push to the service's branch
    queues a pipeline, anything else is ignored with its reason."""
    if delivery.event == PING_EVENT:
        return 200, "Pong: the webhook reaches onwatch and is signed with the right secret"
    if delivery.event != PUSH_EVENT.get(source, "push"):
        return (
            202,
            f"Ignored: onwatch runs pipelines on pushes, this was a {delivery.event!r} event",
        )
    payload = parse(body)
    ref = str(payload.get("ref") or "")
    if ref != f"refs/heads/{service.branch}":
        return (
            202,
            f"Ignored: a push to {ref or 'no branch'}; {service.name} tests {service.branch}",
        )
    sha = str(payload.get("checkout_sha") or payload.get("after") or "")
    if not sha or set(sha) == {"0"}:
        return 202, f"Ignored: branch {service.branch} was deleted"
    if not SHA.fullmatch(sha):
        raise Refused(400, "The push names no commit (its 'after' is not a commit id)")
    earlier = services.tested(service, sha)
    if earlier:
        # As polling does: a commit tested once is not queued again (and so cannot
        # supersede a newer commit's run).
        return 202, f"Already tested: pipeline #{earlier.pk} for {sha[:7]}"
    actor = Actor(f"webhook from {source}")
    pipeline = services.run_pipeline(service, actor, "webhook", hint(payload, sha))
    delivery.pipeline = pipeline
    return 201, f"Queued pipeline #{pipeline.pk} for {sha[:7]}"


def parse(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except ValueError:
        raise Refused(400, "The body is not JSON; set the webhook's content type to JSON") from None
    if not isinstance(payload, dict):
        raise Refused(400, "The body is not a JSON object")
    return payload


def hint(payload: dict[str, Any], sha: str) -> Push:
    """The pushed commit's author and message as the payload says (only a hint: the
    checkout records the commit's own)."""
    commits = [c for c in payload.get("commits") or [] if isinstance(c, dict)]
    head = payload.get("head_commit") or next((c for c in commits if c.get("id") == sha), {})
    if not isinstance(head, dict):
        head = {}
    author = head.get("author")
    if not isinstance(author, dict):
        author = {}
    name, email = str(author.get("name") or ""), str(author.get("email") or "")
    who = f"{name} <{email}>" if name and email else name or email
    emails = tuple(e for e in (pusher_email(payload), email) if e)
    return Push(commit=sha, author=who, message=str(head.get("message") or ""), emails=emails)


def pusher_email(payload: dict[str, Any]) -> str:
    """Who pushed, as the forge says: GitHub, Gitea and Forgejo send a `pusher` with an
    e-mail, GitLab a `user_email` (blank or "[REDACTED]" when the user hides it)."""
    pusher = payload.get("pusher")
    found = pusher.get("email") if isinstance(pusher, dict) else payload.get("user_email")
    found = str(found or "").strip()
    return found if "@" in found else ""
