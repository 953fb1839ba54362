"""The monitor form: common fields, plus the kind's settings as fields generated from its
spec (specs.py; heartbeats.py for heartbeats), so a new setting shows up in the form
without touching it. It only parses: the rules are services.py's, whose message lands on
the field it names, and saving is services.add_monitor / change_monitor.
"""

from __future__ import annotations

import json
import re
import types
from typing import Any, Literal, Union, get_args, get_origin

from django import forms
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from pydantic import BaseModel
from pydantic import ValidationError as PydanticError
from pydantic.fields import FieldInfo

from onwatch.alerts.services import policies
from onwatch.core.models import Organization
from onwatch.uptime import heartbeats, services, specs
from onwatch.uptime.models import Kind, Monitor
from onwatch.uptime.services import MonitorFields, MonitorInput

PREFIX = "config_"
# The common fields heartbeats have no use for: they are pushed, not checked, and one
# missed ping is already confirmed (heartbeats.apply).
PROBE_ONLY = ("interval", "retry_interval", "timeout", "confirmations")
COMMON = ("name", *PROBE_ONLY, "parent", "policy", "slug")

# Label and help for each setting, by name. A setting missing here still gets a field,
# labelled from its name.
SETTINGS: dict[str, tuple[str, str]] = {
    "url": ("URL", "The full address to request, such as https://example.com/health."),
    "method": ("Method", ""),
    "headers": ("Request headers", "One per line, as Name: value."),
    "body": ("Request body", "Sent as is, for methods such as POST."),
    "accepted_status_codes": (
        "Accepted status codes",
        "Codes or ranges separated by commas, such as 200-299, 301. Empty: any 2xx.",
    ),
    "keyword": ("Text that must appear", "In the answer's body; empty: not checked."),
    "keyword_absent": ("Text that must not appear", ""),
    "regex": ("Pattern that must match", "A regular expression, searched in the body."),
    "regex_absent": ("Pattern that must not match", ""),
    "json_path": ("JSON path", "Where to look in a JSON answer, such as data.items[0].status."),
    "json_expected": (
        "Expected value at the JSON path",
        'Written as JSON: "ok", 200, true or null; plain text counts as a string.',
    ),
    "max_latency_ms": (
        "Slowest acceptable answer (ms)",
        "A slower answer counts as a failure; empty: no limit.",
    ),
    "follow_redirects": ("Follow redirects", ""),
    "verify_tls": ("Verify the TLS certificate", "Switch off only for self-signed test hosts."),
    "cert_expiry_warn_days": (
        "Warn when the certificate expires within (days)",
        "0: no warning.",
    ),
    "ca_file": (
        "Extra trusted authorities",
        "Path of a PEM file on the onwatch server, for a private CA; empty: none.",
    ),
    "host": ("Host", "A host name or IP address, such as db.example.com."),
    "port": ("Port", ""),
    "name": ("Domain name", "The name to look up, such as example.com."),
    "record_type": ("Record type", ""),
    "expected": ("Expected answer", "One of the answers must equal it; empty: any answer."),
    "nameserver": ("Name server", "host or host:port; empty: the system's resolver."),
    "server_name": (
        "Name on the certificate",
        "Asked for (SNI) and checked against the certificate; empty: the host.",
    ),
    "warn_days": ("Warn when it expires within (days)", "0: no warning."),
    "period": (
        "Period (seconds)",
        "A ping is expected this often. Give a period or a cron expression; neither: daily.",
    ),
    "cron": ("Cron schedule", "Such as 0 3 * * * (at 03:00), instead of a period."),
    "tz": ("Time zone of the cron schedule", "Such as Europe/Berlin."),
    "grace": ("Grace time (seconds)", "How late a ping may be before it counts as missing."),
    "min_duration": (
        "Shortest normal run (seconds)",
        "A run (from /start to its ping) that ends sooner fails; empty: no limit.",
    ),
    "max_duration": (
        "Longest normal run (seconds)",
        "A run still going after this fails; empty: the grace time.",
    ),
}


def spec_model(kind: str) -> type[BaseModel]:
    if kind == Kind.HEARTBEAT:
        return heartbeats.HeartbeatSpec
    return specs.SPECS[kind]


def shape(annotation: Any) -> str:
    """How a setting is edited: choice, bool, int, mapping, list, json or text."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) is Literal:
        return "choice"
    if get_origin(annotation) in (Union, types.UnionType) and len(args) == 1:
        return shape(args[0])  # X | None
    if annotation is bool:
        return "bool"
    if annotation is int:
        return "int"
    if get_origin(annotation) is dict:
        return "mapping"
    if get_origin(annotation) is list:
        return "list"
    return "text" if annotation is str else "json"


def setting_field(name: str, info: FieldInfo) -> forms.Field:
    label, help_text = SETTINGS.get(name, (name.replace("_", " ").capitalize(), ""))
    common: dict[str, Any] = {"label": label, "help_text": help_text, "required": False}
    kind = shape(info.annotation)
    if kind == "choice":
        values = get_args(info.annotation)
        return forms.ChoiceField(choices=[(v, v) for v in values], initial=info.default, **common)
    if kind == "bool":
        return forms.BooleanField(initial=info.default, **common)
    if kind == "int":
        return forms.IntegerField(**{**common, "required": info.is_required()})
    if kind == "mapping":
        return forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), **common)
    return forms.CharField(max_length=4000, **{**common, "required": info.is_required()})


def initial_settings(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """The form's values for a stored config: the spec's values, defaults included."""
    model = spec_model(kind)
    try:
        values = model.model_validate(config).model_dump(mode="json")
    except ValueError:
        # New, or stored behind the validators' back: the defaults, and what is there.
        defaults = {
            name: info.get_default(call_default_factory=True)
            for name, info in model.model_fields.items()
            if not info.is_required()
        }
        values = {**defaults, **config}
    found = {}
    for name, info in model.model_fields.items():
        value = values.get(name)
        kind_of = shape(info.annotation)
        if kind_of == "mapping":
            value = "\n".join(f"{k}: {v}" for k, v in (value or {}).items())
        elif kind_of == "list":
            value = ", ".join(str(v) for v in value or [])
        elif kind_of == "json":
            value = json.dumps(value) if name in config else ""
        found[PREFIX + name] = value
    return found


def parse_mapping(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise ValidationError(f"Write each header as Name: value; {line.strip()!r} is not.")
        found[name.strip()] = value.strip()
    return found


def parse_list(text: str) -> list[int | str]:
    return [int(v) if v.isdigit() else v for v in re.split(r"[,\s]+", text.strip()) if v]


def parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


# Above this many other monitors, "Depends on" is typed rather than picked from a list.
PICKER_LIMIT = 300


class ParentByName(forms.CharField):
    """ "Depends on" for organizations with many monitors: the monitor's name, or #id when
    two share a name."""

    def __init__(self, monitors: QuerySet[Monitor]) -> None:
        super().__init__(
            required=False,
            max_length=200,
            label="Depends on",
            help_text="Type the name of the monitor this one depends on (or #its number); "
            "while that monitor is down, this one's alerts are held back.",
        )
        self.monitors = monitors

    def clean(self, value: Any) -> Monitor | None:
        text = str(super().clean(value) or "").strip()
        if not text:
            return None
        if text.startswith("#") and text[1:].isdigit():
            found = list(self.monitors.filter(pk=int(text[1:]))[:1])
        else:
            found = list(self.monitors.filter(name=text)[:2])
        if not found:
            raise ValidationError(f"No other monitor is called {text!r}; check the name.")
        if len(found) > 1:
            raise ValidationError(
                f"Several monitors are called {text!r}; type # and the number in the address "
                f"of the one you mean (its page is /monitors/<number>/), e.g. #{found[0].pk}."
            )
        return found[0]


class MonitorForm(forms.Form):
    name = forms.CharField(max_length=100)
    interval = forms.IntegerField(
        label="Check every (seconds)", min_value=20, max_value=86400, initial=60
    )
    retry_interval = forms.IntegerField(
        label="While failing, check every (seconds)",
        min_value=10,
        max_value=86400,
        initial=20,
        help_text="Looks again sooner to confirm or clear a failure.",
    )
    timeout = forms.IntegerField(label="Timeout (seconds)", min_value=1, max_value=120, initial=10)
    confirmations = forms.IntegerField(
        label="Failures in a row before it is down",
        min_value=1,
        max_value=10,
        initial=3,
        help_text="Fewer false alarms from one lost packet; 1 alarms at the first failure.",
    )
    parent = forms.ModelChoiceField(
        queryset=Monitor.objects.none(),
        required=False,
        empty_label="none",
        label="Depends on",
        help_text="While that monitor is down, this one's alerts are held back.",
    )
    policy: forms.ModelChoiceField[Any] = forms.ModelChoiceField(
        queryset=None,  # the organization's policies, set in __init__
        required=False,
        empty_label="none: every channel at once",
        label="Escalation policy",
    )
    slug = forms.SlugField(
        max_length=100,
        required=False,
        help_text="Optional: also pinged at /ping/<ping key>/<slug>/, and made there on first "
        "use with ?create=1.",
    )

    def __init__(
        self,
        data: Any = None,
        *,
        org: Organization,
        kind: str,
        monitor: Monitor | None = None,
        initial: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(data, initial=initial)
        self.org, self.kind, self.monitor = org, kind, monitor
        others = Monitor.objects.filter(org=org).only("id", "name")
        if monitor is not None:
            others = others.exclude(pk=monitor.pk)
        self.fields["parent"].queryset = others  # type: ignore[attr-defined]
        if others.count() > PICKER_LIMIT:
            # A list of thousands is no help and a heavy page: type the name instead.
            self.fields["parent"] = ParentByName(others)
            if isinstance(self.initial.get("parent"), int):
                self.initial["parent"] = others.get(pk=self.initial["parent"]).name
        self.fields["policy"].queryset = policies(org)  # type: ignore[attr-defined]
        if kind == Kind.HEARTBEAT:
            for name in PROBE_ONLY:
                del self.fields[name]
        else:
            del self.fields["slug"]
        if monitor is None and not self.is_bound:
            # A new monitor's form starts from the spec's defaults (port 443, 200-299, ...).
            self.initial = {**initial_settings(kind, {}), **self.initial}
        for name, info in spec_model(kind).model_fields.items():
            self.fields[PREFIX + name] = setting_field(name, info)

    def common_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in COMMON if name in self.fields]

    def setting_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.fields if name.startswith(PREFIX)]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors:
            return data  # a setting that is not even a number needs no second message
        config = self.raw_config(data)
        if self.errors:
            return data
        # The rules are those of every other surface: services.settle applies them; here
        # its message is only put on the field it is about.
        try:
            data["input"] = self.monitor_input(data, config)
            data["config"] = services.settle(self.org, data["input"], self.monitor)["config"]
        except PydanticError as e:
            for error in e.errors():
                field, message = services.sentence(error)
                self.refused(services.Refusal(message, field), config)
        except services.Refusal as e:
            self.refused(e, config)
        return data

    def monitor_input(self, data: dict[str, Any], config: dict[str, Any]) -> MonitorInput:
        """The form's values as every surface hands them over; what the form does not show
        (heartbeats have no interval, nothing here pauses) keeps its value."""
        shown = {name: data[name] for name in ("name", *PROBE_ONLY, "slug") if name in self.fields}
        kept = {}
        if self.monitor is not None:
            kept = {name: getattr(self.monitor, name) for name in services.OWN}
        fields = MonitorFields.model_validate(
            {**kept, **shown, "kind": self.kind, "config": config}
        )
        policy, parent = data.get("policy"), data.get("parent")
        return MonitorInput(
            fields,
            policy_id=policy.pk if policy is not None else None,
            parent_id=parent.pk if parent is not None else None,
        )

    def refused(self, refusal: services.Refusal, config: dict[str, Any]) -> None:
        """Put a refusal's message on the field it names, or above the form."""
        message = str(refusal)
        if refusal.field == "config":
            self.add_error(self.field_of(config, message), message)
        else:
            self.add_error(refusal.field if refusal.field in self.fields else None, message)

    def raw_config(self, data: dict[str, Any]) -> dict[str, Any]:
        """The settings as typed: blanks left out, so the spec's defaults apply."""
        config: dict[str, Any] = {}
        for name, info in spec_model(self.kind).model_fields.items():
            value = data.get(PREFIX + name)
            kind_of = shape(info.annotation)
            if kind_of in ("bool", "choice"):
                config[name] = value if value != "" else info.default
            elif value is None or value == "":
                continue
            elif kind_of == "mapping":
                try:
                    config[name] = parse_mapping(value)
                except ValidationError as e:
                    self.add_error(PREFIX + name, e)
            elif kind_of == "list":
                config[name] = parse_list(value)
            elif kind_of == "json":
                config[name] = parse_json(value)
            else:
                config[name] = value
        return config

    def field_of(self, config: dict[str, Any], message: str) -> str | None:
        """The form field a spec's message is about: where pydantic found the error, or
        else the setting the message starts with ('json_expected' is required ...)."""
        name = ""
        try:
            spec_model(self.kind).model_validate(config)
        except PydanticError as e:
            loc = e.errors()[0]["loc"]
            name = PREFIX + str(loc[0]) if loc else ""
        if name not in self.fields:
            found = re.match(r"'(\w+)'", message)
            name = PREFIX + found.group(1) if found else ""
        return name if name in self.fields else None
