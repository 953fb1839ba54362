"""The service form and the secret form: they parse; services.py decides and writes."""

from __future__ import annotations

from django import forms

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
