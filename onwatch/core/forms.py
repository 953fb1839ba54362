"""Forms for members, invites and API tokens. They only parse: the changes they ask for
are made (and audited) by services.py."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings

from onwatch.core.roles import Role, roles_grantable_by, scopes_for


def _role_choices(actor_role: str) -> list[tuple[str, str]]:
    return [(r.value, r.label) for r in roles_grantable_by(actor_role)]


class InviteForm(forms.Form):
    role = forms.ChoiceField()
    email = forms.EmailField(
        required=False, help_text="Optional: a note of whom the link is for; it is not mailed."
    )

    def __init__(self, *args: Any, actor_role: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = _role_choices(actor_role)  # type: ignore[attr-defined]
        self.fields["role"].initial = Role.VIEWER


class RoleForm(forms.Form):
    role = forms.ChoiceField()

    def __init__(self, *args: Any, actor_role: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = _role_choices(actor_role)  # type: ignore[attr-defined]


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What uses it, e.g. “CI status check”.")
    scopes = forms.MultipleChoiceField(
        widget=forms.CheckboxSelectMultiple,
        error_messages={"required": "Pick at least one scope; a token without one can do nothing."},
    )
    days = forms.IntegerField(
        label="Expires after (days)",
        min_value=1,
        max_value=3650,
        help_text="A token stops working after this; make a new one then.",
    )

    def __init__(self, *args: Any, role: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["scopes"].choices = [(s, s) for s in scopes_for(role)]  # type: ignore[attr-defined]
        self.fields["days"].initial = settings.API_TOKEN_DEFAULT_DAYS
