"""`git push onwatch main` over SSH, end to end: the real OpenSSH server signs people in
with the keys onwatch wrote into its authorized_keys file, the real `git push` sends the
commit, a real worker runs the pipeline, and its output comes back into the push."""

from __future__ import annotations

import io
import json
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from onwatch.core.audit import SYSTEM, Actor
from onwatch.core.models import Job, JobState, Organization
from onwatch.core.services import add_ssh_key
from onwatch.deploys import gitserve, services
from onwatch.deploys.models import Pipeline, State
from tests.support.child import call
from tests.support.child import deploys as child_deploys
from tests.support.deploys import GIT_ENV, commit, git, project, service_for
from tests.support.fixtures import make_member
from tests.support.procs import Running, isolated, run
from tests.support.remote_servers import SshServer

FOREIGN = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVYpRBhC7Eoc5m+Xz2Pmg1VtLb5R4hJvPgCuj7sOv5N admin"


def new_key(path: Path) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
    )
    return Path(f"{path}.pub").read_text()


class Pusher:
    """A developer's clone that pushes to onwatch with their own key."""

    def __init__(self, sshd: SshServer, key: Path, work: Path) -> None:
        self.work = work
        self.env = {
            **GIT_ENV,
            "GIT_SSH_COMMAND": (
                f"ssh -F /dev/null -i {key} -p {sshd.port} -o IdentitiesOnly=yes -o BatchMode=yes"
                " -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
            ),
        }
        self.address = f"{sshd.user}@127.0.0.1"

    def push(self, service: str, *refs: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "-C", str(self.work), "push", f"{self.address}:{service}", *refs],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=180,
        )

    def ssh(self, command: str) -> subprocess.CompletedProcess[str]:
        argv = [*self.env["GIT_SSH_COMMAND"].split(), self.address, command]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def pipelines_of(env: dict[str, str], service: str) -> list[list[str]]:
    rows: list[list[str]] = json.loads(call(child_deploys.print_pipelines, env, service))
    return rows


def test_a_push_runs_the_pipeline_streams_its_output_and_exits_as_it_ended(
    tmp_path: Path,
) -> None:
    sshd = SshServer(tmp_path / "sshd")
    sshd.authorized_keys.write_text(f"# the administrator's own\n{FOREIGN}\n")
    ana_pub = new_key(tmp_path / "ana")
    bob_pub = new_key(tmp_path / "bob")
    work = tmp_path / "work"
    red = commit(work, project(passing=False), "Break the sum")
    ana = Pusher(sshd, tmp_path / "ana", work)
    bob = Pusher(sshd, tmp_path / "bob", work)
    commit(tmp_path / "docs", {"README.md": "Only words\n"}, "Docs", branch="docs")
    docs = Pusher(sshd, tmp_path / "ana", tmp_path / "docs")
    with isolated(
        tmp_path, migrated=True, ONWATCH_AUTHORIZED_KEYS=str(sshd.authorized_keys)
    ) as env:
        call(child_deploys.make_org, env, "Acme", migrate=True)
        call(child_deploys.add_service, env, "Acme", "shop", str(tmp_path / "elsewhere"))
        call(child_deploys.add_pusher, env, "Acme", "ana@acme.example", "deployer", ana_pub)
        call(child_deploys.add_pusher, env, "Acme", "bob@acme.example", "viewer", bob_pub)
        sshd.start()
        try:
            with Running(["worker"], env) as worker:
                worker.wait_for("ready")
                failed = ana.push("shop", "main")
                green = commit(work, project(passing=True), "Fix the sum")
                passed = ana.push("shop", "main")
                refused = bob.push("shop", "main")
                unknown = ana.push("nope", "main")
                shell = ana.ssh("cat /etc/passwd")
                git(work, "branch", "feature")
                ana.push("shop", "feature")
                deleted = ana.push("shop", ":feature")
                nothing_to_run = docs.push("shop", "docs")
                # The pushed copy as the service's repository: "run now" tests it too.
                call(child_deploys.use_pushed_copy, env, "shop")
                run_now = run(["pipelines", "run", "shop", "--wait"], env, timeout=120)
            git(work, "commit", "--quiet", "--allow-empty", "-m", "While no worker runs")
            no_worker = ana.push("shop", "main")
        finally:
            sshd.stop()
        pipelines = pipelines_of(env, "shop")
    keys_file = sshd.authorized_keys.read_text()
    # The red push: the commit is in, the failing step's output came back, exit non-zero.
    assert failed.returncode != 0, failed.stdout
    assert "AssertionError: 2 != 3" in failed.stdout
    assert "failed: exited with 1" in failed.stdout
    assert "main -> main" in failed.stdout
    # The green one: the step's output, and exit 0.
    assert passed.returncode == 0, passed.stdout
    assert "test_sum (test_app.AppTest" in passed.stdout and "OK" in passed.stdout
    assert passed.stdout.count("succeeded") == 1
    # A viewer's key signs in but may not push: one line, nothing queued for them.
    assert refused.returncode != 0
    assert (
        "onwatch: you may not push to shop: your role in Acme is viewer; ask an admin for the "
        "deployer role" in refused.stdout
    )
    assert "there is no service 'nope' (yours: shop)" in unknown.stdout and unknown.returncode
    assert shell.returncode == 2 and "root:" not in shell.stdout
    assert (
        shell.stderr
        == "onwatch: onwatch only takes git push and git fetch over SSH, not 'cat /etc/passwd'\n"
    )
    assert (
        deleted.returncode == 0 and "branch feature was deleted; nothing to test" in deleted.stdout
    )
    assert nothing_to_run.returncode == 1
    assert "no onwatch.toml and nothing onwatch recognises" in nothing_to_run.stdout
    assert run_now.returncode == 0, run_now.stdout + run_now.stderr
    assert "fetching branch main of /" in run_now.stdout and "Fix the sum" in run_now.stdout
    assert no_worker.returncode == 1
    assert "no worker started pipeline" in no_worker.stdout
    # Who pushed what: a pipeline per pushed branch, none for the viewer or the deletion.
    ana_push = ["push", "ana@acme.example"]
    assert [p[:3] + p[4:] for p in pipelines[:5]] == [
        [*ana_push, "main", "failed"],
        [*ana_push, "main", "succeeded"],
        [*ana_push, "feature", "succeeded"],
        [*ana_push, "docs", "failed"],
        ["cli", "cli", "main", "succeeded"],
    ]
    assert [p[3] for p in pipelines[:2]] == [red, green]
    assert len(pipelines) == 6 and pipelines[5][4] == "queued"
    # Each push kept in onwatch's copy as one pack (git.serve_pack), which a pipeline's
    # clone links as two files, not as a file per object.
    [copy] = (tmp_path / "data" / "git").glob("*.git")
    assert git(copy, "count-objects", "-v").startswith("count: 0\n")
    # The administrator's own lines stay; each person's key may run git-serve only.
    assert keys_file.startswith(f"# the administrator's own\n{FOREIGN}\n# onwatch: keys")
    assert keys_file.count("restrict,command=") == 2
    assert ana_pub.split()[1] in keys_file and bob_pub.split()[1] in keys_file


@pytest.mark.once
@pytest.mark.parametrize(
    ("command", "said"),
    [
        ("", "this key only pushes with git: git remote add onwatch <user>@<server>:SERVICE"),
        ("ls -la", "onwatch only takes git push and git fetch over SSH, not 'ls -la'"),
        ("git-receive-pack 'shop' x", "onwatch only takes git push and git fetch over SSH"),
        ("git-receive-pack 'shop", "onwatch only takes git push and git fetch over SSH"),
        ("git-receive-pack '/.git'", "name the service after the colon"),
    ],
)
def test_anything_but_a_git_push_or_fetch_is_refused_in_one_line(command: str, said: str) -> None:
    with pytest.raises(gitserve.Refused) as e:
        gitserve.parse_command(command)
    assert str(e.value).startswith(said) and "\n" not in str(e.value)


@pytest.mark.once
def test_the_service_is_named_as_git_sends_it() -> None:
    assert gitserve.parse_command("git-receive-pack 'shop'") == ("git-receive-pack", "shop")
    assert gitserve.parse_command("git-upload-pack '/shop.git'") == ("git-upload-pack", "shop")


@pytest.mark.django_db
def test_who_may_push_or_fetch_where(org: Organization, tmp_path: Path) -> None:
    other = Organization.objects.create(name="Other")
    service_for(org, str(tmp_path / "repo"))
    keys = {}
    for who, (where, role) in {
        "dev": (org, "deployer"),
        "viewer": (org, "viewer"),
        "stranger": (other, "owner"),
    }.items():
        user = make_member(where, role, mfa=False)
        keys[who] = add_ssh_key(user, new_key(tmp_path / who))
    asked = gitserve.request(keys["dev"].pk, "git-receive-pack 'shop'", "192.0.2.7")
    assert (asked.service.name, asked.actor.name, asked.actor.ip) == (
        "shop",
        "deployer@acme.example",
        "192.0.2.7",
    )
    for program in ("git-receive-pack", "git-upload-pack"):
        with pytest.raises(gitserve.Refused, match="your role in Acme is viewer"):
            gitserve.request(keys["viewer"].pk, f"{program} 'shop'", "")
    with pytest.raises(gitserve.Refused, match=r"there is no service 'shop' \(yours: none yet\)"):
        gitserve.request(keys["stranger"].pk, "git-receive-pack 'shop'", "")
    with pytest.raises(gitserve.Refused, match="this SSH key is no longer known to onwatch"):
        gitserve.request(keys["dev"].pk + 100, "git-receive-pack 'shop'", "")


@pytest.mark.django_db
def test_a_newer_push_supersedes_the_older_run_and_a_deleted_branch_starts_nothing(
    org: Organization, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No worker runs here: each push says so at once instead of after the usual wait.
    monkeypatch.setattr(gitserve, "NO_WORKER_SECONDS", 0.0)
    service = service_for(org, str(tmp_path / "repo"))
    user = make_member(org, "deployer", mfa=False)
    asked = gitserve.Request("git-receive-pack", service, Actor("ana", "", user))
    out = io.StringIO()
    first = gitserve.run_pushed(asked, f"{'0' * 40} {'a' * 40} refs/heads/main\n", out)
    second = gitserve.run_pushed(
        asked,
        f"{'a' * 40} {'b' * 40} refs/heads/main\n"
        f"{'c' * 40} {'0' * 40} refs/heads/old\n"
        f"{'0' * 40} {'d' * 40} refs/tags/v1\n",
        out,
    )
    assert (first, second) == (1, 1)
    older, newer = Pipeline.objects.order_by("pk")
    superseded = f"superseded by pipeline #{newer.pk} for bbbbbbb"
    assert (older.state, older.reason) == (State.CANCELLED, superseded)
    assert (newer.trigger, newer.triggered_by, newer.branch, newer.commit) == (
        "push",
        "ana",
        "main",
        "b" * 40,
    )
    said = out.getvalue()
    assert "onwatch: branch old was deleted; nothing to test" in said
    assert said.count("no worker started pipeline") == 2


@pytest.mark.django_db
def test_a_queued_push_waits_while_a_worker_runs_a_pipeline_but_not_for_a_dead_one(
    org: Organization, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gitserve, "NO_WORKER_SECONDS", 0.0)
    service = service_for(org, str(tmp_path / "repo"))
    queued = services.run_pipeline(service, SYSTEM, "push", services.Push(branch="main"))
    other = Job.objects.create(kind=services.KIND, queue="pipelines", state=JobState.RUNNING)
    for lease, waits in ((timedelta(seconds=20), True), (timedelta(seconds=-1), False)):
        Job.objects.filter(pk=other.pk).update(lease_until=timezone.now() + lease)
        assert gitserve.no_worker(queued, 0.0) is not waits
