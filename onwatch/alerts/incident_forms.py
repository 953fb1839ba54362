"""Forms for incidents, escalation policies and maintenance windows."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone

from onwatch.alerts import services
from onwatch.alerts.models import Channel, EscalationPolicy, Maintenance
from onwatch.core.crons import zone
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
        refusal = services.policy_name_refusal(self.org, name, self.policy)
        if refusal:
            raise ValidationError(refusal)
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


def policy_spec(form: PolicyForm, steps: BaseStepFormSet) -> services.PolicySpec:
    data = form.cleaned_data
    return services.PolicySpec(
        name=data["name"],
        repeat_minutes=data["repeat_minutes"],
        notify_recovery=data["notify_recovery"],
        steps=tuple(
            services.StepSpec(after, tuple(ch.pk for ch in channels))
            for after, channels in steps.steps()
        ),
    )


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

    # The rules are the services' (check_maintenance); a refusal shows at its field.
    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors:
            return data
        try:
            services.check_maintenance(maintenance_spec(data))
        except services.Refused as e:
            self.add_error(e.field if e.field in self.fields else None, str(e))
        return data


def maintenance_spec(data: dict[str, Any]) -> services.MaintenanceSpec:
    def wall_clock(value: datetime | None) -> datetime | None:
        # The form read the time in the site's zone; the window's own zone reads it.
        return timezone.make_naive(value) if value is not None else None

    recurring = data["kind"] == "cron"
    return services.MaintenanceSpec(
        name=data["name"],
        recurring=recurring,
        tz=data["tz"],
        starts_at=None if recurring else wall_clock(data.get("starts_at")),
        ends_at=None if recurring else wall_clock(data.get("ends_at")),
        cron=(data.get("cron") or "") if recurring else "",
        duration_minutes=(data.get("duration_minutes") or 0) if recurring else 0,
        sources=tuple(data["sources"].splitlines()),
        public=data["public"],
    )


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
