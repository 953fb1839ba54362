"""Monitors as code: `onwatch monitors export/import` round-trips without changes, and a
file with mistakes gets line-numbered errors and changes nothing."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from onwatch.alerts.models import EscalationPolicy
from onwatch.core.audit import CLI
from onwatch.core.models import AuditEntry, Organization
from onwatch.uptime import configio
from onwatch.uptime.models import Monitor, State
from tests.support.child import call
from tests.support.child import uptime as child_uptime
from tests.support.fixtures import make_org
from tests.support.procs import isolated, run

pytestmark = [pytest.mark.django_db]


def snapshot(org: Organization) -> list[dict[str, Any]]:
    """Everything about an organization's monitors that an import may touch."""
    fields = [
        "name", "kind", "config", "enabled", "state", "interval", "retry_interval", "timeout",
        "confirmations", "slug", "ping_id", "parent__name", "policy__name", "next_check_at",
    ]  # fmt: skip
    rows = list(Monitor.objects.filter(org=org).order_by("name").values(*fields))
    for row in rows:
        if row["kind"] != "heartbeat":
            row["ping_id"] = None  # only a heartbeat's is used (and exported)
    return rows


def a_bit_of_everything(org: Organization) -> None:
    policy = EscalationPolicy.objects.create(org=org, name="on call")
    db = Monitor.objects.create(
        org=org, name="db", kind="tcp", config={"host": "db.internal", "port": 5432}
    )
    Monitor.objects.create(
        org=org,
        name="shop",
        kind="http",
        config={
            "url": "https://shop.example.com/health",
            "method": "HEAD",
            "headers": {"X-Probe": "onwatch"},
            "accepted_status_codes": ["200-299", 301],
            "json_path": "data.items[0].status",
            "json_expected": None,
        },
        interval=30,
        timeout=5,
        confirmations=2,
        parent=db,
        policy=policy,
    )
    Monitor.objects.create(
        org=org, name="mx", kind="dns", config={"name": "example.com", "record_type": "MX"}
    )
    Monitor.objects.create(org=org, name="cert", kind="tls", config={"host": "example.com"})
    Monitor.objects.create(
        org=org,
        name="nightly backup",
        kind="heartbeat",
        config={"cron": "0 3 * * *", "tz": "Europe/Prague", "grace": 600},
        slug="nightly-backup",
        confirmations=1,
    )
    Monitor.objects.create(
        org=org,
        name="old site",
        kind="http",
        config={"url": "http://old.example.com/"},
        enabled=False,
        state=State.PAUSED,
    )


def test_export_then_import_changes_nothing_and_exports_the_same_text(org: Organization) -> None:
    a_bit_of_everything(org)
    exported = configio.export(org)
    before, entries = snapshot(org), AuditEntry.objects.count()

    report = configio.import_text(org, exported, CLI)

    assert not report.problems and not report.created and not report.changed
    assert len(report.unchanged) == 6
    assert snapshot(org) == before
    assert AuditEntry.objects.count() == entries  # nothing changed, nothing recorded
    assert configio.export(org) == exported


def test_an_export_rebuilds_the_same_monitors_heartbeat_urls_included(org: Organization) -> None:
    a_bit_of_everything(org)
    exported = configio.export(org)
    before = snapshot(org)
    Monitor.objects.filter(org=org).delete()

    report = configio.import_text(org, exported, CLI)

    assert not report.problems and sorted(report.created) == sorted(m["name"] for m in before)
    ignore = {"next_check_at"}
    assert [{k: v for k, v in m.items() if k not in ignore} for m in snapshot(org)] == [
        {k: v for k, v in m.items() if k not in ignore} for m in before
    ]
    assert configio.export(org) == exported
    assert AuditEntry.objects.filter(action="monitors-imported").count() == 1


def test_the_export_reads_like_a_hand_written_file(org: Organization) -> None:
    EscalationPolicy.objects.create(org=org, name="on call")
    db = Monitor.objects.create(org=org, name="db", kind="tcp", config={"host": "db", "port": 5})
    Monitor.objects.create(
        org=org, name="web", kind="http", config={"url": "https://x.org/"}, parent=db, interval=30
    )
    body = configio.export(org).split("\n", 2)[2]
    assert body == textwrap.dedent(
        """\
        monitors:
        - name: db
          kind: tcp
          config:
            host: db
            port: 5
        - name: web
          kind: http
          config:
            url: https://x.org/
          interval: 30
          parent: db
        """
    )


FILE = """\
monitors:
- name: api
  kind: http
  config:
    url: https://api.example.com/
  parent: lb
  policy: on call
- name: lb
  kind: tcp
  config: {host: lb.internal, port: 443}
  enabled: false
- name: cron
  kind: heartbeat
  config:
    period: 3600
"""


def test_an_import_creates_and_changes_monitors_by_name(org: Organization) -> None:
    policy = EscalationPolicy.objects.create(org=org, name="on call")
    api = Monitor.objects.create(
        org=org, name="api", kind="http", config={"url": "https://old.example.com/"}
    )
    untouched = Monitor.objects.create(org=org, name="not in the file", kind="tcp")
    now = timezone.now()

    report = configio.import_text(org, FILE, CLI, now=now)

    assert not report.problems
    assert (report.created, report.unchanged) == (["lb", "cron"], [])
    assert report.changed == {"api": ["config", "policy", "parent"]}
    api.refresh_from_db()
    lb = Monitor.objects.get(org=org, name="lb")
    assert api.config == {"url": "https://api.example.com/"}
    assert (api.parent, api.policy, api.next_check_at) == (lb, policy, now)
    assert (lb.enabled, lb.state) == (False, State.PAUSED)
    assert Monitor.objects.get(org=org, name="cron").config == {"period": 3600}
    assert Monitor.objects.filter(pk=untouched.pk).exists()
    entry = AuditEntry.objects.get(action="monitors-imported")
    assert entry.actor == "cli" and entry.data["created"] == ["lb", "cron"]

    # Changing the file back and forth: only what differs changes, resuming included.
    again = configio.import_text(org, FILE.replace("  enabled: false\n", ""), CLI)
    assert again.changed == {"lb": ["enabled"]} and again.created == []
    lb.refresh_from_db()
    assert (lb.enabled, lb.state) == (True, State.PENDING)


BROKEN = """\
monitors:
- name: api
  kind: http
  config:
    url: https://api.example.com/
    methd: GET
  interval: 5
- name: db
  kind: tcp
  config: {host: db, port: 5432}
  policy: nobody
  parent: ghost
  colour: blue
- name: api
  kind: tcp
  config: {host: db, port: 99999}
  name: again
"""


def test_mistakes_are_reported_with_their_lines_and_nothing_changes(org: Organization) -> None:
    EscalationPolicy.objects.create(org=org, name="on call")
    db = Monitor.objects.create(org=org, name="db", kind="tcp", config={"host": "x", "port": 1})
    before = snapshot(org)

    report = configio.import_text(org, BROKEN, CLI)

    shown = [p.show("monitors.yaml") for p in report.problems]
    # What reading the file finds comes first; names, policies and parents are looked up
    # once it reads cleanly.
    assert shown == [
        "monitors.yaml:7: monitor 'api': 'interval' is not valid: input should be greater "
        "than or equal to 20",
        "monitors.yaml:13: monitor 'db': 'colour' is not a setting of a monitor; remove it",
        "monitors.yaml:17: 'name' is given twice here",
    ], shown
    assert snapshot(org) == before and db.state == State.PENDING

    # Once it reads cleanly, every other mistake is found in one go; a setting inside
    # `config` is pointed at on its own line.
    readable = BROKEN
    for line in ("  interval: 5\n", "  colour: blue\n", "  name: again\n"):
        readable = readable.replace(line, "")
    report = configio.import_text(org, readable, CLI)
    shown = [p.show("monitors.yaml") for p in report.problems]
    assert shown == [
        "monitors.yaml:6: monitor 'api': 'methd' is not a setting of an HTTP check; remove it",
        "monitors.yaml:10: monitor 'db': there is no escalation policy 'nobody' (on call)",
        "monitors.yaml:11: monitor 'db': there is no monitor 'ghost' to depend on",
        "monitors.yaml:12: monitor 'api': another monitor in this file has the same name",
        "monitors.yaml:14: monitor 'api': 'port' must be a port number from 1 to 65535",
    ], shown
    assert snapshot(org) == before


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("monitors:\n- name: [api\n  kind: http\n", "f:3: this is not valid YAML"),
        ("monitors:\n  - name: a\n kind: x\n", "f:3: this is not valid YAML"),
        ("", "f:1: the file must hold 'monitors:'"),
        ("- name: a\n", "f:1: the file must hold 'monitors:'"),
        ("monitors: {name: a}\n", "f:1: the file must hold 'monitors:'"),
        ("monitor:\n- name: a\n", "f:1: 'monitor' is not known here"),
        ("monitors:\n- just a name\n", "f:2: each monitor must be a mapping of settings"),
        ("monitors:\n- name: a\n  kind: smtp\n", "f:3: monitor 'a': 'kind' is not valid"),
        ('monitors:\n- name: "a\\0"\n  kind: tcp\n', "f:2: monitor 'a\\x00': 'name' is not valid"),
    ],
)
def test_files_that_are_not_a_list_of_monitors_are_refused_with_a_line(
    org: Organization, text: str, expected: str
) -> None:
    Monitor.objects.create(org=org, name="kept", kind="tcp")
    report = configio.import_text(org, text, CLI)
    assert report.problems, text
    assert report.problems[0].show("f").startswith(expected), report.problems[0].show("f")
    assert list(Monitor.objects.values_list("name", flat=True)) == ["kept"]


def test_dependencies_in_a_circle_are_refused(org: Organization) -> None:
    text = """\
monitors:
- {name: a, kind: tcp, config: {host: a, port: 1}, parent: b}
- {name: b, kind: tcp, config: {host: b, port: 1}, parent: a}
"""
    report = configio.import_text(org, text, CLI)
    assert [p.show("f") for p in report.problems] == [
        "f:2: monitor 'a': monitors may not depend on each other in a circle",
        "f:3: monitor 'b': monitors may not depend on each other in a circle",
    ]
    assert not Monitor.objects.exists()


def test_a_heartbeat_id_of_another_organization_is_refused(org: Organization) -> None:
    theirs = Monitor.objects.create(org=make_org("Other"), name="job", kind="heartbeat")
    text = f"monitors:\n- name: job\n  kind: heartbeat\n  ping_id: {theirs.ping_id}\n"
    report = configio.import_text(org, text, CLI)
    assert [p.show("f") for p in report.problems] == [
        "f:4: monitor 'job': this 'ping_id' belongs to another monitor"
    ]


def test_a_dry_run_reports_the_changes_and_writes_nothing(org: Organization) -> None:
    EscalationPolicy.objects.create(org=org, name="on call")
    Monitor.objects.create(org=org, name="api", kind="http", config={"url": "https://a.org/"})
    before, entries = snapshot(org), AuditEntry.objects.count()

    report = configio.import_text(org, FILE, CLI, dry_run=True)

    assert report.created == ["lb", "cron"] and "api" in report.changed
    assert snapshot(org) == before and AuditEntry.objects.count() == entries


def test_the_commands_as_people_run_them(tmp_path: Path) -> None:
    with isolated(tmp_path, migrated=True) as env:
        call(
            child_uptime.add_monitor,
            env,
            "Acme",
            "db",
            "tcp",
            {"host": "db", "port": 5},
            migrate=True,
        )
        exported = run(["monitors", "export"], env)
        assert exported.returncode == 0, exported.stderr
        path = tmp_path / "monitors.yaml"
        extra = FILE.split("\n", 1)[1].replace("  policy: on call\n", "")
        path.write_text(exported.stdout.replace("port: 5\n", "port: 6\n") + extra)

        broken = tmp_path / "broken.yaml"
        broken.write_text(path.read_text().replace("port: 6", "port: 0"))
        refused = run(["monitors", "import", str(broken)], env)
        assert refused.returncode == 2
        assert refused.stderr.splitlines() == [
            f"{broken}:8: monitor 'db': 'port' must be a port number from 1 to 65535",
            f"onwatch: 1 problem in {broken}; nothing was changed",
        ]

        applied = run(["monitors", "import", str(path), "--org", "Acme"], env)
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.strip() == (
        "onwatch: monitors: created api, lb, cron; changed db (config); 0 unchanged"
    )
