"""What users felt during a deploy's switch, on the deploy: counted by Caddy, stored on
the deploy, said in one sentence on its page and in the service's list of deploys, and a
deploy whose users got errors warns. Pages are read from rows built inline; the deploys
themselves are real ones (a pipeline, a build, supervisord, Caddy) under steady load."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pytest

from onwatch.core import jobs
from onwatch.core.audit import SYSTEM
from onwatch.core.models import Job, JobState, Organization
from onwatch.deploys import releases, services, switch
from onwatch.deploys.models import Deploy, Service, State
from onwatch.deploys.switch import Machine
from tests.support.backups import alerts_titled
from tests.support.deploys import commit, dead_deploy, service_for
from tests.support.fixtures import signed_in
from tests.support.load import Load, fetch
from tests.support.releases import app_files
from tests.support.switching import listen_port, release

KINDS = [services.KIND, services.DEPLOY_KIND]
SWITCHED = [{"name": "switch", "started": "2026-12-07T03:00:00+00:00", "ok": True}]


def pages(deploy: Deploy, member: Any) -> tuple[str, str]:
    """The deploy's page and its service's page, as a person reads them."""
    client = signed_in(member)
    own = client.get(f"/deploys/{deploy.pk}/").content.decode()
    listed = client.get(f"/services/{deploy.service.pk}/").content.decode()
    return html.unescape(own), html.unescape(listed)


@pytest.mark.django_db
@pytest.mark.usefixtures("fast_passwords")
@pytest.mark.parametrize(
    ("counts", "said"),
    [
        (
            {"switch_served": 1204, "switch_failed": 0, "switch_app_errors": 0},
            "0 failed requests during the switch, of 1,204 served; drained in 4.2 s",
        ),
        (
            {"switch_served": 900, "switch_failed": 3, "switch_app_errors": 1, "switch_mixed": 2},
            "3 failed requests during the switch (no release answered them), of 900 served; "
            "1 error sent by the app itself; 2 answers from the old release after the switch; "
            "drained in 4.2 s",
        ),
        (
            {"felt_unmeasured": "Caddy keeps no request log for shop.test"},
            "Requests during the switch: not measured (Caddy keeps no request log for shop.test)",
        ),
        # Switched before onwatch counted: never "0 failed".
        ({}, "Requests during the switch: not measured"),
    ],
)
def test_the_deploy_page_and_the_services_list_say_what_users_felt(
    org: Organization, members: dict[str, Any], counts: dict[str, Any], said: str
) -> None:
    service = service_for(org, "/srv/git/shop.git")
    deploy = Deploy.objects.create(
        service=service,
        trigger="cli",
        state=State.SUCCEEDED,
        steps=SWITCHED,
        drain_seconds=4.2,
        **{"switch_mixed": 0, **counts},
    )
    own, listed = pages(deploy, members["viewer"])
    assert said in own and said in listed
    if counts.get("switch_failed"):
        assert f'class="felt warning">{said}' in own


@pytest.mark.django_db
@pytest.mark.usefixtures("fast_passwords")
def test_a_deploy_that_never_switched_says_nothing_of_requests(
    org: Organization, members: dict[str, Any]
) -> None:
    service = service_for(org, "/srv/git/shop.git")
    deploy = Deploy.objects.create(service=service, trigger="cli", state=State.FAILED)
    own, _ = pages(deploy, members["viewer"])
    assert "What users felt" not in own and "not measured" not in own


# --- real deploys ------------------------------------------------------------------------


def deployed(service: Service, repo: Path, version: str, status: int = 200) -> Deploy:
    """Commit `version` (its app answering `status`), test it, deploy it: the deploy."""
    files = app_files(version)
    files["onwatch.toml"] = files["onwatch.toml"].replace(
        "exec python3", f"STATUS={status} exec python3"
    )
    commit(repo, files, f"Version {version}")
    services.run_pipeline(service, SYSTEM, "cli")
    jobs.run_pending(kinds=KINDS)
    deploy = service.deploys.order_by("-pk").first()
    assert deploy is not None
    return deploy


@pytest.mark.once
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel", "fast_passwords")
def test_a_deploy_under_load_reports_no_failed_request_from_caddys_count(
    machine: Machine, shop: Service, tmp_path: Path, members: dict[str, Any]
) -> None:
    first = deployed(shop, tmp_path / "repo", "v1")
    assert first.state == State.SUCCEEDED, (first.reason, first.steps)
    # Nothing served before it: nothing drained.
    assert first.switch_failed == 0 and first.drain_seconds is None
    assert (
        first.felt_text == f"0 failed requests during the switch, of {first.switch_served} served"
    )
    load = Load(listen_port(machine), "shop.test").start()
    try:
        second = deployed(shop, tmp_path / "repo", "v2")
    finally:
        tally = load.stop()
    assert (second.state, second.reason) == (State.SUCCEEDED, ""), second.steps
    assert tally.failed == 0, tally.errors
    # The clients ran through the whole deploy, Caddy counted the switch alone.
    assert second.switch_served is not None and 10 < second.switch_served <= tally.ok
    assert (second.switch_failed, second.switch_app_errors, second.switch_mixed) == (0, 0, 0)
    drain = second.steps[-1]
    assert drain["name"] == "drain" and drain["detail"] == (
        f"drained in {second.drain_seconds:.1f} s"
    )
    own, listed = pages(second, members["viewer"])
    said = f"0 failed requests during the switch, of {second.switch_served:,} served"
    assert said in own and said in listed
    assert not alerts_titled("succeeded with a warning")


@pytest.mark.once
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel", "fast_passwords")
def test_a_deploy_whose_users_got_errors_says_so_and_warns(
    machine: Machine, shop: Service, tmp_path: Path, members: dict[str, Any]
) -> None:
    assert deployed(shop, tmp_path / "repo", "v1").state == State.SUCCEEDED
    load = Load(listen_port(machine), "shop.test").start()
    try:
        broken = deployed(shop, tmp_path / "repo", "v2", status=500)
    finally:
        tally = load.stop()
    assert broken.state == State.SUCCEEDED, (broken.reason, broken.steps)
    sent = sum(n for e, n in tally.errors.items() if e.startswith("HTTP 500 v2"))
    assert sent == tally.failed > 0, tally.errors
    # Counted apart from what Caddy failed itself, and never more than the clients got.
    assert broken.switch_app_errors is not None and 0 < broken.switch_app_errors <= sent
    assert broken.switch_failed == 0
    said = f"{broken.switch_app_errors:,} error"
    assert broken.reason.startswith("Not every request went well during the switch: ")
    assert said in broken.reason and broken.felt_text in broken.reason
    [alert] = alerts_titled(f"Deploy #{broken.pk} of shop succeeded with a warning")
    assert broken.felt_text in alert.body and releases.FELT_TO_DO in alert.body
    own, listed = pages(broken, members["viewer"])
    assert f'class="felt warning">{broken.felt_text}' in own
    assert broken.felt_text in listed


@pytest.mark.once
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel", "fast_passwords")
def test_a_deploy_interrupted_mid_switch_leaves_caddy_logging_nothing(
    machine: Machine, shop: Service
) -> None:
    assert deployed(shop, Path(shop.git_url), "v1").state == State.SUCCEEDED
    # Its worker started counting the switch, then died (killed, machine down).
    machine.caddy.start_counting("shop.test")
    dead_deploy(shop)
    fetch(listen_port(machine), "shop.test")
    [reaped] = jobs.reap_expired()
    assert reaped.state == JobState.INTERRUPTED
    assert not list(machine.caddy.requests_dir.glob("*.on"))
    assert fetch(listen_port(machine), "shop.test") == (200, "v1")
    assert machine.caddy.request_log("shop.test").stat().st_size == 0


@pytest.mark.once
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel", "fast_passwords")
def test_a_dead_deploy_marked_interrupted_leaves_a_live_switchs_count_alone(
    machine: Machine, shop: Service
) -> None:
    assert deployed(shop, Path(shop.git_url), "v1").state == State.SUCCEEDED
    dead_deploy(shop)
    reaped: list[Job] = []

    def reaped_mid_switch(step: switch.Step) -> None:
        # The scheduler notices the dead deploy while a rollback of the service switches.
        if step.name == "switch" and step.ended:
            reaped.extend(jobs.reap_expired())
            for _ in range(3):
                assert fetch(listen_port(machine), "shop.test")[0] == 200  # v1 or v2

    [site] = [s for s in machine.caddy.sites() if s.domain == "shop.test"]
    record = switch.switch(machine, site, release("v2"), reaped_mid_switch)
    assert [r.state for r in reaped] == [JobState.INTERRUPTED]
    assert record.felt is not None and record.felt.unmeasured == ""
    assert record.felt.served >= 3 and record.felt.failed == 0
