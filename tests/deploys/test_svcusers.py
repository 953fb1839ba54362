"""Each service under a user of its own (deploys/svcusers.py), with real deploys: its
pipeline steps, release command and web process run as that user, cannot read another
service's release folder nor its web process's environment (its secrets), and cannot open
Caddy's admin API, which only onwatch's user can."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

import pytest
from django.conf import settings

from onwatch.alerts.models import Delivery
from onwatch.core import jobs
from onwatch.core.audit import SYSTEM
from onwatch.core.models import JobLogLine, Organization
from onwatch.deploys import procman, releases, services, svcusers, workdir
from onwatch.deploys.models import Deploy, Service, State
from onwatch.deploys.switch import Machine
from tests.support.deploys import beside_a_writer, commit
from tests.support.load import Load, fetch
from tests.support.releases import KINDS, app_files
from tests.support.switching import caddy_tcp_ports, listen_port

pytestmark = [
    pytest.mark.once,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("channel"),
    pytest.mark.skipif(os.geteuid() != 0, reason="only root gives services users of their own"),
]


def add(org: Organization, name: str, repo: Path, files: dict[str, str]) -> Service:
    commit(repo, files, "First version")
    fields = services.ServiceFields(name=name, git_url=str(repo), branch="main")
    service = services.add_service(org, fields, SYSTEM, {"TOKEN": f"{name}-secret-token-42"})
    services.set_domain(service, f"{name}.test", True, SYSTEM)
    return service


def deploy(service: Service) -> Deploy:
    services.run_pipeline(service, SYSTEM, "cli")
    jobs.run_pending(kinds=KINDS)
    done = service.deploys.order_by("-pk").first()
    assert done is not None and done.state == State.SUCCEEDED, done and done.reason
    return done


def probed(files: dict[str, str], probe: str) -> dict[str, str]:
    """`probe` runs first in the test step, the release command and the web process."""
    toml = files["onwatch.toml"].replace('command = "RELEASE=', f'command = "{probe}; RELEASE=')
    toml = toml.replace("command = \"python3 -c 'print(1)'\"", f'command = "{probe}"')
    toml = toml.replace('command = "echo migrated', f'command = "{probe}; echo migrated')
    return {**files, "onwatch.toml": toml}


def lines_of(job_id: int | None) -> list[str]:
    assert job_id is not None, "no job"
    found = JobLogLine.objects.filter(job_id=job_id).values_list("text", flat=True)
    return beside_a_writer(lambda: list(found))


def web_lines(machine: Machine, service: Service) -> list[str]:
    """What the service's running web process printed."""
    [slot] = [s.name for s in web_of(machine, service)]
    return machine.supervisor.log_of(slot).read_text().splitlines()


def web_pid(machine: Machine, service: Service) -> int:
    [pid] = [s.pid for s in web_of(machine, service)]
    return pid


def web_of(machine: Machine, service: Service) -> list[procman.Status]:
    names = {f"slot-{p}" for p in service.slot_ports}
    return [s for s in machine.supervisor.all() if s.name in names and s.running]


def test_each_service_runs_as_its_own_user_out_of_anothers_files_secrets_and_caddy(
    machine: Machine, org: Organization, tmp_path: Path
) -> None:
    blog = add(org, "blog", tmp_path / "blog", probed(app_files("b1"), "id -un"))
    blog_release = deploy(blog).release
    assert blog_release is not None
    pid = web_pid(machine, blog)
    # The web process holds the blog's secret in its environment, where /proc shows it.
    assert b"blog-secret-token-42" in Path(f"/proc/{pid}/environ").read_bytes()
    admin = machine.caddy.socket
    probe = (
        "id -un; "
        f"cat {blog_release.directory}/VERSION || echo the blog release is out of reach; "
        f"cat /proc/{pid}/environ || echo the blog environment is out of reach; "
        f"python3 -c 'import socket; socket.socket(socket.AF_UNIX).connect(\\\"{admin}\\\")' "
        "&& echo opened the admin API || echo the admin API is out of reach"
    )
    shop = add(org, "shop", tmp_path / "shop", probed(app_files("s1"), probe))
    deployed = deploy(shop)
    assert {fetch(listen_port(machine), "shop.test")[1] for _ in range(3)} == {"s1"}
    pipeline = shop.pipelines.get()
    shop_user, blog_user = svcusers.name_of(shop.pk), svcusers.name_of(blog.pk)
    assert shop_user != blog_user
    # Pipeline step, release command and web process: the shop's own user, kept out.
    web = web_lines(machine, shop)
    for said in (lines_of(pipeline.job_id), lines_of(deployed.job_id), web):
        assert shop_user in said and blog_user not in said, said
        assert "the blog release is out of reach" in said
        assert "the blog environment is out of reach" in said
        assert "the admin API is out of reach" in said
        assert "blog-secret-token-42" not in "\n".join(said)
    assert blog_user in lines_of(blog.deploys.get().job_id)
    # Only onwatch (root) reaches Caddy's admin API: a socket, and no port on TCP.
    ports = caddy_tcp_ports(machine)
    options = machine.caddy.options
    assert ports and ports <= {options.http_port, options.https_port, options.health_port}
    assert machine.caddy.answers()


def test_a_service_deployed_with_the_shared_step_user_moves_to_its_own_on_its_next_deploy(
    machine: Machine, org: Organization, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop = add(org, "shop", tmp_path / "shop", probed(app_files("v1"), "id -un"))
    with monkeypatch.context() as older:
        # As an older onwatch deployed it: every service as the one step user.
        older.setattr(svcusers, "applies", lambda: False)
        first = deploy(shop).release
    assert first is not None
    step_user = pwd.getpwnam(os.environ.get("ONWATCH_STEP_USER", "nobody"))
    assert step_user.pw_name in web_lines(machine, shop)
    assert owner(Path(first.directory) / "built.txt") == step_user.pw_uid
    load = Load(listen_port(machine), "shop.test").start()
    try:
        commit(tmp_path / "shop", probed(app_files("v2"), "id -un"), "Version v2")
        second = deploy(shop).release
    finally:
        tally = load.stop()
    assert tally.failed == 0, tally.errors
    assert {fetch(listen_port(machine), "shop.test")[1] for _ in range(3)} == {"v2"}
    own = pwd.getpwnam(svcusers.name_of(shop.pk))
    assert own.pw_name in web_lines(machine, shop) and step_user.pw_name not in web_lines(
        machine, shop
    )
    # Its files are its own user's now, the kept old release's too, closed to others.
    assert second is not None
    for release in (first, second):
        for path in (Path(release.directory), Path(release.directory) / "VERSION"):
            assert owner(path) == own.pw_uid, path
    for folder in (Path(first.directory).parent, workdir.service_folder(shop.pk)):
        st = folder.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, own.pw_gid, 0o710)
    assert owner(workdir.caches_of(shop)["uv"]) == own.pw_uid


def test_a_release_that_cannot_be_handed_over_after_the_switch_is_a_warning_not_a_failure(
    machine: Machine, org: Organization, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop = add(org, "shop", tmp_path / "shop", app_files("v1"))
    with monkeypatch.context() as older:
        older.setattr(svcusers, "applies", lambda: False)
        first = deploy(shop).release
    assert first is not None
    real = workdir.hand_to

    def vanishing(folder: Path, user: str) -> None:
        if folder == Path(first.directory):  # a file gone in the middle of its walk
            raise FileNotFoundError(2, "No such file or directory", str(folder / "gone.txt"))
        real(folder, user)

    monkeypatch.setattr(releases, "hand_to", vanishing)
    commit(tmp_path / "shop", app_files("v2"), "Version v2")
    done = deploy(shop)  # succeeded, as its release serves
    assert {fetch(listen_port(machine), "shop.test")[1] for _ in range(3)} == {"v2"}
    assert done.release is not None and done.live_after == done.release.label
    assert f"{first.directory}: [Errno 2] No such file or directory" in done.reason
    assert "could not all be handed to its own user" in done.reason
    assert services.deployed_commits(shop.pk)[-1] == done.release.commit
    [alert] = Delivery.objects.filter(title__contains=f"#{done.pk}")
    assert alert.title == f"Deploy #{done.pk} of shop succeeded with a warning"
    assert "Deploy shop again to hand its releases to its own user" in alert.body
    assert "stops the old process" not in alert.body
    # What could be handed over was; the folder is closed to other services.
    own = pwd.getpwnam(svcusers.name_of(shop.pk))
    st = Path(first.directory).parent.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, own.pw_gid, 0o710)


def owner(path: Path) -> int:
    return path.lstat().st_uid


def test_deleting_a_service_keeps_its_user_locked_under_another_name(
    machine: Machine, org: Organization, tmp_path: Path
) -> None:
    shop = add(org, "shop", tmp_path / "shop", app_files("v1"))
    deploy(shop)
    name = svcusers.name_of(shop.pk)
    uid = pwd.getpwnam(name).pw_uid
    assert uid != 0
    services.delete_service(shop, "shop", SYSTEM)
    with pytest.raises(KeyError):
        pwd.getpwnam(name)  # free for a later service of the same id
    kept = pwd.getpwuid(uid)  # its uid stays taken: no new account owns what it left
    assert kept.pw_name == svcusers.tombstone_of(uid)
    assert kept.pw_name.startswith(settings.SERVICE_USER_PREFIX)  # the tests remove it
    assert kept.pw_shell == "/usr/sbin/nologin"
    lines = Path("/etc/shadow").read_text().splitlines()
    [shadow] = [line.split(":") for line in lines if line.startswith(f"{kept.pw_name}:")]
    assert shadow[1].startswith("!") and shadow[7] == "1"  # locked, expired


def test_a_full_system_uid_range_fails_the_pipeline_in_one_line(
    org: Organization, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    login_defs = tmp_path / "login.defs"
    login_defs.write_text("SYS_UID_MIN 0\nSYS_UID_MAX 0\n")  # root's only: taken
    monkeypatch.setattr(svcusers, "LOGIN_DEFS", login_defs)
    shop = add(org, "shop", tmp_path / "shop", app_files("v1"))
    services.run_pipeline(shop, SYSTEM, "cli")
    jobs.run_pending(kinds=KINDS)
    pipeline = shop.pipelines.get()
    said = (
        "onwatch cannot make a user for the service: every system user id (0 to 0) is "
        "taken; widen SYS_UID_MIN/SYS_UID_MAX in /etc/login.defs"
    )
    assert pipeline.state == State.FAILED
    assert said in pipeline.reason and "\n" not in pipeline.reason
