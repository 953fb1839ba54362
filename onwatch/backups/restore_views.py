"""Restoring from the UI, in three steps without JavaScript: pick a backup and a new place
for it, confirm by typing the plan's name, then watch the job. onwatch only ever restores
into a database or path that does not exist yet."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django import forms
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone

from onwatch.backups import restic, restores
from onwatch.backups import restore_requests as asked
from onwatch.backups.kinds import on_server
from onwatch.backups.models import Drill, Outcome, Plan, Repository, Restore
from onwatch.backups.services import (
    Actor,
    drill_repository,
    left_out_copies,
    request_restore,
    why_left_out,
)
from onwatch.core.decorators import require
from onwatch.core.lazy import lazy_module
from onwatch.core.mariadb import MariaDBError
from onwatch.core.models import JobState, Organization

if TYPE_CHECKING:
    import psycopg
else:
    # Imported on first use: an install on SQLite never talks to this server, and the
    # module would cost every onwatch process memory and start-up time.
    psycopg = lazy_module("psycopg")

DATABASE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
REFRESH_SECONDS = 3


def _org(request: HttpRequest) -> Organization:
    org: Organization = request.org  # type: ignore[attr-defined]
    return org


@dataclass(frozen=True)
class SnapshotRow:
    snapshot: restic.Snapshot
    taken: datetime | None
    run_id: int | None
    drilled: bool  # a drill restored this very snapshot and verified it

    @property
    def label(self) -> str:
        when = f"{timezone.localtime(self.taken):%Y-%m-%d %H:%M}" if self.taken else "?"
        parts = [when, self.snapshot.short_id]
        if self.run_id:
            parts.append(f"backup #{self.run_id}")
        if self.drilled:
            parts.append("restore tested")
        return " · ".join(parts)


def snapshot_rows(plan: Plan, repository: Repository) -> list[SnapshotRow]:
    """The plan's verified backups in the repository, newest first: the same ones
    `onwatch restore` and the recovery kit offer. Raises restic.ResticError."""
    drilled = [s for s in Drill.objects.filter(plan=plan, verified=True).values_list(
        "snapshot_id", flat=True) if s]  # fmt: skip
    rows = []
    for found in restores.verified_snapshots(plan, repository):
        snap = found.snapshot
        tested = any(snap.id.startswith(d) or d.startswith(snap.id) for d in drilled)
        rows.append(SnapshotRow(snap, asked.taken_at(snap.time), found.copy.run_id, tested))
    return rows


class RestoreForm(forms.Form):
    repository = forms.IntegerField(widget=forms.HiddenInput)
    snapshot = forms.ChoiceField(widget=forms.RadioSelect, label="Which backup")
    database = forms.CharField(
        max_length=63,
        label="New database name",
        help_text="onwatch creates it; it must not exist yet. Letters, digits and _ only.",
    )
    server = forms.ChoiceField(label="On", widget=forms.RadioSelect)
    path = forms.CharField(
        max_length=1000,
        label="New path",
        help_text="Where the restored copy goes on this machine; it must not exist yet.",
    )
    confirm_name = forms.CharField(max_length=100, label="Type the plan's name to confirm")

    def __init__(
        self, data: Any, *, plan: Plan, rows: list[SnapshotRow], confirming: bool, **kw: Any
    ) -> None:
        super().__init__(data, **kw)
        self.plan, self.source, self.rows = plan, plan.source, rows
        self.fields["snapshot"].choices = [(r.snapshot.id, r.label) for r in rows]  # type: ignore[attr-defined]
        if on_server(self.source):
            del self.fields["path"]
            here = asked.login(self.source, asked.SOURCE_SERVER)
            servers = [(asked.SOURCE_SERVER, f"the source's server, {here.host}:{here.port}")]
            if self.source.scratch_url:
                there = asked.login(self.source, asked.SCRATCH_SERVER)
                servers.append(
                    (asked.SCRATCH_SERVER, f"the drill server, {there.host}:{there.port}")
                )
            self.fields["server"].choices = servers  # type: ignore[attr-defined]
            self.fields["server"].initial = asked.SOURCE_SERVER
        else:
            del self.fields["database"], self.fields["server"]
        if not confirming:
            del self.fields["confirm_name"]

    def clean_repository(self) -> Repository:
        found = self.plan.copies.filter(pk=self.cleaned_data["repository"]).first()
        if found is None:
            raise ValidationError("That repository is not one of this plan's copies.")
        return found

    def clean_database(self) -> str:
        name: str = self.cleaned_data["database"].strip()
        if not DATABASE_NAME.match(name):
            raise ValidationError(
                "Use letters, digits and _ only, starting with a letter, such as shop_restored."
            )
        return name

    def clean_path(self) -> str:
        path: str = self.cleaned_data["path"].strip()
        if not path.startswith("/"):
            raise ValidationError("Write the full path, starting with /.")
        if asked.path_taken(asked.Target(path=path)):
            raise ValidationError(
                f"{path} exists already; onwatch never restores over existing files. "
                "Choose a new path."
            )
        return path

    def clean_confirm_name(self) -> str:
        typed: str = self.cleaned_data["confirm_name"].strip()
        if typed != self.plan.name:
            raise ValidationError(f"Type {self.plan.name} exactly, to be sure it is this plan.")
        return typed

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if "database" in self.fields and data.get("database") and data.get("server"):
            self.check_database(asked.Target(database=data["database"], server=data["server"]))
        return data

    def check_database(self, target: asked.Target) -> None:
        same = target.server == asked.SOURCE_SERVER
        if same and target.database == self.source.database:
            self.add_error("database", "That is the source database itself; pick a new name.")
            return
        try:
            exists = asked.target_taken(self.source, target)
        except (psycopg.Error, MariaDBError) as e:
            message = asked.scrub(
                str(e).strip().splitlines()[0] if str(e).strip() else "", self.source
            )
            self.add_error(None, f"Could not reach the server to check the name: {message}")
            return
        if exists:
            self.add_error(
                "database",
                f"A database called {target.database} exists there already; onwatch only "
                "restores into a new one. Pick another name.",
            )

    def target(self) -> asked.Target:
        if "path" in self.cleaned_data:
            return asked.Target(path=self.cleaned_data["path"])
        return asked.Target(
            database=self.cleaned_data["database"], server=self.cleaned_data["server"]
        )

    def chosen_row(self) -> SnapshotRow:
        return next(r for r in self.rows if r.snapshot.id == self.cleaned_data["snapshot"])


def suggestion(plan: Plan) -> dict[str, str]:
    day = f"{timezone.localdate():%Y%m%d}"
    source = plan.source
    if on_server(source):
        base = (source.database or "restored")[:40]
        return {"database": f"{base}_restored_{day}"}
    return {"path": f"{source.path.rstrip('/')}-restored-{day}"}


@require("backups.restore")
def restore_start(request: HttpRequest, pk: int) -> HttpResponse:
    plan = get_object_or_404(Plan.objects.select_related("source"), pk=pk, org=_org(request))
    copies = list(plan.copies.all())
    asked_for = request.POST.get("repository") or request.GET.get("repository", "")
    repository = next((c for c in copies if str(c.pk) == asked_for), None)
    repository = repository or drill_repository(plan)
    rows: list[SnapshotRow] = []
    error = ""
    left_out: list[str] = []
    if repository is not None:
        left_out = [why_left_out(c, d) for c, d in left_out_copies(plan, repository)]
        try:
            rows = snapshot_rows(plan, repository)
        except restic.ResticError as e:
            error = str(e)
    data = request.POST if request.method == "POST" else None
    confirming = data is not None and data.get("step") == "confirm"
    initial = {"repository": repository.pk if repository else None, **suggestion(plan)}
    if rows:
        initial["snapshot"] = rows[0].snapshot.id
    form = RestoreForm(data, plan=plan, rows=rows, confirming=confirming, initial=initial)
    ctx: dict[str, Any] = {
        "plan": plan,
        "copies": copies,
        "repository": repository,
        "rows": rows,
        "left_out": left_out,
        "error": error,
        "form": form,
        "kind_is_database": on_server(plan.source),
    }
    if data is None:
        return render(request, "backups/restore_start.html", ctx)
    if not form.is_valid():
        if confirming and set(form.errors) == {"confirm_name"}:
            return _confirm_page(request, ctx, form, data)  # only the typed name was wrong
        return render(request, "backups/restore_start.html", ctx)
    if not confirming:
        return _confirm_page(request, ctx, form, data)
    target = form.target()
    chosen = form.chosen_row()
    chosen_repository: Repository = form.cleaned_data["repository"]
    restore = request_restore(
        plan, chosen_repository, chosen.snapshot.id, target, Actor.of(request)
    )
    return redirect("backup_restore", pk=restore.pk)


def _confirm_page(
    request: HttpRequest, ctx: dict[str, Any], form: RestoreForm, data: Any
) -> HttpResponse:
    """Step two: the choices again as hidden fields, and the plan's name to type."""
    plan: Plan = ctx["plan"]
    if data.get("step") == "confirm":
        confirm = form  # bound: it says why the typed name was refused
    else:
        confirm = RestoreForm(None, plan=plan, rows=ctx["rows"], confirming=True)
    ctx.update(
        form=confirm,
        hidden=[(n, data[n]) for n in form.fields if n in data and n != "confirm_name"],
        repository=form.cleaned_data["repository"],
        chosen=form.chosen_row(),
        target_shown=asked.shown(plan.source, form.target()),
    )
    return render(request, "backups/restore_confirm.html", ctx)


WAITING = (JobState.QUEUED, JobState.RUNNING)


@require("backups.view")
def restore_detail(request: HttpRequest, pk: int) -> HttpResponse:
    restore = get_object_or_404(
        Restore.objects.select_related("plan__source", "job", "repository"),
        pk=pk,
        plan__org=_org(request),
    )
    job = restore.job
    # Refreshed until the job has finished, log and all. A worker that died leaves the
    # row running; the job then says it was interrupted.
    busy = job is not None and job.state in WAITING
    stopped = restore.state == Outcome.RUNNING and not busy
    ctx = {
        "restore": restore,
        "plan": restore.plan,
        "job": job,
        "busy": busy,
        "stopped": stopped,
        "queued": busy and job is not None and job.state == JobState.QUEUED,
        "refresh": REFRESH_SECONDS,
        "is_database": on_server(restore.plan.source),
        # Its lines, as they are appended: a running job's log so far.
        "log": job.log if job is not None else "",
    }
    return render(request, "backups/restore.html", ctx)
