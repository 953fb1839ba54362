"""The forms for repositories, sources and plans, and what they parse into for
services.py, which saves them.

Secrets (repository URLs that may carry credentials, environment credentials, database
passwords, scratch server URLs) are write-only: no form shows a stored one back, and a
blank field on change keeps what is stored.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from django import forms
from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from onwatch.backups import kinds, restic, services
from onwatch.backups.drills import read_only_problem
from onwatch.backups.models import Plan, Repository, Source
from onwatch.backups.services import Actor, private_path_problem
from onwatch.backups.services.plans import drill_from_problem
from onwatch.backups.services.repositories import pruner_problem
from onwatch.core.crons import validate_schedule
from onwatch.core.models import Organization

# restic's backends onwatch offers; a URL starting with "/" is a path on this machine.
SCHEMES = ("sftp", "rest", "s3", "b2", "azure", "gs", "swift", "rclone")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SMOKE_EXAMPLE = "select count(*) from orders => 250"
KEEP = "Leave empty to keep the one stored."


def secret_input() -> forms.PasswordInput:
    # render_value=False: a stored or typed secret never travels back to the browser.
    return forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"})


class WriteOnlyText(forms.TextInput):
    """A text box (the value is readable while typed) that is always sent out empty: what
    it holds may carry credentials, even when the form comes back with an error."""

    def format_value(self, value: Any) -> str | None:
        return None


class WriteOnlyTextarea(forms.Textarea):
    def format_value(self, value: Any) -> str | None:
        return None


def unique_name(model: Any, org: Organization, name: str, current: Any, what: str) -> str:
    # `what` is the model's verbose name, which services.name_problem uses.
    problem = services.name_problem(model, org, name, current)
    if problem:
        raise ValidationError(problem)
    return name


# --- repositories --------------------------------------------------------------------------


def parse_env(text: str) -> dict[str, str]:
    """NAME=value lines, as restic's backends want them (AWS_ACCESS_KEY_ID=…)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.strip().startswith("#"):
            continue
        name, equals, value = line.partition("=")
        name = name.strip().removeprefix("export ").strip()
        if not equals or not ENV_NAME.match(name):
            # The line is not echoed: it may be a secret typed in the wrong place.
            raise ValidationError(
                "Write each credential on its own line as NAME=value, such as "
                "AWS_ACCESS_KEY_ID=AKIA…; one line is not like that."
            )
        if name.upper().startswith("RESTIC_"):
            raise ValidationError(
                f"{name} is set by onwatch itself (the repository and its password); leave it out."
            )
        found[name] = value.strip()
    problem = restic.env_problem(found)
    if problem:
        raise ValidationError(f"{problem[0].upper()}{problem[1:]}.")
    return found


def validate_repository_url(url: str) -> str:
    url = url.strip()
    if url.startswith("/"):
        return url
    scheme = url.split(":", 1)[0]
    if ":" not in url or scheme not in SCHEMES:
        raise ValidationError(
            "Write a full path on this machine (starting with /) or a restic URL such as "
            "sftp:user@host:/srv/backups, s3:https://s3.amazonaws.com/bucket or "
            "rest:https://host:8000/."
        )
    try:
        restic.sftp_target(url)
    except ValueError as e:
        raise ValidationError(f"{str(e)[0].upper()}{str(e)[1:]}.") from None
    problem = restic.plain_http_problem(url)
    if problem:
        raise ValidationError(f"{problem[0].upper()}{problem[1:]}.")
    return url


class RepositoryForm(forms.Form):
    name = forms.CharField(max_length=100)
    url = forms.CharField(
        max_length=2000,
        label="Where the backups go",
        help_text="A path on this machine such as /mnt/backup/shop, or a restic URL: "
        "sftp:user@host:/srv/backups, s3:https://s3.amazonaws.com/bucket/shop, "
        "b2:bucket:shop, rest:https://host:8000/.",
        widget=WriteOnlyText(attrs={"autocomplete": "off"}),
    )
    provider = forms.CharField(
        max_length=60,
        help_text="Who runs the machine or service that keeps it: Hetzner, AWS, Backblaze, "
        "office NAS… A copy with the same provider as the source is not offsite.",
    )
    location = forms.CharField(
        max_length=100, required=False, help_text="Where it is, such as Frankfurt or fsn1."
    )
    env = forms.CharField(
        required=False,
        label="Credentials",
        help_text="For S3, B2 and other services: one per line as NAME=value, such as "
        "AWS_ACCESS_KEY_ID=… and AWS_SECRET_ACCESS_KEY=…. They are never shown again.",
        widget=WriteOnlyTextarea(attrs={"rows": 3, "autocomplete": "off"}),
    )
    clear_env = forms.BooleanField(
        required=False,
        label="Remove the stored credentials",
        help_text="Ignored if you type new ones.",
    )
    append_only = forms.BooleanField(
        required=False,
        label="Append-only",
        help_text="The server keeps what it is given and refuses to delete (rest-server "
        "--append-only, S3 object lock, a B2 key without delete), so ransomware on this "
        "machine cannot erase the backups. onwatch then never removes old backups there. "
        "A REST server that refuses is found by itself.",
    )
    pruned_by = forms.CharField(
        max_length=200,
        required=False,
        label="Who removes old backups there",
        help_text="For an append-only copy: who runs restic forget and prune on it, and "
        'when, such as "Sam, on the NAS, first Monday of the month".',
    )

    def __init__(
        self,
        data: Any = None,
        *,
        org: Organization,
        repository: Repository | None = None,
        initial: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(data, initial=initial)
        self.org, self.repository = org, repository
        if repository is not None:
            self.fields["url"].required = False
            self.fields["url"].help_text = (
                f"Now {repository.shown_url}. Only to move it: the same repository at a new "
                f"address. {KEEP}"
            )
            if repository.env:
                self.fields["env"].help_text += " " + KEEP
            else:
                del self.fields["clear_env"]
        else:
            del self.fields["clear_env"]

    def clean_name(self) -> str:
        return unique_name(
            Repository, self.org, self.cleaned_data["name"].strip(), self.repository, "repository"
        )

    def clean_url(self) -> str:
        url: str = self.cleaned_data.get("url", "")
        return validate_repository_url(url) if url.strip() else ""

    def clean(self) -> dict[str, Any]:
        data: dict[str, Any] = super().clean() or {}
        if problem := pruner_problem(bool(data.get("append_only")), data.get("pruned_by", "")):
            self.add_error("pruned_by", problem)
        return data

    def clean_env(self) -> dict[str, str] | None:
        """The credentials typed, or None for "keep what is stored"."""
        text: str = self.cleaned_data.get("env", "")
        return parse_env(text) if text.strip() else None


def repository_initial(repository: Repository) -> dict[str, Any]:
    # No url and no env: they may hold credentials.
    return {
        "name": repository.name,
        "provider": repository.provider,
        "location": repository.location,
        "append_only": repository.append_only,
        "pruned_by": repository.pruned_by,
    }


def create_repository(org: Organization, data: dict[str, Any], actor: Actor) -> Repository:
    """restic initialises it (an SFTP one waits until connected). Raises
    restic.ResticError, services.InvalidRepository."""
    return services.add_repository(
        org,
        data["name"],
        data["url"],
        data["provider"],
        data.get("location", ""),
        env=data.get("env") or None,
        append_only=bool(data.get("append_only")),
        pruned_by=data.get("pruned_by", ""),
        actor=actor,
    )


def repository_change(data: dict[str, Any]) -> services.RepositoryChange:
    """A valid change form as services.change_repository takes it."""
    return services.RepositoryChange(
        name=data["name"],
        provider=data["provider"],
        location=data.get("location", ""),
        append_only=bool(data.get("append_only")),
        pruned_by=data.get("pruned_by", ""),
        url=data.get("url", ""),
        env=data.get("env"),
        clear_env=bool(data.get("clear_env")),
    )


# --- sources -------------------------------------------------------------------------------


def parse_smoke_queries(text: str) -> list[dict[str, Any]]:
    """`SQL => expected` lines, or the stored JSON list. The expected answer is JSON rows
    ([[42]]), or one value (42, "ada", plain words) meaning one row of one column."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        return smoke_json(text)
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        query, arrow, expected = line.partition("=>")
        if not arrow or not query.strip() or not expected.strip():
            raise ValidationError(
                f"Line {n}: write each check as SQL => expected answer, such as {SMOKE_EXAMPLE}."
            )
        if problem := read_only_problem(query):
            raise ValidationError(f"Line {n}: {problem.removeprefix('not run: ')}.")
        found.append({"sql": query.strip(), "expect": expected_rows(expected.strip())})
    return found


def expected_rows(text: str) -> list[list[Any]]:
    try:
        value = json.loads(text)
    except ValueError:
        value = text  # plain words: a text answer
    if isinstance(value, list) and all(isinstance(r, list) for r in value):
        return value
    if isinstance(value, list | dict):
        raise ValidationError(
            f"{text} is not an answer onwatch can compare: write one value such as 42, or "
            'rows such as [[1, "ada"], [2, "bob"]].'
        )
    return [[value]]


def smoke_json(text: str) -> list[dict[str, Any]]:
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ValidationError(f"This is not valid JSON ({e}).") from None
    if not isinstance(value, list) or not all(
        isinstance(q, dict) and isinstance(q.get("sql"), str) and "expect" in q for q in value
    ):
        raise ValidationError(
            'Write a JSON list like [{"sql": "select count(*) from orders", "expect": [[250]]}].'
        )
    for q in value:
        if problem := read_only_problem(q["sql"]):
            raise ValidationError(f"{q['sql']!r}: {problem.removeprefix('not run: ')}.")
    return [{"sql": q["sql"], "expect": expected_rows(json.dumps(q["expect"]))} for q in value]


def smoke_text(queries: list[dict[str, Any]]) -> str:
    lines = []
    for q in queries:
        expect = q.get("expect")
        one = isinstance(expect, list) and len(expect) == 1 and len(expect[0]) == 1
        shown = json.dumps(expect[0][0] if one else expect)  # type: ignore[index]
        lines.append(f"{q.get('sql', '')} => {shown}")
    return "\n".join(lines)


def validate_scratch_url(kind: str, url: str) -> str:
    url = url.strip()
    parts = urlsplit(url)
    schemes = kinds.named(kind).SCHEMES
    if not schemes:
        raise ValidationError("Sources of this kind have no server for restore drills.")
    if parts.scheme not in schemes or not parts.hostname:
        raise ValidationError(
            f"Write it as {schemes[0]}://user:password@host:port/ — a server where drills "
            "may create and drop throwaway databases."
        )
    return url


SECRETS = ("password", "scratch_url")


class SourceForm(forms.Form):
    name = forms.CharField(max_length=100)
    host = forms.CharField(
        max_length=200, help_text="The database server's name or address, such as db.example.com."
    )
    port = forms.IntegerField(min_value=1, max_value=65535)
    database = forms.CharField(max_length=200, label="Database name")
    username = forms.CharField(
        max_length=100,
        label="User",
        help_text="A user that may read every table; backups only read.",
    )
    password = forms.CharField(
        max_length=500,
        required=False,
        widget=secret_input(),
        help_text="Never shown again.",
    )
    path = forms.CharField(
        max_length=1000,
        help_text="The full path on this machine, starting with /.",
    )
    provider = forms.CharField(
        max_length=60,
        required=False,
        label="Runs at",
        help_text="Who runs the machine it is on (Hetzner, AWS, office…): a copy kept there "
        "too is not offsite.",
    )
    scratch_url = forms.CharField(
        max_length=1000,
        required=False,
        label="Server for restore drills",
        help_text="Optional: a server where drills may create and drop throwaway databases, "
        "as a URL with user and password. Empty: a new database on the source's own server "
        "(never the source database). Never shown again.",
        widget=WriteOnlyText(attrs={"autocomplete": "off"}),
    )
    smoke_queries = forms.CharField(
        required=False,
        label="Checks on every restored copy",
        help_text="Optional: one per line as SQL => expected answer, such as "
        "select count(*) from customers where active => 42. A drill fails when a restored "
        "copy answers differently.",
        widget=forms.Textarea(attrs={"rows": 4}),
    )

    def __init__(
        self,
        data: Any = None,
        *,
        org: Organization,
        kind: str,
        source: Source | None = None,
        initial: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(data, initial=initial)
        self.org, self.kind, self.source = org, kind, source
        self.kind_fields(kinds.named(kind))
        if source is not None:
            if source.password and "password" in self.fields:
                self.fields["password"].help_text = f"A password is stored. {KEEP}"
            if source.scratch_url and "scratch_url" in self.fields:
                self.fields["scratch_url"].help_text = f"A drill server is set. {KEEP}"

    def kind_fields(self, kind: kinds.Kind) -> None:
        """Only the fields the kind asks for, with its own help texts."""
        for name in list(self.fields):
            if name not in ("name", *kind.FIELDS):
                del self.fields[name]
        if "port" in self.fields:
            self.fields["port"].initial = kind.DEFAULT_PORT
        for name, text in kind.FIELD_HELP.items():
            self.fields[name].help_text = text

    def clean_name(self) -> str:
        return unique_name(
            Source, self.org, self.cleaned_data["name"].strip(), self.source, "source"
        )

    def clean_path(self) -> str:
        path: str = self.cleaned_data["path"].strip()
        if not path.startswith("/"):
            raise ValidationError("Write the full path, starting with /.")
        if problem := private_path_problem(path):
            raise ValidationError(problem)
        return path

    def clean(self) -> dict[str, Any] | None:
        data = super().clean()
        source = self.source
        if source is not None and source.password and data and not data.get("password"):
            moved = [
                n
                for n in ("host", "port", "username")
                if n in data and data[n] != getattr(source, n)
            ]
            if moved:
                # The stored password goes only where it was typed for.
                self.add_error(
                    "password",
                    "The server or user changed: type the password again (the stored one "
                    "is not sent to a new server).",
                )
        return data

    def clean_scratch_url(self) -> str:
        url: str = self.cleaned_data.get("scratch_url", "")
        return validate_scratch_url(self.kind, url) if url.strip() else ""

    def clean_smoke_queries(self) -> list[dict[str, Any]]:
        return parse_smoke_queries(self.cleaned_data.get("smoke_queries", ""))

    def fields_of(self) -> dict[str, Any]:
        """The model fields to store: secrets left blank keep what is stored."""
        data = self.cleaned_data
        found = {n: data[n] for n in ("name", *kinds.named(self.kind).FIELDS)}
        for secret in SECRETS:
            if secret in found and not found[secret] and self.source is not None:
                del found[secret]
        return found


def source_initial(source: Source) -> dict[str, Any]:
    # No password and no scratch_url: never shown back.
    plain = ("name", "host", "port", "database", "username", "path", "provider")
    return {
        **{n: getattr(source, n) for n in plain},
        "smoke_queries": smoke_text(source.smoke_queries),
    }


def source_draft(
    org: Organization, kind: str, source: Source | None, fields: dict[str, Any]
) -> Source:
    """The source as it would be saved, not saved yet: what the checks look at."""
    if source is None:
        return Source(org=org, kind=kind, **fields)
    draft = Source.objects.get(pk=source.pk)
    for name, value in fields.items():
        setattr(draft, name, value)
    return draft


# --- plans ---------------------------------------------------------------------------------


class PlanForm(forms.Form):
    name = forms.CharField(max_length=100)
    source = forms.ModelChoiceField(
        queryset=Source.objects.none(), empty_label=None, help_text="What to back up."
    )
    copies = forms.ModelMultipleChoiceField(
        queryset=Repository.objects.none(),
        widget=forms.CheckboxSelectMultiple,
        label="Keep copies in",
        help_text="Every backup goes to each of these. At least one should be offsite: "
        "another provider and another machine than the source's.",
    )
    cron = forms.CharField(
        max_length=100,
        initial="0 3 * * *",
        label="Back up at",
        help_text="A cron line: 0 3 * * * is every day at 03:00; 0 */6 * * * every six hours.",
    )
    tz = forms.CharField(
        max_length=60,
        initial="UTC",
        label="Time zone",
        help_text="The zone the times are in, such as Europe/Berlin or UTC.",
    )
    drill_cron = forms.CharField(
        max_length=100,
        initial=services.WEEKLY_DRILL,
        label="Test a restore at",
        help_text="A cron line for the restore drill: 0 4 * * 0 is Sundays at 04:00.",
    )
    drill_from = forms.ModelChoiceField(
        queryset=Repository.objects.none(),
        required=False,
        empty_label="the first offsite copy",
        label="Drills restore from",
    )
    keep_daily = forms.IntegerField(min_value=0, max_value=3650, initial=7, label="Keep daily")
    keep_weekly = forms.IntegerField(min_value=0, max_value=520, initial=4, label="Keep weekly")
    keep_monthly = forms.IntegerField(
        min_value=0,
        max_value=1200,
        initial=6,
        label="Keep monthly",
        help_text="How many daily, weekly and monthly backups to keep; the newest is always kept.",
    )
    rpo_minutes = forms.IntegerField(
        min_value=1,
        max_value=525600,
        initial=26 * 60,
        label="Most data you can afford to lose (minutes)",
        help_text="The RPO target: onwatch alerts when the newest offsite copy is older. "
        "1560 is 26 hours, right for a daily backup.",
    )
    rto_minutes = forms.IntegerField(
        min_value=1,
        max_value=525600,
        initial=60,
        label="Longest a restore may take (minutes)",
        help_text="The RTO target: a drill that takes longer fails.",
    )

    def __init__(
        self,
        data: Any = None,
        *,
        org: Organization,
        plan: Plan | None = None,
        initial: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(data, initial=initial)
        self.org, self.plan = org, plan
        repositories: QuerySet[Repository] = Repository.objects.filter(org=org)
        self.fields["source"].queryset = Source.objects.filter(org=org)  # type: ignore[attr-defined]
        self.fields["copies"].queryset = repositories  # type: ignore[attr-defined]
        self.fields["drill_from"].queryset = repositories  # type: ignore[attr-defined]

    def clean_name(self) -> str:
        return unique_name(Plan, self.org, self.cleaned_data["name"].strip(), self.plan, "plan")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        tz = data.get("tz")
        for field in ("cron", "drill_cron"):
            if data.get(field) and tz:
                try:
                    validate_schedule(data[field].strip(), tz.strip())
                except ValidationError as e:
                    self.add_error("tz" if e.code == "tz" else field, e)
                    if e.code == "tz":
                        break
        drill_from, copies = data.get("drill_from"), data.get("copies")
        if copies is not None and (problem := drill_from_problem(drill_from, list(copies))):
            self.add_error("drill_from", problem)
        return data


PLAN_NUMBERS = ("keep_daily", "keep_weekly", "keep_monthly", "rpo_minutes", "rto_minutes")


def plan_initial(plan: Plan) -> dict[str, Any]:
    schedule, drill = plan.schedule, plan.drill_schedule
    return {
        "name": plan.name,
        "source": plan.source_id,
        "copies": [c.pk for c in plan.copies.all()],
        "drill_from": plan.drill_from_id,
        "cron": schedule.cron if schedule else "",
        "tz": schedule.tz if schedule else "UTC",
        "drill_cron": drill.cron if drill else "",
        **{n: getattr(plan, n) for n in PLAN_NUMBERS},
    }


def plan_fields(data: dict[str, Any]) -> services.PlanFields:
    """A valid plan form as services.add_plan and change_plan take it."""
    return services.PlanFields(
        name=data["name"],
        source=data["source"],
        copies=list(data["copies"]),
        cron=data["cron"].strip(),
        tz=data["tz"].strip(),
        drill_cron=data["drill_cron"].strip(),
        drill_from=data.get("drill_from"),
        **{n: data[n] for n in PLAN_NUMBERS},
    )
