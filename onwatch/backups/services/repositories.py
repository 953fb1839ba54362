"""Repositories: added, changed, connected, removed, found append-only."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

from django.db import transaction
from django.urls import reverse

from onwatch.backups import restic
from onwatch.backups.models import Repository
from onwatch.backups.services import (
    InvalidRepository,
    Refused,
    host_of_url,
    name_problem,
    repo_of,
)
from onwatch.backups.services.actors import SYSTEM, Actor
from onwatch.core import audit, ssh
from onwatch.core.models import Organization


class InUse(Refused):
    """The object is still part of a plan."""


def pruner_problem(append_only: bool, pruned_by: str) -> str | None:
    """An append-only copy needs someone named to remove its old backups: onwatch will
    not, and without anyone it grows for ever."""
    if append_only and not pruned_by.strip():
        return (
            "Say who removes old backups from this append-only copy: onwatch will not, "
            "and without anyone it grows for ever."
        )
    return None


def add_repository(
    org: Organization,
    name: str,
    url: str,
    provider: str,
    location: str = "",
    password: str | None = None,
    initialise: bool = True,
    env: dict[str, str] | None = None,
    append_only: bool = False,
    pruned_by: str = "",
    *,
    actor: Actor = SYSTEM,
) -> Repository:
    """A new repository with a password onwatch generates (unless one is given for an
    existing repository), initialised by restic (or, already there, opened with that
    password). An SFTP one gets a key pair of its own instead and waits, not ready, until
    its public key is on the server and connect_repository() has reached it.
    A REST server that refuses deletions is found append-only here, before any backup.
    Raises InvalidRepository for a name, URL or env that cannot be used,
    restic.ResticError when restic cannot initialise it."""
    name, url = name.strip(), url.strip()
    problem = (
        name_problem(Repository, org, name)
        or pruner_problem(append_only, pruned_by)
        or restic.env_problem(env or {})
        or restic.plain_http_problem(url)
    )
    if problem:
        raise InvalidRepository(problem)
    try:
        sftp = restic.sftp_target(url)
    except ValueError as e:
        raise InvalidRepository(str(e)) from None
    repository = Repository(
        org=org,
        name=name,
        url=url,
        shown_url=restic.redact(url),
        host=host_of_url(url),
        password=password or secrets.token_urlsafe(32),
        provider=provider,
        location=location,
        env=json.dumps(env) if env else "",
        append_only=append_only,
        pruned_by=pruned_by.strip(),
    )
    if sftp is not None:
        keys = ssh.new_key_pair(f"onwatch repository {name}")
        repository.ssh_key, repository.ssh_public_key = keys.private, keys.public
        repository.ready = False
    elif initialise:
        restic.init_or_open(repo_of(repository))
    found = not append_only and sftp is None and bool(restic.deletes_refused(repo_of(repository)))
    repository.append_only = repository.append_only or found
    # What changed by name, never the values: the URL and credentials are secrets.
    with transaction.atomic():
        repository.save()
        actor.record(
            "backup-repository-added",
            org,
            repository.name,
            id=repository.pk,
            provider=repository.provider,
            changed=["all"],
        )
    if found and not repository.pruned_by:
        alert_nobody_prunes(repository, "the server refused a test deletion when it was added")
    return repository


@dataclass(frozen=True)
class RepositoryChange:
    """A change to a repository. `url` "" keeps the address; `env` None keeps the stored
    credentials ({} or `clear_env` removes them)."""

    name: str
    provider: str
    location: str = ""
    append_only: bool = False
    pruned_by: str = ""
    url: str = ""
    env: dict[str, str] | None = None
    clear_env: bool = False


def change_repository(repository: Repository, change: RepositoryChange, actor: Actor) -> list[str]:
    """Apply the change; the names of what changed (never the values). A new address or
    new credentials must reach the repository before they are kept: a typo would otherwise
    stop every backup. Raises InvalidRepository, restic.ResticError."""
    name = change.name.strip()
    problem = (
        name_problem(Repository, repository.org, name, repository)
        or pruner_problem(change.append_only, change.pruned_by)
        or (restic.env_problem(change.env) if change.env else None)
    )
    if problem:
        raise InvalidRepository(problem)
    wanted = {
        "name": name,
        "provider": change.provider,
        "location": change.location,
        "append_only": change.append_only,
        "pruned_by": change.pruned_by.strip(),
    }
    changed = [n for n, v in wanted.items() if getattr(repository, n) != v]
    for field in changed:
        setattr(repository, field, wanted[field])
    changed += new_address(repository, change)
    if ("url" in changed or "env" in changed) and repository.ready:
        restic.snapshots(repo_of(repository))
    with transaction.atomic():
        repository.save()
        actor.record(
            "backup-repository-changed",
            repository.org,
            repository.name,
            id=repository.pk,
            provider=repository.provider,
            changed=changed,
        )
    return changed


def new_address(repository: Repository, change: RepositoryChange) -> list[str]:
    """Set a new URL and credentials, unsaved; which of the two changed."""
    changed = []
    url = change.url.strip()
    if url and url != repository.url:
        move_to(repository, url)
        changed.append("url")
    if change.env:
        env = json.dumps(change.env)
    elif change.env == {} or change.clear_env:
        env = ""
    else:
        env = repository.env
    if env != repository.env:
        repository.env = env
        changed.append("env")
    return changed


def move_to(repository: Repository, url: str) -> None:
    """The same repository at a new address. An SFTP one at another server must have its
    host key pinned again: it waits, not ready, until connected."""
    problem = restic.plain_http_problem(url)
    if problem:
        raise InvalidRepository(problem)
    try:
        before, after = restic.sftp_target(repository.url), restic.sftp_target(url)
    except ValueError as e:
        raise InvalidRepository(str(e)) from None
    if (before is None) != (after is None):
        raise restic.ResticError(
            "a repository cannot move between SFTP and another kind of storage; add a new "
            "repository instead"
        )
    if (
        before is not None
        and after is not None
        and (before.host, before.port)
        != (
            after.host,
            after.port,
        )
    ):
        repository.known_hosts, repository.ready = "", False
    repository.url = url
    repository.shown_url = restic.redact(url)
    repository.host = host_of_url(url)


def remove_repository(repository: Repository, actor: Actor) -> None:
    """Out of onwatch; the backups in it stay where they are. Raises InUse while a plan
    keeps copies there."""
    users = [p.name for p in repository.plans.all()]
    if users:
        raise InUse(
            f"{repository.name} keeps copies for {', '.join(users)}; take it out of "
            "those plans first."
        )
    pk, name = repository.pk, repository.name
    with transaction.atomic():
        repository.delete()
        actor.record("backup-repository-removed", repository.org, name, id=pk)


def connect_repository(repository: Repository, actor: Actor = SYSTEM) -> None:
    """Reach the repository and mark it ready. For SFTP, the server's host key is pinned
    on the first connection (and checked on every one after, this one too when already
    pinned). restic then creates the repository, or opens the one already there with the
    stored password. Raises restic.ResticError (SshKeyRefused, HostKeyChanged,
    WrongPassword, RepositoryUnreachable, …) whose message says what to do."""
    from onwatch.backups.remote import host_keys_to_pin

    pinned = host_keys_to_pin(repository)
    if pinned:
        # Trust on first use: pinned before anything else, so later attempts (the key may
        # not be authorized yet) are checked against this key rather than scanned again.
        repository.known_hosts = pinned
        repository.save(update_fields=["known_hosts"])
    restic.init_or_open(repo_of(repository))
    repository.ready = True
    with transaction.atomic():
        repository.save(update_fields=["ready"])
        actor.record(
            "backup-repository-connected", repository.org, repository.name, id=repository.pk
        )


def forget_host_key(repository: Repository, actor: Actor) -> None:
    """For a server rebuilt on purpose: the next connect_repository() pins its new key.
    Runs skip the repository until then."""
    repository.known_hosts = ""
    repository.ready = False
    with transaction.atomic():
        repository.save(update_fields=["known_hosts", "ready"])
        actor.record(
            "backup-repository-host-key-forgotten",
            repository.org,
            repository.name,
            id=repository.pk,
        )


def mark_append_only(repository: Repository, why: str) -> None:
    """Found append-only while onwatch worked with it: say so on its page and in the audit
    log, leave old backups to its server from now on, and (once: the worker that flips the
    flag is the one that tells) alert when nobody is named to remove them."""
    first = Repository.objects.filter(pk=repository.pk, append_only=False).update(append_only=True)
    repository.append_only = True
    if not first:
        return  # another worker found it a moment ago, and told
    audit.record(
        "backup-repository-append-only",
        actor="onwatch",
        org=repository.org,
        target=repository.name,
        id=repository.pk,
        why=why,
    )
    if not repository.pruned_by:
        alert_nobody_prunes(repository, why)


def alert_nobody_prunes(repository: Repository, why: str) -> None:
    """An append-only copy found by onwatch has nobody named to remove its old backups:
    it grows for ever unless someone is told to."""
    from onwatch.alerts.services import raise_alert

    raise_alert(
        org=repository.org,
        title=f"{repository.name} keeps every backup: name who removes old ones",
        body=(
            f"onwatch found that the server of the repository {repository.name} refuses "
            f"deletions ({why}). That protects the backups, but onwatch can no longer "
            "remove old ones there, so the repository grows until its disk or bill is full.\n"
            "What to do: on the repository's page press Change and name who removes old "
            "backups there (the person or job that runs its server), and have them do it "
            "on a schedule."
        ),
        link=reverse("backup_repository", args=[repository.pk]),
        notify_type="warning",
    )
