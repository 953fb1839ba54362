"""Bad input: schemathesis generates requests from the OpenAPI schema, valid ones and
deliberately broken ones, and no operation may answer with a server error."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.core.result import Err, Ok

from onwatch.alerts import services
from onwatch.alerts.models import EscalationPolicy, Incident, Maintenance
from onwatch.core.models import Organization
from onwatch.core.roles import SCOPES
from onwatch.core.services import issue_token
from onwatch.deploys.models import Host
from onwatch.uptime.models import Monitor
from tests.support.deploys import service_for

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.usefixtures("fast_passwords", "same_connection"),
]

HOSTS_OPERATIONS = {
    "GET /api/v1/hosts/",
    "POST /api/v1/hosts/",
    "GET /api/v1/hosts/{host_id}/",
    "DELETE /api/v1/hosts/{host_id}/",
    "POST /api/v1/hosts/{host_id}/check/",
    "GET /api/v1/services/{service_id}/hosts/",
    "PUT /api/v1/services/{service_id}/hosts/",
}
# Per operation and mode: about a minute for the whole schema on a busy 2-core machine.
EXAMPLES = 20
# The operations are split into this many tests, so the test workers share them instead of
# one worker running the whole schema while the others finish early.
SHARDS = 4


@pytest.fixture
def same_connection() -> Iterator[None]:
    """The real WSGI handler closes the database connection after each request; in a test
    that would end the test's own transaction (on PostgreSQL). Django's test client keeps
    it open the same way."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


def some_of_everything(org: Organization) -> None:
    """Real objects, so generated ids sometimes find one and the answers are not all 404."""
    channel = services.add_channel(org, "ops", "json://127.0.0.1:9/hook")
    policy = EscalationPolicy.objects.create(org=org, name="on call")
    policy.steps.create(after_minutes=0).channels.set([channel])
    Monitor.objects.create(org=org, name="shop", kind="http", config={"url": "https://x.org/"})
    Monitor.objects.create(org=org, name="cron", kind="heartbeat", config={"period": 3600})
    Incident.objects.create(org=org, source="uptime.monitor:1", title="shop is down")
    now = timezone.now()
    Maintenance.objects.create(org=org, name="window", starts_at=now, ends_at=now)
    # A host (never reached) and a service, for the hosts operations to find.
    Host.objects.create(org=org, name="deploy@10.0.0.7", user="deploy", address="10.0.0.7")
    service_for(org, "/srv/git/shop.git")


def unwrapped[T](result: Ok[T] | Err[Any]) -> T:
    """An operation of the schema; one the schema leaves unreadable fails with its error."""
    if isinstance(result, Err):
        raise result.err()
    return result.ok()


def check_operation(operation: Any, mode: GenerationMode, headers: dict[str, str]) -> int:
    calls = 0

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same requests on every run: a failure is reproducible
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    def answers_without_a_server_error(case: Any) -> None:
        nonlocal calls
        response = case.call(headers=headers)
        calls += 1
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path} answered {response.status_code}: "
            f"{response.text[:300]}\n{case.as_curl_command()}"
        )

    answers_without_a_server_error()
    return calls


@pytest.mark.parametrize("shard", range(SHARDS))
def test_no_operation_answers_any_generated_request_with_a_server_error(
    org: Organization, members: dict[str, Any], shard: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Generated host names are not real machines: asking the resolver about each one waits
    # for its time-out. A keyscan that finds nothing takes the same path at once.
    monkeypatch.setenv("ONWATCH_SSH_KEYSCAN", "false")
    some_of_everything(org)
    raw = issue_token(members["owner"], org, "schemathesis", list(SCOPES), 1).raw
    headers = {"Authorization": f"Bearer {raw}"}
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", WSGIHandler())
    everything = [unwrapped(result) for result in schema.get_all_operations()]
    assert len(everything) >= 20
    # The hosts operations among them (walked: hosts are added and checked by the API too).
    assert {f"{op.method.upper()} {op.path}" for op in everything} >= HOSTS_OPERATIONS
    operations = everything[shard::SHARDS]

    calls = 0
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            calls += check_operation(operation, mode, headers)
    # Every operation really was exercised, in both modes.
    assert calls >= len(operations) * 2 * 5
