"""Monitors as documents: `onwatch monitors export/import`. Importing only parses and
finds each problem's line; the rules and the writing are services.py's, as for the form
and the API.

An export lists an organization's monitors by name, with parents and escalation policies
by name too, leaving defaults out; importing it changes nothing, and exporting again gives
the same text. An import is all or nothing: every problem is reported with its line, and
one of them is enough for nothing to change.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import yaml
from django.db import IntegrityError, transaction
from django.utils import timezone
from pydantic import Field
from pydantic import ValidationError as PydanticError

from onwatch.alerts.services import policies
from onwatch.core import audit
from onwatch.core.audit import Actor
from onwatch.core.models import Organization
from onwatch.core.validators import Text
from onwatch.uptime import services
from onwatch.uptime.models import Kind, Monitor
from onwatch.uptime.services import (
    MonitorFields,
    MonitorInput,
    Refusal,
    check_config,
    default_of,
    sentence,
)

# Settings a document leaves out when they hold the model's default.
TUNABLES = ("enabled", "interval", "retry_interval", "timeout", "confirmations")


# --- documents -------------------------------------------------------------------------


def document(monitor: Monitor) -> dict[str, Any]:
    """A monitor as its YAML entry: defaults left out, parent and policy by name."""
    doc: dict[str, Any] = {"name": monitor.name, "kind": monitor.kind}
    if monitor.config:
        doc["config"] = monitor.config
    for name in TUNABLES:
        if name == "confirmations" and monitor.kind == Kind.HEARTBEAT:
            continue  # always 1 (heartbeats.apply); no use repeating it
        if getattr(monitor, name) != default_of(name):
            doc[name] = getattr(monitor, name)
    if monitor.slug:
        doc["slug"] = monitor.slug
    if monitor.kind == Kind.HEARTBEAT:
        # Cron scripts call this id's URL: a restored or moved installation keeps it.
        doc["ping_id"] = str(monitor.ping_id)
    if monitor.parent is not None:
        doc["parent"] = monitor.parent.name
    if monitor.policy is not None:
        doc["policy"] = monitor.policy.name
    return doc


def export(org: Organization) -> str:
    rows = Monitor.objects.filter(org=org).select_related("parent", "policy").order_by("name")
    header = (
        f"# onwatch monitors of {org.name}. Apply changes with `onwatch monitors import FILE`;\n"
        "# monitors are matched by name, parents and escalation policies are named too.\n"
    )
    body = {"monitors": [document(m) for m in rows]}
    dumped = yaml.safe_dump(body, sort_keys=False, allow_unicode=True, width=100)
    return header + dumped


class Entry(MonitorFields):
    """One monitor of a YAML file."""

    parent: Text | None = Field(default=None, max_length=100)
    policy: Text | None = Field(default=None, max_length=100)
    ping_id: uuid.UUID | None = None


@dataclass
class Problem:
    line: int
    message: str

    def show(self, source: str) -> str:
        return f"{source}:{self.line}: {self.message}"


@dataclass
class Item:
    """An entry with the line of each of its keys, to point errors at."""

    entry: Entry
    line: int
    lines: dict[str, int]
    config_lines: dict[str, int]

    def at(self, field: str) -> int:
        top, _, rest = field.partition(".")
        if top == "config" and rest:
            return self.config_lines.get(rest.split(".")[0], self.lines.get("config", self.line))
        return self.lines.get(top, self.line)


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    changed: dict[str, list[str]] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)


class Invalid(Exception):
    """Problems found: nothing may change."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(f"{len(problems)} problems")
        self.problems = problems


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _duplicates(node: yaml.Node, found: list[Problem]) -> None:
    """PyYAML quietly keeps the last of two equal keys; in configuration that is a mistake."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    found.append(Problem(_line(key), f"{key.value!r} is given twice here"))
                seen.add(key.value)
            _duplicates(value, found)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _duplicates(item, found)


def _keys(node: yaml.Node) -> dict[str, int]:
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(k.value): _line(k) for k, _ in node.value if isinstance(k, yaml.ScalarNode)}


def _value(node: yaml.MappingNode, key: str) -> yaml.Node | None:
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            found: yaml.Node = v
            return found
    return None


def _mark_problem(e: yaml.YAMLError) -> Problem:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    what = getattr(e, "problem", None) or str(e)
    context = getattr(e, "context", None)
    text = f"{context}, {what}" if context else str(what)
    line = int(mark.line) + 1 if mark is not None else 1
    return Problem(line, f"this is not valid YAML: {text}")


def read(text: str) -> list[Item]:
    """The file's monitors with their lines, or Invalid with every problem found."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as e:
        raise Invalid([_mark_problem(e)]) from None
    finally:
        loader.dispose()
    shape = "the file must hold 'monitors:' followed by a list of monitors"
    if root is None or not isinstance(data, dict) or not isinstance(root, yaml.MappingNode):
        raise Invalid([Problem(_line(root) if root is not None else 1, shape)])
    problems: list[Problem] = []
    _duplicates(root, problems)
    for key, line in _keys(root).items():
        if key != "monitors":
            problems.append(Problem(line, f"{key!r} is not known here; {shape}"))
    seq = _value(root, "monitors")
    if seq is None or not isinstance(seq, yaml.SequenceNode):
        line = _line(seq) if seq is not None else 1
        problems.append(Problem(line, shape))
        raise Invalid(problems)
    items = _items(seq, data.get("monitors") or [], problems)
    if problems:
        raise Invalid(problems)
    return items


def _items(seq: yaml.SequenceNode, rows: list[Any], problems: list[Problem]) -> list[Item]:
    items = []
    for node, row in zip(seq.value, rows, strict=True):
        if not isinstance(node, yaml.MappingNode) or not isinstance(row, dict):
            problems.append(Problem(_line(node), "each monitor must be a mapping of settings"))
            continue
        lines = _keys(node)
        config = _value(node, "config")
        config_lines = _keys(config) if config is not None else {}
        try:
            entry = Entry.model_validate(row)
        except PydanticError as e:
            who = f"monitor {row.get('name')!r}" if isinstance(row.get("name"), str) else "monitor"
            for error in e.errors():
                where, message = sentence(error)
                placed = Item(Entry.model_construct(), _line(node), lines, config_lines)
                problems.append(Problem(placed.at(where), f"{who}: {message}"))
            continue
        items.append(Item(entry, _line(node), lines, config_lines))
    return items


def _config_line(item: Item, message: str) -> int:
    # Spec messages name the setting in quotes first: point at that key when it is there.
    named = re.search(r"'([^']+)'", message)
    if named:
        key = re.split(r"[.\[]", named.group(1))[0]
        if key in item.config_lines:
            return item.config_lines[key]
    return item.at("config")


class Plan:
    """What an import will do, found before anything is written."""

    def __init__(self, org: Organization, items: list[Item]) -> None:
        self.org = org
        self.items = items
        self.problems: list[Problem] = []
        self.existing = {m.name: m for m in Monitor.objects.filter(org=org)}
        self.policies = {p.name: p.pk for p in policies(org)}

    def problem(self, item: Item, field: str, message: str) -> None:
        line = _config_line(item, message) if field == "config" else item.at(field)
        self.problems.append(Problem(line, f"monitor {item.entry.name!r}: {message}"))

    def check(self) -> None:
        names: set[str] = set()
        slugs: set[str] = set()
        for item in self.items:
            e = item.entry
            if e.name in names:
                self.problem(item, "name", "another monitor in this file has the same name")
            names.add(e.name)
            if e.slug and e.slug in slugs:
                self.problem(item, "slug", f"another monitor in this file has slug {e.slug!r}")
            slugs.add(e.slug)
            self._check_one(item)
        self._check_cycles()

    def _check_one(self, item: Item) -> None:
        e = item.entry
        try:
            check_config(e.kind, e.config)
        except Refusal as r:
            self.problem(item, "config", str(r))
        if e.policy is not None and e.policy not in self.policies:
            known = ", ".join(sorted(self.policies)) or "none yet"
            self.problem(item, "policy", f"there is no escalation policy {e.policy!r} ({known})")
        in_file = {i.entry.name for i in self.items}
        if e.parent is not None and e.parent not in in_file | set(self.existing):
            self.problem(item, "parent", f"there is no monitor {e.parent!r} to depend on")
        if e.ping_id is not None:
            owner = Monitor.objects.filter(ping_id=e.ping_id).first()
            if e.kind != "heartbeat":
                self.problem(item, "ping_id", "only heartbeats have a 'ping_id'")
            elif owner is not None and (owner.org_id != self.org.pk or owner.name != e.name):
                self.problem(item, "ping_id", "this 'ping_id' belongs to another monitor")
        if e.slug:
            # Held by another monitor now: even if the file moves it, the swap would meet
            # the database's uniqueness rule halfway.
            taken = Monitor.objects.filter(org=self.org, slug=e.slug).exclude(name=e.name)
            if taken.exists():
                self.problem(item, "slug", f"another monitor already has the slug {e.slug!r}")

    def _check_cycles(self) -> None:
        parents = {name: (m.parent.name if m.parent else None) for name, m in self.existing.items()}
        parents.update({i.entry.name: i.entry.parent for i in self.items})
        for item in self.items:
            seen, step = {item.entry.name}, parents.get(item.entry.name)
            while step is not None:
                if step in seen:
                    self.problem(
                        item, "parent", "monitors may not depend on each other in a circle"
                    )
                    break
                seen.add(step)
                step = parents.get(step)

    def apply(self, now: datetime, report: Report, actor: Actor) -> None:
        """Each monitor through services.py, parents before the monitors that depend on
        them, so each is written once, with its parent, as the form or the API would."""
        saved: dict[str, Monitor] = dict(self.existing)
        for item in self.in_order():
            e = item.entry
            data = MonitorInput(
                MonitorFields.model_validate(e.model_dump(include=set(services.OWN))),
                policy_id=self.policies[e.policy] if e.policy else None,
                parent_id=saved[e.parent].pk if e.parent else None,
                ping_id=e.ping_id,
            )
            mine = self.existing.get(e.name)
            try:
                if mine is None:
                    saved[e.name] = services.add_monitor(self.org, data, actor, now)
                    report.created.append(e.name)
                elif done := services.change_monitor(mine, data, actor, now):
                    report.changed[e.name] = done
            except Refusal as r:
                raise Invalid([Problem(item.at(r.field), f"monitor {e.name!r}: {r}")]) from None
        # Reported in the file's order, whatever order they were written in.
        order = {i.entry.name: n for n, i in enumerate(self.items)}
        report.created.sort(key=order.__getitem__)
        report.changed = dict(sorted(report.changed.items(), key=lambda kv: order[kv[0]]))
        done_names = set(report.created) | set(report.changed)
        report.unchanged = [i.entry.name for i in self.items if i.entry.name not in done_names]

    def in_order(self) -> list[Item]:
        """The file's monitors, each after its parent when that is in the file too (the
        file has no circles: check() found them)."""
        by_name = {i.entry.name: i for i in self.items}
        ordered: list[Item] = []
        placed: set[str] = set()

        def place(item: Item) -> None:
            if item.entry.name in placed:
                return
            placed.add(item.entry.name)
            parent = by_name.get(item.entry.parent or "")
            if parent is not None:
                place(parent)
            ordered.append(item)

        for item in self.items:
            place(item)
        return ordered


def import_text(
    org: Organization,
    text: str,
    actor: Actor,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
) -> Report:
    """Apply a monitors file to `org`: all of it, or (with problems) none of it. A dry run
    does the whole import and then rolls it back, so it reports exactly what would change."""
    now = now or timezone.now()
    report = Report()
    try:
        plan = Plan(org, read(text))
        plan.check()
    except Invalid as e:
        report.problems = sorted(e.problems, key=lambda p: p.line)
        return report
    if plan.problems:
        report.problems = sorted(plan.problems, key=lambda p: p.line)
        return report
    try:
        with transaction.atomic():
            plan.apply(now, report, actor)
            if report.created or report.changed:
                audit.record(
                    "monitors-imported",
                    actor=actor,
                    org=org,
                    created=report.created,
                    changed=report.changed,
                    dry_run=dry_run,
                )
            if dry_run:
                transaction.set_rollback(True)
    except Invalid as e:
        # Found only while writing (something changed in between): nothing was written.
        return Report(problems=e.problems)
    except IntegrityError as e:
        # Something changed in between (another import, the API): nothing was written.
        return Report(problems=[Problem(1, f"the database refused the change ({e}); try again")])
    return report
