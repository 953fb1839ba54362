"""Status pages: the public page and its badges, and the pages that manage them. Thin: the
work is in status_page.py, status_forms.py and badges.py."""

from __future__ import annotations

from django.contrib import messages
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_cache_control
from django.views.decorators.http import require_POST, require_safe

from onwatch.core.audit import Actor
from onwatch.core.decorators import public, require
from onwatch.uptime import badges, services, status_page
from onwatch.uptime.models import Monitor, StatusPage, StatusPageItem
from onwatch.uptime.status_forms import StatusPageForm, item_formset, page_input

# Badges are fetched by README renderers and image proxies on every view: a minute is
# fresh enough for a state, and spares the database.
BADGE_MAX_AGE = 60


@public("status pages are for everyone; they show only names chosen for them")
@require_safe
def public_page(request: HttpRequest, slug: str) -> HttpResponse:
    page = get_object_or_404(StatusPage, slug=slug)
    shown = status_page.build(page, timezone.now())
    return render(request, "uptime/status/page.html", {"status": shown})


@public("badges are embedded in READMEs and other sites; they show a chosen name")
@require_safe
def state_badge(request: HttpRequest, slug: str, item: int) -> HttpResponse:
    found = _item(slug, item)
    state = status_page.item_state(found, timezone.now())
    return _svg(badges.state_badge(found.label, state))


@public("badges are embedded in READMEs and other sites; they show a chosen name")
@require_safe
def uptime_badge(request: HttpRequest, slug: str, item: int) -> HttpResponse:
    found = _item(slug, item)
    uptime = status_page.item_uptime(found, timezone.now())
    return _svg(badges.uptime_badge(found.label, uptime))


def _item(slug: str, pk: int) -> StatusPageItem:
    # Through the page's address: an item id alone never reaches another page's item.
    items = StatusPageItem.objects.select_related("page", "monitor")
    return get_object_or_404(items, pk=pk, page__slug=slug)


def _svg(body: str) -> HttpResponse:
    response = HttpResponse(body, content_type="image/svg+xml; charset=utf-8")
    patch_cache_control(response, public=True, max_age=BADGE_MAX_AGE)
    return response


@require("statuspages.manage")
def page_list(request: HttpRequest) -> HttpResponse:
    org = request.org  # type: ignore[attr-defined]
    pages = StatusPage.objects.filter(org=org).annotate(shown=Count("items")).order_by("title")
    ctx = {"pages": pages, "has_monitors": Monitor.objects.filter(org=org).exists()}
    return render(request, "uptime/status/list.html", ctx)


@require("statuspages.manage")
def page_add(request: HttpRequest) -> HttpResponse:
    return _page_form(request, None)


@require("statuspages.manage")
def page_edit(request: HttpRequest, pk: int) -> HttpResponse:
    org = request.org  # type: ignore[attr-defined]
    return _page_form(request, get_object_or_404(StatusPage, pk=pk, org=org))


def _page_form(request: HttpRequest, page: StatusPage | None) -> HttpResponse:
    org = request.org  # type: ignore[attr-defined]
    data = request.POST if request.method == "POST" else None
    initial = None
    if page is not None:
        initial = {
            "title": page.title,
            "slug": page.slug,
            "intro": page.intro,
            "show_incidents": page.show_incidents,
        }
    form = StatusPageForm(data, page=page, initial=initial)
    items = item_formset(data, org, page)
    if data is not None and form.is_valid() and items.is_valid():
        try:
            saved = _save(request, page, page_input(form, items))
        except services.Refusal as e:
            # Checked by the forms a moment ago; something changed in between.
            form.add_error("slug" if e.field == "slug" else None, str(e))
        else:
            messages.success(request, f"Status page {saved.title} saved; it is public now.")
            return redirect("status_page_edit", pk=saved.pk)
    ctx = {"form": form, "items": items, "page": page, "badges": _badges(request, page)}
    return render(request, "uptime/status/form.html", ctx)


def _save(
    request: HttpRequest, page: StatusPage | None, data: services.StatusPageInput
) -> StatusPage:
    if page is None:
        org = request.org  # type: ignore[attr-defined]
        return services.add_status_page(org, data, Actor.of(request))
    return services.change_status_page(page, data, Actor.of(request))


def _badges(request: HttpRequest, page: StatusPage | None) -> list[tuple[str, str, str]]:
    """(public name, state badge URL, uptime badge URL) per item, to copy into a README."""
    if page is None:
        return []
    found = []
    for item in page.items.all():
        args = {"slug": page.slug, "item": item.pk}
        found.append(
            (
                item.label,
                request.build_absolute_uri(reverse("status_badge", kwargs=args)),
                request.build_absolute_uri(reverse("status_badge_uptime", kwargs=args)),
            )
        )
    return found


@require("statuspages.manage")
@require_POST
def page_delete(request: HttpRequest, pk: int) -> HttpResponse:
    org = request.org  # type: ignore[attr-defined]
    page = get_object_or_404(StatusPage, pk=pk, org=org)
    title, slug = page.title, page.slug
    services.remove_status_page(page, Actor.of(request))
    messages.success(
        request, f"Status page {title} removed; /status/{slug}/ and its badges are gone."
    )
    return redirect("status_pages")
