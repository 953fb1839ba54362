"""What plans are made of: repositories (where copies go, with their recovery kits) and
sources (what gets backed up). Secrets are write-only throughout: see forms.py."""

from __future__ import annotations

from typing import Any, cast

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from onwatch.backups import restic, services
from onwatch.backups.forms import (
    RepositoryForm,
    SourceForm,
    create_repository,
    repository_change,
    repository_initial,
    source_draft,
    source_initial,
)
from onwatch.backups.kinds import named
from onwatch.backups.kit import recovery_kit
from onwatch.backups.models import Repository, Source, SourceKind
from onwatch.backups.services import Actor, Refused, SourceFields
from onwatch.backups.services.repositories import InUse
from onwatch.core import audit
from onwatch.core.decorators import can, require
from onwatch.core.models import Organization


def _org(request: HttpRequest) -> Organization:
    org: Organization = request.org  # type: ignore[attr-defined]
    return org


def _repository(request: HttpRequest, pk: int) -> Repository:
    return get_object_or_404(Repository, pk=pk, org=_org(request))


def _source(request: HttpRequest, pk: int) -> Source:
    return get_object_or_404(Source, pk=pk, org=_org(request))


# --- repositories --------------------------------------------------------------------------


@require("backups.view")
def repositories(request: HttpRequest) -> HttpResponse:
    rows = Repository.objects.filter(org=_org(request)).prefetch_related("plans")
    ctx = {"rows": rows, "can_manage": can(request, "backups.manage")}
    return render(request, "backups/repositories.html", ctx)


@require("backups.view")
def repository_detail(request: HttpRequest, pk: int) -> HttpResponse:
    repository = _repository(request, pk)
    ctx = {
        "repository": repository,
        "plans": repository.plans.select_related("source"),
        "is_sftp": repository.url.startswith("sftp:"),
        "last_reclaim": services.last_reclaim(repository),
        "can_manage": can(request, "backups.manage"),
        "can_kit": can(request, "backups.recoverykit"),
    }
    return render(request, "backups/repository.html", ctx)


@require("backups.manage")
def repository_add(request: HttpRequest) -> HttpResponse:
    return _repository_form(request, None)


@require("backups.manage")
def repository_edit(request: HttpRequest, pk: int) -> HttpResponse:
    return _repository_form(request, _repository(request, pk))


def _repository_form(request: HttpRequest, repository: Repository | None) -> HttpResponse:
    org = _org(request)
    data = request.POST if request.method == "POST" else None
    initial = repository_initial(repository) if repository is not None else None
    form = RepositoryForm(data, org=org, repository=repository, initial=initial)
    if data is not None and form.is_valid():
        actor = Actor.of(request)
        try:
            if repository is None:
                saved = create_repository(org, form.cleaned_data, actor)
            else:
                saved = repository
                services.change_repository(repository, repository_change(form.cleaned_data), actor)
        except (restic.ResticError, services.InvalidRepository) as e:
            form.add_error(None, f"It cannot be used: {e}.")
        else:
            messages.success(request, f"Repository {saved.name} saved.")
            return redirect("backup_repository", pk=saved.pk)
    ctx = {"form": form, "repository": repository}
    return render(request, "backups/repository_form.html", ctx)


@require("backups.manage")
@require_POST
def repository_delete(request: HttpRequest, pk: int) -> HttpResponse:
    repository = _repository(request, pk)
    name = repository.name
    try:
        services.remove_repository(repository, Actor.of(request))
    except InUse as e:
        messages.error(request, str(e))
        return redirect("backup_repository", pk=pk)
    messages.success(
        request, f"Repository {name} removed from onwatch. The backups in it are not deleted."
    )
    return redirect("backup_repositories")


@require("backups.manage")
@require_POST
def repository_connect(request: HttpRequest, pk: int) -> HttpResponse:
    repository = _repository(request, pk)
    try:
        services.connect_repository(repository, Actor.of(request))
    except restic.ResticError as e:  # typed errors carry a message for people
        messages.error(request, f"Could not connect to {repository.name}: {e}")
    else:
        repository.refresh_from_db()
        if repository.ready:
            messages.success(request, f"{repository.name} is connected; backups go there now.")
        else:
            messages.error(request, f"{repository.name} is not reachable yet; try again.")
    return redirect("backup_repository", pk=pk)


@require("backups.manage")
@require_POST
def repository_forget_host_key(request: HttpRequest, pk: int) -> HttpResponse:
    """For an SFTP server rebuilt on purpose: the next Connect pins its new host key."""
    repository = _repository(request, pk)
    services.forget_host_key(repository, Actor.of(request))
    messages.warning(
        request,
        f"The host key of {repository.name} is forgotten; press Connect to pin the server's "
        "key again. Do this only if you know the server was rebuilt.",
    )
    return redirect("backup_repository", pk=pk)


@require("backups.recoverykit")
def repository_kit(request: HttpRequest, pk: int) -> HttpResponse:
    repository = _repository(request, pk)
    who = request.user.get_username()
    text = recovery_kit(repository, timezone.now(), who)
    audit.record("recovery-kit-downloaded", request=request, target=repository.name, id=pk)
    response = HttpResponse(text, content_type="text/markdown; charset=utf-8")
    safe_name = "".join(c if c.isalnum() or c in "-_" else "-" for c in repository.name)
    response["Content-Disposition"] = f'attachment; filename="recovery-kit-{safe_name}.md"'
    # A secret: no browser or proxy keeps a copy.
    response["Cache-Control"] = "no-store"
    return response


# --- sources -------------------------------------------------------------------------------


@require("backups.view")
def sources(request: HttpRequest) -> HttpResponse:
    rows = Source.objects.filter(org=_org(request)).prefetch_related("plans")
    ctx = {"rows": rows, "can_manage": can(request, "backups.manage")}
    return render(request, "backups/sources.html", ctx)


@require("backups.manage")
def source_add(request: HttpRequest) -> HttpResponse:
    """Pick a kind first: the form then shows only that kind's fields (no JavaScript)."""
    kinds = [(value, label, named(value).HELP) for value, label in SourceKind.choices]
    return render(request, "backups/source_add.html", {"kinds": kinds})


@require("backups.manage")
def source_add_kind(request: HttpRequest, kind: str) -> HttpResponse:
    if kind not in SourceKind.values:
        raise Http404("no such kind of source")
    return _source_form(request, kind, None)


@require("backups.manage")
def source_edit(request: HttpRequest, pk: int) -> HttpResponse:
    source = _source(request, pk)
    return _source_form(request, source.kind, source)


def problems_with(source: Source) -> list[str]:
    """What checks.check_source finds wrong (version mismatch, wrong password…)."""
    from onwatch.backups.checks import check_source

    return check_source(source)


def _source_form(request: HttpRequest, kind: str, source: Source | None) -> HttpResponse:
    org = _org(request)
    data = request.POST if request.method == "POST" else None
    initial = source_initial(source) if source is not None else None
    form = SourceForm(data, org=org, kind=kind, source=source, initial=initial)
    problems: list[str] = []
    if data is not None and form.is_valid():
        fields = form.fields_of()
        problems = problems_with(source_draft(org, kind, source, fields))
        if not problems or data.get("save_anyway"):
            try:
                saved = save_source(request, kind, source, fields, problems)
            except Refused as e:
                form.add_error(None, str(e))
            else:
                messages.success(request, f"Source {saved.name} saved.")
                for problem in problems:
                    messages.warning(request, f"{saved.name}: {problem}")
                return redirect("backup_sources")
    ctx = {
        "form": form,
        "source": source,
        "kind": kind,
        "kind_label": SourceKind(kind).label,
        "problems": problems,
    }
    return render(request, "backups/source_form.html", ctx)


def save_source(
    request: HttpRequest,
    kind: str,
    source: Source | None,
    fields: dict[str, Any],
    problems: list[str],
) -> Source:
    """Raises services.Refused."""
    actor = Actor.of(request)
    if source is None:
        name = fields.pop("name")
        return services.add_source(
            _org(request), name, kind, actor=actor, known_problems=problems, **fields
        )
    services.change_source(source, cast(SourceFields, fields), actor, problems)
    return source


@require("backups.manage")
@require_POST
def source_delete(request: HttpRequest, pk: int) -> HttpResponse:
    source = _source(request, pk)
    name = source.name
    try:
        services.remove_source(source, Actor.of(request))
    except InUse as e:
        messages.error(request, str(e))
        return redirect("backup_source_edit", pk=pk)
    messages.success(request, f"Source {name} removed. Nothing on its server was touched.")
    return redirect("backup_sources")
