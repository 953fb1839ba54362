from __future__ import annotations

from typing import Any

from django import forms

from onwatch.alerts import apprise, services
from onwatch.alerts.models import Channel
from onwatch.core.models import Organization


class SecretInput(forms.TextInput):
    """A text box that never writes its value back into the page: channel URLs hold
    passwords and tokens, so a saved (or just typed) URL is not sent to the browser again."""

    def format_value(self, value: Any) -> str | None:
        return None


class ChannelForm(forms.Form):
    name = forms.CharField(
        max_length=100, help_text="A short name; onwatch notify test --channel NAME picks it."
    )
    url = forms.CharField(
        label="Apprise URL",
        max_length=2000,
        widget=SecretInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
        help_text="For example mailto://user:password@example.com or jsons://host/path. "
        "It is stored encrypted and never shown again.",
    )

    def __init__(
        self, *args: Any, org: Organization, channel: Channel | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.org = org
        self.channel = channel
        if channel is not None:
            self.fields["url"].required = False
            self.fields["url"].help_text = "Leave empty to keep the current URL."

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"].strip()
        refusal = services.channel_name_refusal(self.org, name, self.channel)
        if refusal:
            raise forms.ValidationError(refusal)
        return name

    def clean_url(self) -> str:
        url: str = self.cleaned_data["url"].strip()
        if not url and self.channel is not None:
            return ""
        try:
            apprise.service_of(url)
        except apprise.ChannelError as e:
            raise forms.ValidationError(str(e)) from None
        return url


class OwnChannelForm(forms.Form):
    url = forms.CharField(
        label="Apprise URL",
        max_length=2000,
        widget=SecretInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
        help_text="Where you hear about failed and fixed pipelines of your own pushes, e.g. "
        "mailto://user:password@example.com or a chat's URL, at a public address (not this "
        "machine or its local network). Stored encrypted, never shown again.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if services.own_channels_reach_inside():  # the operator allowed any address
            self.fields["url"].help_text = self.fields["url"].help_text.replace(
                ", at a public address (not this machine or its local network)", ""
            )

    def clean_url(self) -> str:
        url: str = self.cleaned_data["url"].strip()
        try:
            apprise.service_of(url)
        except apprise.ChannelError as e:
            raise forms.ValidationError(str(e)) from None
        return url
