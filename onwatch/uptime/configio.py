"""Monitors as documents: the checks every write path (API, YAML import) applies, and
`onwatch monitors export/import`.

An export lists an organization's monitors by name, with parents and escalation policies
by name too, leaving defaults out; importing it changes nothing, and exporting again gives
the same text. An import is all or nothing: every problem is reported with its line, and
one of them is enough for nothing to change.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import yaml
from django.db import IntegrityError, models, transaction
from django.utils import timezone
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticError
from pydantic_core import ErrorDetails

from onwatch.alerts.models import EscalationPolicy
from onwatch.core import audit
from onwatch.core.models import Organization
from onwatch.core.rest import Text, plain_json
from onwatch.uptime import specs, state
from onwatch.uptime.forms import heartbeat_alarm, pause, resume
from onwatch.uptime.models import Kind, Monitor, State

# The bounds of the monitor form (uptime/forms.py), so every path accepts the same.
MIN_INTERVAL = 20
MIN_RETRY = 10
DAY = 86400
MAX_TIMEOUT = 120
MAX_CONFIRMATIONS = 10
SLUG = r"^[A-Za-z0-9_-]*$"  # as the ping URLs accept (uptime/urls.py)
# Settings a document leaves out when they hold the model's default.
TUNABLES = ("enabled", "interval", "retry_interval", "timeout", "confirmations")


def _default(name: str) -> Any:
    found = Monitor._meta.get_field(name)
    assert isinstance(found, models.Field)
    return found.default


Config = Annotated[dict[str, Any], AfterValidator(plain_json)]


class MonitorFields(BaseModel):
    """A monitor's own settings, as the API and YAML take them; `config` is checked per
    kind by specs.validate."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: Text = Field(min_length=1, max_length=100)
    kind: Literal["http", "tcp", "dns", "tls", "heartbeat"]
    config: Config = Field(default_factory=dict)
    enabled: bool = True
    interval: int = Field(default=_default("interval"), ge=MIN_INTERVAL, le=DAY)
    retry_interval: int = Field(default=_default("retry_interval"), ge=MIN_RETRY, le=DAY)
    timeout: int = Field(default=_default("timeout"), ge=1, le=MAX_TIMEOUT)
    confirmations: int = Field(default=_default("confirmations"), ge=1, le=MAX_CONFIRMATIONS)
    slug: Text = Field(default="", max_length=100, pattern=SLUG)

    @model_validator(mode="after")
    def _consistent(self) -> MonitorFields:
        if self.timeout >= self.interval:
            raise ValueError("'timeout' must be shorter than 'interval'")
        if self.slug and self.kind != "heartbeat":
            raise ValueError("'slug' is for heartbeats only (pinged at /ping/<key>/<slug>/)")
        return self


class Refusal(ValueError):
    """A monitor cannot be saved like this; the message is for people, `field` names the
    setting at fault (YAML errors point at its line)."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


def sentence(error: ErrorDetails | dict[str, Any]) -> tuple[str, str]:
    """A pydantic error as (field, one sentence for people)."""
    loc = [str(p) for p in error.get("loc", ())]
    name = ".".join(loc)
    kind = error.get("type")
    if kind == "missing":
        return name, f"'{name}' is required"
    if kind == "extra_forbidden":
        return name, f"'{name}' is not a setting of a monitor; remove it"
    message = str(error.get("msg", "is not valid")).removeprefix("Value error, ")
    if kind == "value_error" and "'" in message:
        return name, message  # our validators name the field themselves
    return name, f"'{name or 'monitor'}' is not valid: {message[:1].lower()}{message[1:]}"


def check_config(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    try:
        return specs.validate(kind, config)
    except specs.SpecError as e:
        raise Refusal(str(e), "config") from None


def check_unique(org: Organization, fields: MonitorFields, monitor: Monitor | None) -> None:
    others = Monitor.objects.filter(org=org)
    if monitor is not None:
        others = others.exclude(pk=monitor.pk)
    if others.filter(name=fields.name).exists():
        raise Refusal(
            f"Another monitor is already called {fields.name!r}; names tell monitors apart",
            "name",
        )
    if fields.slug and others.filter(slug=fields.slug).exists():
        raise Refusal(f"Another monitor already has the slug {fields.slug!r}", "slug")


def check_parent(monitor: Monitor | None, parent: Monitor | None) -> None:
    """A parent may not be the monitor itself or one of its own descendants."""
    seen: set[int] = set()
    step = parent
    while step is not None and step.pk not in seen:
        if monitor is not None and step.pk == monitor.pk:
            raise Refusal("A monitor cannot depend on itself, not even through others", "parent")
        seen.add(step.pk)
        step = step.parent


def settle(
    org: Organization,
    fields: MonitorFields,
    monitor: Monitor | None,
    policy: EscalationPolicy | None,
    parent: Monitor | None,
) -> dict[str, Any]:
    """The values to store for a monitor, or Refusal."""
    config = check_config(fields.kind, fields.config)
    check_unique(org, fields, monitor)
    check_parent(monitor, parent)
    return own_values(fields) | {"config": config, "policy": policy, "parent": parent}


def own_values(fields: MonitorFields) -> dict[str, Any]:
    values = fields.model_dump(include=set(MonitorFields.model_fields))
    if fields.kind == "heartbeat":
        values["confirmations"] = 1  # one missed ping is confirmed already (heartbeats.apply)
    return values


def create(org: Organization, values: dict[str, Any], now: datetime) -> Monitor:
    enabled = values["enabled"]
    monitor = Monitor(
        org=org,
        **values,
        state=State.PENDING if enabled else State.PAUSED,
        state_since=now,
        next_check_at=now,
    )
    monitor.save()
    return monitor


def changes(monitor: Monitor, values: dict[str, Any]) -> list[str]:
    """The names of the settings `values` would change."""
    found = []
    for name, value in values.items():
        current = getattr(monitor, f"{name}_id" if name in ("policy", "parent") else name)
        wanted = value.pk if isinstance(value, (EscalationPolicy, Monitor)) else value
        if current != wanted:
            found.append(name)
    return found


def update(monitor: Monitor, values: dict[str, Any], now: datetime) -> list[str]:
    """Apply `values`; returns what changed (nothing is written when nothing did).

    Only the changed columns are written: a prober may be saving this row's state at the
    same moment, and must not have it overwritten with what was loaded here.
    """
    changed = changes(monitor, values)
    columns = [name for name in changed if name != "enabled"]
    for name in columns:
        setattr(monitor, name, values[name])
    if {"kind", "config"} & set(changed):
        # New settings are worth trying at once; failures counted under the old ones say
        # nothing about them.
        monitor.failures, monitor.next_check_at = 0, now
        heartbeat = monitor.kind == Kind.HEARTBEAT
        monitor.alarm_at = heartbeat_alarm(monitor) if heartbeat else None
        columns += ["failures", "next_check_at", "alarm_at"]
    elif "interval" in changed:
        monitor.next_check_at = min(
            monitor.next_check_at, now + timedelta(seconds=monitor.interval)
        )
        columns.append("next_check_at")
    with transaction.atomic():
        if columns:
            monitor.save(update_fields=columns)
        if "enabled" in changed:
            set_enabled(monitor, values["enabled"], now, actor="cli")
    return changed


def set_enabled(monitor: Monitor, enabled: bool, now: datetime, actor: str) -> bool:
    """Pause or resume as the monitor pages do; False when it already was. A paused
    monitor cannot recover, so its open incident is resolved, with the reason noted."""
    done = resume(monitor, now) if enabled else pause(monitor, now)
    if done and not enabled:
        state.close_incident(monitor, actor, f"{monitor.name} was paused.")
    monitor.refresh_from_db()
    return done


# --- documents -------------------------------------------------------------------------


def document(monitor: Monitor) -> dict[str, Any]:
    """A monitor as its YAML entry: defaults left out, parent and policy by name."""
    doc: dict[str, Any] = {"name": monitor.name, "kind": monitor.kind}
    if monitor.config:
        doc["config"] = monitor.config
    for name in TUNABLES:
        if name == "confirmations" and monitor.kind == Kind.HEARTBEAT:
            continue  # always 1 (heartbeats.apply); no use repeating it
        if getattr(monitor, name) != _default(name):
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
        self.policies = {p.name: p for p in EscalationPolicy.objects.filter(org=org)}
        self.configs: dict[str, dict[str, Any]] = {}

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
            self.configs[e.name] = check_config(e.kind, e.config)
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

    def apply(self, now: datetime, report: Report) -> None:
        saved: dict[str, Monitor] = dict(self.existing)
        for item in self.items:
            e = item.entry
            values = own_values(e)
            values["config"] = self.configs[e.name]
            values["policy"] = self.policies[e.policy] if e.policy else None
            if e.ping_id is not None:
                values["ping_id"] = e.ping_id
            mine = self.existing.get(e.name)
            if mine is None:
                saved[e.name] = create(self.org, values, now)
                report.created.append(e.name)
            elif done := update(mine, values, now):
                report.changed[e.name] = done
        for item in self.items:
            e = item.entry
            monitor = saved[e.name]
            parent = saved[e.parent] if e.parent else None
            if monitor.parent_id != (parent.pk if parent else None):
                Monitor.objects.filter(pk=monitor.pk).update(parent=parent)
                if e.name not in report.created:
                    report.changed.setdefault(e.name, []).append("parent")
        done_names = set(report.created) | set(report.changed)
        report.unchanged = [i.entry.name for i in self.items if i.entry.name not in done_names]


def import_text(
    org: Organization, text: str, *, dry_run: bool = False, now: datetime | None = None
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
            plan.apply(now, report)
            if report.created or report.changed:
                audit.record(
                    "monitors-imported",
                    actor="cli",
                    org=org,
                    created=report.created,
                    changed=report.changed,
                    dry_run=dry_run,
                )
            if dry_run:
                transaction.set_rollback(True)
    except IntegrityError as e:
        # Something changed in between (another import, the API): nothing was written.
        return Report(problems=[Problem(1, f"the database refused the change ({e}); try again")])
    return report


def organization(name: str | None) -> Organization:
    """The organization meant by `--org`, or Refusal saying how to name it."""
    orgs = list(Organization.objects.order_by("id"))
    if name is not None:
        found = [o for o in orgs if o.name == name]
        if not found:
            names = ", ".join(o.name for o in orgs) or "none yet"
            raise Refusal(f"there is no organization {name!r} (there are: {names})")
        return found[0]
    if not orgs:
        raise Refusal("there is no organization yet; create the owner with onwatch createowner")
    if len(orgs) > 1:
        names = ", ".join(o.name for o in orgs)
        raise Refusal(f"there are several organizations ({names}); say which with --org NAME")
    return orgs[0]
