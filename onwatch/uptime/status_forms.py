"""Forms for status pages: the page itself, and one row per monitor shown on it. They only
parse: the rules are services.py's, which saves the page."""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.core.exceptions import ValidationError

from onwatch.core.models import Organization
from onwatch.uptime import services
from onwatch.uptime.models import Monitor, StatusPage
from onwatch.uptime.services import StatusPageInput

# Blank rows offered under the chosen monitors: the page works without JavaScript, so
# there is no "add a row" button; saving offers new blank rows.
SPARE_ROWS = 3


class StatusPageForm(forms.Form):
    title = forms.CharField(max_length=100, help_text="Shown at the top of the public page.")
    slug = forms.SlugField(
        label="Address",
        max_length=60,
        help_text="The page is public at /status/<address>/: letters, digits, - and _.",
    )
    intro = forms.CharField(
        label="Introduction",
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Optional text under the title, e.g. where to write for help.",
    )
    show_incidents = forms.BooleanField(
        label="Show the incident history (last 90 days)", required=False, initial=True
    )

    def __init__(self, *args: Any, page: StatusPage | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.page = page

    def clean_slug(self) -> str:
        slug: str = self.cleaned_data["slug"].lower()
        if services.status_slug_taken(slug, self.page):
            raise ValidationError(services.SLUG_TAKEN)
        return slug


class MonitorChoice(forms.ModelChoiceField):  # type: ignore[type-arg]
    def label_from_instance(self, obj: Any) -> str:
        return f"{obj.name} ({obj.get_kind_display()})"


class ItemForm(forms.Form):
    monitor = MonitorChoice(queryset=Monitor.objects.none(), required=False)
    label = forms.CharField(
        label="Public name", max_length=100, required=False, help_text="What visitors see."
    )
    position = forms.IntegerField(label="Order", min_value=0, max_value=10000, required=False)

    def __init__(self, *args: Any, org: Organization, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.fields["monitor"].queryset = Monitor.objects.filter(org=org)  # type: ignore[attr-defined]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        label = data["label"] = (data.get("label") or "").strip()
        if data.get("monitor") and not label:
            self.add_error("label", "Give this monitor a public name; its own is never shown.")
        elif label and not data.get("monitor") and "monitor" not in self.errors:
            self.add_error("monitor", "Pick the monitor this public name is for.")
        return data


class BaseItemFormSet(forms.BaseFormSet):  # type: ignore[type-arg]
    def clean(self) -> None:
        if any(self.errors):
            return
        try:
            services.check_items(self.rows())
        except services.Refusal as e:
            raise ValidationError(str(e)) from None

    def rows(self) -> list[tuple[Monitor, str]]:
        """Filled rows as (monitor, label) in display order: by the order given, rows
        without one after those with one, each in the order they were listed. Rows
        without a monitor are dropped (that is how one is removed)."""
        filled = [
            (f.cleaned_data.get("position"), n, f.cleaned_data["monitor"], f.cleaned_data["label"])
            for n, f in enumerate(self.forms)
            if f.cleaned_data.get("monitor")
        ]
        filled.sort(key=lambda row: (row[0] is None, row[0] or 0, row[1]))
        return [(monitor, label) for _, _, monitor, label in filled]


ItemFormSet = forms.formset_factory(ItemForm, formset=BaseItemFormSet, extra=SPARE_ROWS)


def item_formset(data: Any, org: Organization, page: StatusPage | None) -> BaseItemFormSet:
    initial = []
    # Only to show the form: bound rows compared with their initial values would count as
    # unchanged, and Django leaves unchanged extra rows out of cleaned_data.
    if page is not None and data is None:
        for n, item in enumerate(page.items.select_related("monitor"), start=1):
            initial.append({"monitor": item.monitor, "label": item.label, "position": n})
    formset = ItemFormSet(data, initial=initial, prefix="items", form_kwargs={"org": org})
    return cast(BaseItemFormSet, formset)


def page_input(form: StatusPageForm, items: BaseItemFormSet) -> StatusPageInput:
    data = form.cleaned_data
    return StatusPageInput(
        title=data["title"],
        slug=data["slug"],
        intro=data["intro"],
        show_incidents=data["show_incidents"],
        items=tuple((monitor.pk, label) for monitor, label in items.rows()),
    )
