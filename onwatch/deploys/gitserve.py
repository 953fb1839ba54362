"""`git push onwatch main` over SSH: sshd signs the person in with their key (core/pushkeys.py
wrote it with `command="onwatch git-serve <key id>"`) and runs this with the git command the
client asked for in SSH_ORIGINAL_COMMAND. The push lands in the service's own bare
repository; then a pipeline of each pushed branch runs, its output is printed into the
push as it comes, and the push ends non-zero when a pipeline did not succeed (git push
exits 1 when the remote command does, after showing the refs it updated).

Everything said here goes to stderr: stdout is git's protocol.
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from onwatch.core.audit import Actor
from onwatch.core.models import Job, JobLogLine, JobState, Membership, SshKey
from onwatch.core.roles import has_permission
from onwatch.core.services import note_key_used
from onwatch.deploys import git, services
from onwatch.deploys.models import ENDED, Pipeline, Service, State, Trigger

# What each git command needs: those who may push may fetch back what was pushed; viewers
# see pipelines, never the code itself.
PROGRAMS = {"git-receive-pack": "pipelines.run", "git-upload-pack": "pipelines.run"}
ZERO = "0" * 40
POLL_SECONDS = 0.3
# A pipeline no worker starts in this long, while none runs, has no worker to run it.
NO_WORKER_SECONDS = 10.0


class Refused(Exception):
    """The push cannot go ahead; the message is the one line the person sees."""


@dataclass(frozen=True)
class Request:
    program: str
    service: Service
    actor: Actor


def parse_command(original: str) -> tuple[str, str]:
    """The git program and the service's name the client asked for."""
    if not original.strip():
        raise Refused(
            "this key only pushes with git: git remote add onwatch <user>@<server>:SERVICE, "
            "then git push onwatch main"
        )
    try:
        parts = shlex.split(original)
    except ValueError:
        parts = []
    if len(parts) != 2 or parts[0] not in PROGRAMS:
        shown = " ".join(original.split())[:80]
        raise Refused(f"onwatch only takes git push and git fetch over SSH, not {shown!r}")
    name = parts[1].strip("/").removesuffix(".git")
    if not name or "\x00" in name:
        raise Refused(
            "name the service after the colon: git remote add onwatch <user>@<server>:SERVICE"
        )
    return parts[0], name


def find_service(key: SshKey, program: str, name: str) -> Service:
    """The service `name` in the key's person's organizations, if their role there allows
    `program`."""
    memberships = list(Membership.objects.filter(user=key.user).select_related("org"))
    found = [
        (m, s)
        for m in memberships
        for s in Service.objects.filter(org=m.org, name=name).select_related("org")
    ]
    if not found:
        return refuse_unknown(memberships, name)
    if len(found) > 1:
        orgs = ", ".join(m.org.name for m, _ in found)
        raise Refused(f"several of your organizations ({orgs}) have a service {name!r}; rename one")
    member, service = found[0]
    needed = PROGRAMS[program]
    if not has_permission(member.role, needed):
        what = "push to" if program == "git-receive-pack" else "fetch"
        raise Refused(
            f"you may not {what} {name}: your role in {member.org.name} is {member.role}; "
            "ask an admin for the deployer role"
        )
    return service


def refuse_unknown(memberships: list[Membership], name: str) -> Service:
    names = Service.objects.filter(org__in=[m.org for m in memberships]).values_list(
        "name", flat=True
    )
    listed = ", ".join(sorted(names)) or "none yet"
    raise Refused(f"there is no service {name!r} (yours: {listed})")


def request(key_id: int, original: str, address: str) -> Request:
    key = SshKey.objects.select_related("user").filter(pk=key_id).first()
    if key is None or not key.user.is_active:
        raise Refused(
            "this SSH key is no longer known to onwatch; add it again on your SSH keys page"
        )
    program, name = parse_command(original)
    service = find_service(key, program, name)
    note_key_used(key)
    return Request(program, service, Actor(key.user.get_username(), address, key.user))


def serve(key_id: int, original: str, address: str = "", out: TextIO = sys.stderr) -> int:
    """The whole push (or fetch); the exit code the client's git sees."""
    asked = request(key_id, original, address)
    repo = services.pushed_repository(asked.service)
    git.init_bare(repo)
    env = git.environment(repo.parent)
    if asked.program == "git-upload-pack":
        return git.serve_pack("upload-pack", repo, env)
    fd, refs_file = tempfile.mkstemp(dir=repo.parent, prefix=".pushed-")
    os.close(fd)
    try:
        code = git.serve_pack("receive-pack", repo, {**env, "ONWATCH_PUSHED_REFS": refs_file})
        pushed = Path(refs_file).read_text()
    finally:
        Path(refs_file).unlink(missing_ok=True)
    if code != 0:
        return code
    return run_pushed(asked, pushed, out)


def run_pushed(asked: Request, pushed: str, out: TextIO) -> int:
    """A pipeline of each pushed branch, followed to its end; 0 when all succeeded."""
    code = 0
    for line in pushed.splitlines():
        _old, new, ref = [*line.split(), "", "", ""][:3]
        if not ref.startswith("refs/heads/"):
            continue
        branch = ref.removeprefix("refs/heads/")
        if new == ZERO:
            say(out, f"branch {branch} was deleted; nothing to test")
            continue
        push = services.Push(commit=new, branch=branch)
        pipeline = services.run_pipeline(asked.service, asked.actor, Trigger.PUSH, push)
        said = f"pipeline #{pipeline.pk} of {asked.service.name} ({branch}) for {new[:7]}"
        say(out, f"{said}: {link(pipeline)}")
        code = max(code, follow(pipeline, out))
    return code


def link(pipeline: Pipeline) -> str:
    return settings.SITE_ROOT + reverse("pipeline_detail", args=[pipeline.pk])


def say(out: TextIO, text: str) -> None:
    print(f"onwatch: {text}", file=out, flush=True)


def follow(pipeline: Pipeline, out: TextIO) -> int:
    """Print the pipeline's log as the worker writes it; 0 when it succeeded."""
    after, since = 0, time.monotonic()
    while True:
        pipeline.refresh_from_db()
        rows = list(
            JobLogLine.objects.filter(job=pipeline.job, id__gt=after)
            .order_by("id")
            .values_list("id", "text")[:1000]
        )
        for _, text in rows:
            print(text, file=out, flush=True)
        after = rows[-1][0] if rows else after
        if pipeline.state in ENDED and not rows:
            break
        if no_worker(pipeline, since):
            say(
                out,
                f"no worker started pipeline #{pipeline.pk} (is `onwatch up` or `onwatch worker` "
                "running?); your commit is in, and the pipeline runs once a worker starts",
            )
            return 1
        if not rows:
            time.sleep(POLL_SECONDS)
    reason = f": {pipeline.reason}" if pipeline.reason else ""
    say(out, f"pipeline #{pipeline.pk} {pipeline.state}{reason}")
    return 0 if pipeline.state == State.SUCCEEDED else 1


def no_worker(pipeline: Pipeline, since: float) -> bool:
    """Still queued after a while, and no pipeline runs anywhere: no worker takes them. One
    that waits behind another service's running pipeline has a worker, and waits; a
    running one whose lease ran out lost its worker, so it counts for none."""
    if pipeline.state != State.QUEUED or time.monotonic() - since < NO_WORKER_SECONDS:
        return False
    running = Job.objects.filter(queue="pipelines", state=JobState.RUNNING)
    busy = running.filter(lease_until__gt=timezone.now()).exists()
    return not busy
