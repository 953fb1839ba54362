"""The hosts operations of the JSON API walked with a token of each role: who may read and
who may change (a token of each role holding every scope, so the role is what decides),
and bad input answered with one clear line, never a server error. (Adding, checking and
removing a real host: test_hosts.py; a service's hosts: test_deploy_api.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from onwatch.core.models import Job, Organization
from onwatch.core.roles import SCOPES, scopes_for
from onwatch.deploys import services
from onwatch.deploys.models import Host
from tests.support.deploys import service_for
from tests.support.fixtures import TokenApi

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


def fake_host(org: Organization, name: str = "deploy@10.0.0.7") -> Host:
    """A host as a passed check leaves it; never reached (the answers are onwatch's own)."""
    user, address = name.split("@")
    return Host.objects.create(org=org, name=name, user=user, address=address, ready=True)


def calls(host: Host, service_id: int) -> list[tuple[str, str, Any]]:
    """Every hosts operation, each with a body it takes."""
    return [
        ("GET", "/api/v1/hosts/", None),
        ("GET", f"/api/v1/hosts/{host.pk}/", None),
        ("POST", "/api/v1/hosts/", {"address": "deploy@example.invalid"}),
        ("POST", f"/api/v1/hosts/{host.pk}/check/", {}),
        ("GET", f"/api/v1/services/{service_id}/hosts/", None),
        ("PUT", f"/api/v1/services/{service_id}/hosts/", {"hosts": ["this machine"]}),
        ("DELETE", f"/api/v1/hosts/{host.pk}/", None),
    ]


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        ("viewer", {"GET"}),
        ("deployer", {"GET"}),
        ("admin", {"GET", "POST", "PUT", "DELETE"}),
        ("owner", {"GET", "POST", "PUT", "DELETE"}),
    ],
)
def test_each_role_reads_or_changes_hosts_as_its_permissions_say(
    org: Organization,
    members: dict[str, Any],
    role: str,
    allowed: set[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ONWATCH_SSH_KEYSCAN", "false")  # no resolver waits for the address
    host, service = fake_host(org), service_for(org, "/srv/git/shop.git")
    api = TokenApi(members[role], org, list(SCOPES))
    for method, url, body in calls(host, service.pk):
        answer = api.call(method, url, body)
        if method in allowed:
            # Allowed: answered (adding an address that shows no host key is refused).
            assert answer.status_code in (200, 201, 202, 422), (method, url, answer.content)
        else:
            assert answer.status_code == 403, (method, url, answer.content)
            assert answer.json() == {"error": "The token's owner no longer has this permission"}
    changed = role in ("admin", "owner")
    assert Host.objects.filter(pk=host.pk).exists() is not changed
    assert Job.objects.filter(kind=services.HOST_CHECK_KIND).exists() is changed


def test_a_token_without_the_hosts_scopes_reads_and_changes_nothing(
    org: Organization, members: dict[str, Any]
) -> None:
    host, service = fake_host(org), service_for(org, "/srv/git/shop.git")
    others = [s for s in scopes_for("owner") if not s.startswith("hosts:")]
    others.remove("services:read")
    others.remove("services:write")
    api = TokenApi(members["owner"], org, others)
    for method, url, body in calls(host, service.pk):
        answer = api.call(method, url, body)
        assert answer.status_code == 403 and "lacks the scope" in answer.json()["error"], url
    assert Host.objects.filter(pk=host.pk).exists()


@pytest.mark.parametrize(
    ("method", "path", "body", "said"),
    [
        ("POST", "hosts/", {}, "'address' is required"),
        ("POST", "hosts/", [1], "Send a JSON object in the request body"),
        ("POST", "hosts/", {"address": "x"}, "'x' is not user@host or user@host:port"),
        ("POST", "hosts/", {"address": "a@b", "zzz": 1}, "'zzz' is not a field of this request"),
        ("POST", "hosts/", {"address": "a@b", "currency": "EURO"}, "'currency' is three letters"),
        ("POST", "hosts/", {"address": "a@b", "monthly_cost": "-1"}, "'monthly_cost' is not valid"),
        ("POST", "hosts/", {"address": "a@b", "http_port": 0}, "'http_port' is not valid"),
        ("POST", "hosts/", {"address": "a@b:22", "port": 23}, "names port 22 but --port says 23"),
        ("POST", "hosts/{host}/check/", {"prepare": "maybe"}, "'prepare' is not valid"),
        ("DELETE", "hosts/{here}/", None, "This machine is always a host"),
        ("GET", "hosts/abc/", None, "'host_id' is not valid"),
        ("PUT", "services/{service}/hosts/", {"hosts": "a@b"}, "'hosts' is not valid"),
        ("PUT", "services/{service}/hosts/", {"hosts": [""]}, "A host's name is empty"),
        ("PUT", "services/{service}/hosts/", {"hosts": ["a@b"]}, "a@b is not a host of Acme"),
    ],
)
def test_bad_input_is_one_clear_line_and_changes_nothing(
    org: Organization, members: dict[str, Any], method: str, path: str, body: Any, said: str
) -> None:
    host, service = fake_host(org), service_for(org, "/srv/git/shop.git")
    here = services.this_machine(org)
    api = TokenApi(members["admin"], org, list(SCOPES))
    url = "/api/v1/" + path.format(host=host.pk, here=here.pk, service=service.pk)
    answer = api.call(method, url, body)
    assert answer.status_code == 422, answer.content
    error = answer.json()["error"]
    assert said in error and "\n" not in error, error
    assert sorted(Host.objects.values_list("name", flat=True)) == [host.name, here.name]
    assert not Job.objects.exists() and services.placements(service) == []


def test_an_unknown_host_is_a_404_that_says_where_the_hosts_are(
    org: Organization, members: dict[str, Any]
) -> None:
    api = TokenApi(members["admin"], org, list(SCOPES))
    for method, url in [("GET", "/api/v1/hosts/99999/"), ("DELETE", "/api/v1/hosts/99999/")]:
        answer = api.call(method, url)
        assert answer.status_code == 404
        assert answer.json() == {
            "error": "No host 99999 in this organization; list them at /api/v1/hosts/"
        }
