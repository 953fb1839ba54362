"""Forms for incidents, escalation policies and maintenance windows."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from django import forms
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from onwatch.alerts.models import Channel, EscalationPolicy, EscalationStep, Maintenance
from onwatch.core.crons import validate_schedule, zone
from onwatch.core.models import Organization

LOCAL_FORMAT = "%Y-%m-%dT%H:%M"
# Blank step rows offered under the existing ones: pages work without JavaScript, so there
# is no "add a row" button.
SPARE_STEPS = 2


class NoteForm(forms.Form):
    text = forms.CharField(
        label="Note for the timeline", max_length=4000, widget=forms.Textarea(attrs={"rows": 3})
    )


class PolicyForm(forms.Form):
    name = forms.CharField(max_length=100)
    repeat_minutes = forms.IntegerField(
        label="Remind every (minutes)",
        min_value=0,
        max_value=10080,
        initial=0,
        help_text="Everyone notified so far hears again this often until someone "
        "acknowledges or it is resolved; 0 sends no reminders.",
    )
    notify_recovery = forms.BooleanField(
        label="Send a recovery notice to everyone notified",
        required=False,
        initial=True,
    )

    def __init__(
        self, *args: Any, org: Organization, policy: EscalationPolicy | None = None, **kw: Any
    ) -> None:
        super().__init__(*args, **kw)
        self.org, self.policy = org, policy

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"].strip()
        taken = EscalationPolicy.objects.filter(org=self.org, name__iexact=name)
        if self.policy is not None:
            taken = taken.exclude(pk=self.policy.pk)
        if taken.exists():
            raise ValidationError("Another policy already has this name; pick another.")
        return name


class StepForm(forms.Form):
    after_minutes = forms.IntegerField(
        label="After (minutes unacknowledged)", min_value=0, max_value=10080, required=False
    )
    channels = forms.ModelMultipleChoiceField(
        queryset=Channel.objects.none(), widget=forms.CheckboxSelectMultiple, required=False
    )

    def __init__(self, *args: Any, org: Organization, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.fields["channels"].queryset = Channel.objects.filter(org=org)  # type: ignore[attr-defined]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("channels") and data.get("after_minutes") is None:
            raise ValidationError("Say after how many minutes this step sends (0: at once).")
        return data


class BaseStepFormSet(forms.BaseFormSet):  # type: ignore[type-arg]
    def clean(self) -> None:
        if any(self.errors):
            return
        if not self.steps():
            raise ValidationError(
                "Give at least one step a channel; a policy without steps tells nobody."
            )

    def steps(self) -> list[tuple[int, list[Channel]]]:
        """Filled rows as (minutes, channels), earliest first; rows without channels are
        dropped (that is how a step is removed)."""
        rows = [
            (f.cleaned_data["after_minutes"], list(f.cleaned_data["channels"]))
            for f in self.forms
            if f.cleaned_data.get("channels")
        ]
        return sorted(rows, key=lambda row: row[0])


StepFormSet = forms.formset_factory(StepForm, formset=BaseStepFormSet, extra=SPARE_STEPS)


def step_formset(data: Any, org: Organization, policy: EscalationPolicy | None) -> BaseStepFormSet:
    initial = []
    # Only to show the form: bound rows compared with their initial values would count as
    # unchanged, and Django leaves unchanged extra rows out of cleaned_data.
    if policy is not None and data is None:
        for step in policy.steps.all():
            initial.append({"after_minutes": step.after_minutes, "channels": step.channels.all()})
    formset = StepFormSet(data, initial=initial, prefix="steps", form_kwargs={"org": org})
    return cast(BaseStepFormSet, formset)


@transaction.atomic
def save_policy(
    org: Organization, policy: EscalationPolicy | None, form: PolicyForm, steps: BaseStepFormSet
) -> EscalationPolicy:
    data = form.cleaned_data
    if policy is None:
        policy = EscalationPolicy(org=org)
    policy.name = data["name"]
    policy.repeat_minutes = data["repeat_minutes"]
    policy.notify_recovery = data["notify_recovery"]
    policy.save()
    # Steps are replaced whole: open incidents keep counting by position (next_step), and
    # the sorted rows keep that meaning.
    policy.steps.all().delete()
    for position, (after, channels) in enumerate(steps.steps()):
        step = EscalationStep.objects.create(policy=policy, position=position, after_minutes=after)
        step.channels.set(channels)
    return policy


def describe_policy(policy: EscalationPolicy) -> list[str]:
    """One line per step, for the audit log and the list page."""
    return [
        f"after {s.after_minutes} min: {', '.join(ch.name for ch in s.channels.all())}"
        for s in policy.steps.all()
    ]


class MaintenanceForm(forms.Form):
    name = forms.CharField(max_length=100)
    kind = forms.ChoiceField(
        label="Kind",
        choices=[("once", "One-off"), ("cron", "Recurring (cron)")],
        widget=forms.RadioSelect,
        initial="once",
    )
    tz = forms.CharField(
        label="Time zone",
        max_length=60,
        initial="UTC",
        help_text="Start, end and cron times are read in this zone, e.g. Europe/Prague.",
    )
    starts_at = forms.DateTimeField(
        label="Starts",
        required=False,
        input_formats=[LOCAL_FORMAT, "%Y-%m-%d %H:%M"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format=LOCAL_FORMAT),
    )
    ends_at = forms.DateTimeField(
        label="Ends",
        required=False,
        input_formats=[LOCAL_FORMAT, "%Y-%m-%d %H:%M"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format=LOCAL_FORMAT),
    )
    cron = forms.CharField(
        label="Starts at (cron)",
        max_length=100,
        required=False,
        help_text="Five fields, e.g. '0 2 * * 0' for Sundays at 02:00.",
    )
    duration_minutes = forms.IntegerField(
        label="Lasts (minutes)", min_value=1, max_value=10080, required=False
    )
    sources = forms.CharField(
        label="Covers",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Incident sources, one per line (e.g. uptime.monitor:42); "
        "empty covers everything in the organization.",
    )
    public = forms.BooleanField(label="Show on the status page", required=False, initial=True)

    def clean_tz(self) -> str:
        tz: str = self.cleaned_data["tz"].strip()
        try:
            zone(tz)
        except ValidationError as e:
            raise ValidationError(e.messages[0]) from None
        return tz

    def clean_sources(self) -> list[str]:
        lines = self.cleaned_data["sources"].splitlines()
        return sorted({line.strip() for line in lines if line.strip()})

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("kind") == "cron":
            self._clean_recurring(data)
        elif data.get("kind") == "once":
            self._clean_once(data)
        return data

    def _clean_recurring(self, data: dict[str, Any]) -> None:
        expr = (data.get("cron") or "").strip()
        data["cron"] = expr
        if not expr:
            self.add_error("cron", "Give a cron expression for a recurring window.")
        elif "tz" in data:
            try:
                validate_schedule(expr, data["tz"])
            except ValidationError as e:
                self.add_error("cron", e.messages[0])
        if not data.get("duration_minutes"):
            self.add_error("duration_minutes", "Say how many minutes each window lasts.")

    def _clean_once(self, data: dict[str, Any]) -> None:
        starts, ends = data.get("starts_at"), data.get("ends_at")
        if starts is None:
            self.add_error("starts_at", "Say when the window starts.")
        if ends is None:
            self.add_error("ends_at", "Say when the window ends.")
        if starts is None or ends is None or "tz" not in data:
            return
        data["starts_at"], data["ends_at"] = in_zone(starts, data["tz"]), in_zone(ends, data["tz"])
        if data["ends_at"] <= data["starts_at"]:
            self.add_error("ends_at", "The window must end after it starts.")


def in_zone(value: datetime, tz: str) -> datetime:
    """The form read a wall-clock time in the site's zone; read it in `tz` instead."""
    return timezone.make_naive(value).replace(tzinfo=zone(tz))


def maintenance_initial(m: Maintenance) -> dict[str, Any]:
    local = zone(m.tz)
    return {
        "name": m.name,
        "kind": "cron" if m.cron else "once",
        "tz": m.tz,
        "starts_at": m.starts_at.astimezone(local).strftime(LOCAL_FORMAT) if m.starts_at else "",
        "ends_at": m.ends_at.astimezone(local).strftime(LOCAL_FORMAT) if m.ends_at else "",
        "cron": m.cron,
        "duration_minutes": m.duration_minutes or None,
        "sources": "\n".join(m.sources),
        "public": m.public,
    }


def save_maintenance(
    org: Organization, m: Maintenance | None, form: MaintenanceForm
) -> Maintenance:
    data = form.cleaned_data
    if m is None:
        m = Maintenance(org=org)
    recurring = data["kind"] == "cron"
    m.name, m.tz, m.sources, m.public = data["name"], data["tz"], data["sources"], data["public"]
    m.cron = data["cron"] if recurring else ""
    m.duration_minutes = data["duration_minutes"] if recurring else 0
    m.starts_at = None if recurring else data["starts_at"]
    m.ends_at = None if recurring else data["ends_at"]
    m.save()
    return m


def describe_maintenance(m: Maintenance) -> str:
    if m.cron:
        return f"{m.cron} ({m.tz}) for {m.duration_minutes} min"
    local = zone(m.tz)
    assert m.starts_at is not None and m.ends_at is not None
    start, end = m.starts_at.astimezone(local), m.ends_at.astimezone(local)
    return f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} ({m.tz})"
