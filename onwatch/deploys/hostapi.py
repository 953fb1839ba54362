"""Hosts in the JSON API: list (this machine first), add an SSH host, read one with its
last check, queue a check (or a check that installs what is missing), remove one.
Only parses: services.py decides and writes."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from django.http import HttpRequest
from ninja import Router, Schema, Status
from pydantic import ConfigDict, Field

from onwatch.core import ssh
from onwatch.core.audit import Actor
from onwatch.core.rest import ERRORS, not_found, operation, org_of
from onwatch.core.rest import unprocessable as refuse
from onwatch.core.validators import MAX_ID
from onwatch.deploys import services as writer
from onwatch.deploys.models import Host
from onwatch.deploys.services import HostFields, Refusal

hosts = Router()
LISTING = "/api/v1/hosts/"


class FindingOut(Schema):
    what: str
    ok: bool
    line: str = Field(description="What was found, or what is missing and what to do")


class HostOut(Schema):
    id: int
    name: str
    local: bool = Field(description="This machine, where onwatch runs")
    provider: str
    monthly_cost: Decimal | None
    currency: str
    allow_sudo: bool
    caddy_https: bool
    http_port: int
    https_port: int
    health_port: int
    host_key_fingerprints: list[str]
    public_key: str = Field(description="onwatch's key: put it in the host's authorized_keys")
    ready: bool | None = Field(description="null: never checked")
    checked_at: datetime | None
    check_error: str = Field(description="Why the last check could not sign in, if it could not")
    findings: list[FindingOut]


class HostList(Schema):
    hosts: list[HostOut]


class HostIn(HostFields):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "address": "deploy@203.0.113.7",
                    "provider": "Hetzner",
                    "monthly_cost": "12.50",
                    "currency": "EUR",
                }
            ]
        }
    )


class CheckIn(Schema):
    model_config = ConfigDict(extra="forbid")

    prepare: bool = Field(default=False, description="Also install what onwatch can")


class CheckOut(Schema):
    job_id: int = Field(description="Follow it at /api/v1/jobs/{id}/; the result lands on the host")


def host_out(host: Host) -> dict[str, Any]:
    key = "" if host.local else writer.host_key(host.org).public_key
    return {
        "id": host.pk,
        "name": host.name,
        "local": host.local,
        "provider": host.provider,
        "monthly_cost": host.monthly_cost,
        "currency": host.currency,
        "allow_sudo": host.allow_sudo,
        "caddy_https": host.caddy_https,
        "http_port": host.http_port,
        "https_port": host.https_port,
        "health_port": host.health_port,
        "host_key_fingerprints": ssh.fingerprints(host.known_hosts),
        "public_key": key,
        "ready": host.ready,
        "checked_at": host.checked_at,
        "check_error": host.check_error,
        "findings": host.findings,
    }


def find(request: HttpRequest, pk: int) -> Host:
    found = Host.objects.filter(org=org_of(request), pk=pk).first() if pk <= MAX_ID else None
    if found is None:
        raise not_found("host", pk, LISTING)
    return found


@operation(hosts, "GET", "", "hosts:read", response={200: HostList, **ERRORS})
def host_list(request: HttpRequest) -> dict[str, Any]:
    """This machine and the SSH hosts, with their last check."""
    writer.this_machine(org_of(request))
    return {"hosts": [host_out(h) for h in Host.objects.filter(org=org_of(request))]}


@operation(hosts, "POST", "", "hosts:write", response={201: HostOut, **ERRORS})
def host_create(request: HttpRequest, body: HostIn) -> Status[dict[str, Any]]:
    """Add an SSH host: its host key is fetched now and pinned. Put `public_key` in its
    authorized_keys, then queue a check."""
    try:
        made = writer.add_host(org_of(request), HostFields(**body.model_dump()), Actor.of(request))
    except Refusal as e:
        raise refuse(str(e)) from None
    return Status(201, host_out(made))


@operation(hosts, "GET", "{host_id}/", "hosts:read", response={200: HostOut, **ERRORS})
def host_get(request: HttpRequest, host_id: int) -> dict[str, Any]:
    """A host with its last check: one finding per thing a deploy needs."""
    return host_out(find(request, host_id))


@operation(hosts, "POST", "{host_id}/check/", "hosts:write", response={202: CheckOut, **ERRORS})
def host_check(request: HttpRequest, host_id: int, body: CheckIn) -> Status[dict[str, Any]]:
    """Queue a check of the host (with `prepare`, installing what onwatch can first)."""
    job = writer.queue_host_check(find(request, host_id), Actor.of(request), body.prepare)
    return Status(202, {"job_id": job.pk})


class RemovedOut(Schema):
    removed: str


@operation(hosts, "DELETE", "{host_id}/", "hosts:write", response={200: RemovedOut, **ERRORS})
def host_remove(request: HttpRequest, host_id: int) -> dict[str, Any]:
    """Forget an SSH host and its pinned key (nothing on the host is touched)."""
    host = find(request, host_id)
    try:
        writer.remove_host(host, Actor.of(request))
    except Refusal as e:
        raise refuse(str(e)) from None
    return {"removed": host.name}
