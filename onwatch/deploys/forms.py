"""The service form and the secret form: they parse; services.py decides and writes."""

from __future__ import annotations

from typing import Any

from django import forms

from onwatch.alerts import services as alert_services
from onwatch.backups import services as backup_services
from onwatch.core.models import Organization
from onwatch.deploys.services import BRANCH


class ServiceForm(forms.Form):
    name = forms.CharField(max_length=100)
    git_url = forms.CharField(
        label="Repository",
        max_length=500,
        help_text="Any address git can fetch: https://…, ssh://git@host/repo.git, "
        "git@host:team/app.git or a path on this machine.",
    )
    branch = forms.RegexField(regex=BRANCH, max_length=200, initial="main")
    supersede = forms.BooleanField(
        label="A newer push cancels the older run",
        required=False,
        initial=True,
        help_text="Only the branch's newest commit is tested; untick to test every push.",
    )
    poll_minutes = forms.IntegerField(
        label="Check for new commits every (minutes)",
        required=False,
        min_value=1,
        max_value=1440,
        help_text="For a repository that cannot send webhooks; leave empty to never check.",
    )
    # Unticked (or not sent at all) means every channel, as before there was a choice.
    only_chosen = forms.BooleanField(
        label="Tell only the channels ticked below",
        required=False,
        help_text="Otherwise failed and fixed pipelines go to every alert channel. Whoever "
        "pushed hears too, on their own channel (Alert channels → My own channel).",
    )
    alert_channels = forms.TypedMultipleChoiceField(
        label="Channels that hear about its pipelines",
        coerce=int,
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    backup_plan_id = forms.TypedChoiceField(
        label="Back up before migrations",
        coerce=int,
        empty_value=None,
        required=False,
        help_text="When a release has a release command (migrations), a backup of this plan "
        "runs first and must end well before they run.",
    )

    def __init__(self, *args: Any, org: Organization, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        channels = alert_services.organization_channels(org)
        self.fields["alert_channels"].choices = [(c.pk, c.name) for c in channels]  # type: ignore[attr-defined]
        plans = [("", "no backup first"), *backup_services.plan_choices(org)]
        self.fields["backup_plan_id"].choices = plans  # type: ignore[attr-defined]

    def service_fields(self) -> dict[str, Any]:
        """The cleaned data as services.ServiceFields takes it: None for every channel."""
        data = dict(self.cleaned_data)
        only_chosen = data.pop("only_chosen")
        data["alert_channels"] = list(data["alert_channels"]) if only_chosen else None
        return data


class SecretForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        help_text="The environment variable the steps read it from, e.g. DATABASE_URL.",
    )
    value = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "autocomplete": "off"}),
        strip=False,
        help_text="Saved encrypted and never shown again; save it again under the same name "
        "to replace it.",
    )


class HostForm(forms.Form):
    """An SSH host (add) or its details (change: no address)."""

    address = forms.CharField(
        label="Address",
        max_length=300,
        help_text="user@host or user@host:port, e.g. deploy@203.0.113.7; the user releases "
        "run as (no root needed).",
    )
    provider = forms.CharField(
        max_length=100,
        required=False,
        help_text="Where it runs: your own server, a VPS provider or a cloud.",
        widget=forms.TextInput(attrs={"list": "providers"}),
    )
    monthly_cost = forms.DecimalField(
        label="Monthly cost", required=False, min_value=0, max_digits=9, decimal_places=2
    )
    currency = forms.RegexField(
        regex=r"^[A-Za-z]{3}$", max_length=3, required=False, help_text="e.g. EUR or USD"
    )
    allow_sudo = forms.BooleanField(
        label="May use root",
        required=False,
        help_text="Tick only on purpose: onwatch needs no root, and a deploy user that is root "
        "or uses sudo without a password is otherwise reported as a problem.",
    )
    caddy_https = forms.BooleanField(
        label="HTTPS",
        required=False,
        initial=True,
        help_text="Caddy gets each domain a certificate and sends http on to https; the "
        "domains must point at the host.",
    )
    # Left empty: the host's own (or, for a new host, 80, 443 and 2020).
    http_port = forms.IntegerField(
        label="HTTP port", required=False, min_value=1, max_value=65535, initial=80
    )
    https_port = forms.IntegerField(
        label="HTTPS port",
        required=False,
        min_value=1,
        max_value=65535,
        initial=443,
        help_text="Below 1024 Caddy needs a right the deploy user may lack: the host's check "
        "says what to do.",
    )
    health_port = forms.IntegerField(
        label="Health check port",
        required=False,
        min_value=1024,
        max_value=65535,
        initial=2020,
        help_text="Caddy's own, on the host's loopback: any free port.",
    )

    def __init__(self, *args: Any, adding: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not adding:
            del self.fields["address"]


class WatchForm(forms.Form):
    """The watch of each new release, a form of its own: the service form leaves it alone."""

    seconds = forms.IntegerField(label="Watch each new release for (seconds; 0: not at all)")
    min_requests = forms.IntegerField(label="Requests it must answer before it is judged")
    error_percent = forms.FloatField(label="Roll back when errors (5xx) are over (%)")
    error_factor = forms.FloatField(label="and over this many times the release before it's")
    latency_factor = forms.FloatField(
        label="or when its answers take this many times as long as the release before it's "
        "(0: how long they take does not count)"
    )
    latency_ms = forms.IntegerField(label="and over this many milliseconds on average")
