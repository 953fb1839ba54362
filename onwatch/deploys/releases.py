"""A deploy's run on this machine: build the commit into a release directory of its own
(checkout and build command, in the sandbox as pipelines run), run its release command
once before any traffic moves (in the sandbox too, on this machine's network), then
switch.py's gated switch, whose web process runs as the service's user (svcusers.py). A
rollback makes a kept release live through the same switch, without building anything.

Whatever fails, the release that served before still serves, and the deploy says so in
one line and alerts with what is live now and what to do. The deploy's timeline (each
step: when, how long, ok or not, why) is kept on its row as it happens."""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from onwatch.alerts.services import Channel, alert_channels, organization_channels
from onwatch.backups import services as backup_services
from onwatch.core.jobs import JobCancelled, JobContext, JobFailed, WaitLater
from onwatch.core.masking import Masker
from onwatch.deploys import (
    caddy,
    git,
    hosts,
    pipelines,
    places,
    procman,
    projectfile,
    remote,
    sandbox,
    services,
    switch,
    watch,
)
from onwatch.deploys.models import (
    THIS_MACHINE,
    Deploy,
    DeployKind,
    Host,
    Release,
    ReleaseState,
    Service,
    ServiceHost,
    State,
    Watch,
    WatchState,
)
from onwatch.deploys.steplog import StepLog
from onwatch.deploys.workdir import (
    caches_of,
    close_to,
    hand_to,
    remove_workspace,
    service_user,
    tools_folder,
    work_folder,
)

# A release command (migrations) that runs longer than this is stopped and fails.
RELEASE_COMMAND_SECONDS = 1800.0
# A deploy that must wait for another of its service looks again this often.
WAIT_SECONDS = 2.0
# A deploy waiting for its backup before migrations looks at it this often, and says once
# why it waits when the backup has not started after this long.
BACKUP_POLL_SECONDS = 1.0
BACKUP_START_SECONDS = 60.0
log = logging.getLogger(__name__)
GATE = switch.Gate()
FELT_TO_DO = (
    "Read the deploy's timeline: errors from the app itself are the new release's to fix "
    "(or roll back); requests no release answered mean a release stopped or failed its "
    "health check during the switch."
)
# A rollback leaves a release that was answering badly: its last answers, as it drains,
# are counted in the switch too, and are no news.
ROLLBACK_FELT_TO_DO = (
    "Read the rollback's timeline: errors from the app itself during its switch are most "
    "likely the last answers of the release it replaced; requests no release answered mean "
    "a release stopped or failed its health check during the switch."
)


class DeployFailed(Exception):
    """The deploy stopped; the message says why (what serves is added by its end)."""


def machine() -> switch.Machine:
    """Where the service runs: this machine (SSH hosts later take their own)."""
    return switch.this_machine()


def place_for(host: Host) -> places.Place:
    """This machine's place, or an SSH host's (remote.py: an agent on the host, over SSH)."""
    if host.local:
        return places.LocalPlace(machine())
    try:
        return remote.place_of(host)
    except hosts.HostError as e:
        raise places.PlaceError(str(e)) from None


@dataclass
class Target:
    """One place a deploy of the service goes to, with its two slot ports (none yet: an SSH
    host's first deploy asks the host for them) and the row that keeps them."""

    place: places.Place
    ports: list[int]
    placement: ServiceHost | None = None

    @property
    def local(self) -> bool:
        """Built by releases.py in the sandbox, in the folder it was checked out in."""
        return isinstance(self.place, places.LocalPlace)

    def site(self, domain: str, release: Release) -> caddy.Site:
        return caddy.Site(domain, (self.ports[0], self.ports[1]), release.health_path or "/")


def at(target: Target, text: str) -> str:
    """`text` naming the place it happened on (a host's own errors name it already)."""
    return text if text.startswith(target.place.name) else f"on {target.place.name}: {text}"


def targets_of(service: Service) -> list[Target]:
    """Where a deploy of the service goes, in order: its hosts, else this machine alone
    on the service's own slot ports (as before services had hosts). PlaceError when a
    host's place cannot be made."""
    rows = services.placements(service)
    if not rows:
        return [Target(places.LocalPlace(machine()), list(service.slot_ports))]
    return [target_of(service, r) for r in rows]


def target_of(service: Service, row: ServiceHost) -> Target:
    return Target(place_for(row.host), ports_of(service, row), row)


def ports_of(service: Service, row: ServiceHost) -> list[int]:
    """This machine's slots are the service's own; an SSH host's, those it gave."""
    return list(service.slot_ports if row.host.local else row.slot_ports)


@contextmanager
def holding(here: switch.Machine, service: Service, waiting_for: str) -> Iterator[None]:
    """The service's deploy lock held, or WaitLater (the job gives its slot back and comes
    again) while someone else holds it."""
    with deploy_lock(here, service).open("a") as held:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WaitLater(f"waiting for {waiting_for}", WAIT_SECONDS) from None
        yield


def deploy_lock(here: switch.Machine, service: Service) -> Path:
    """The file a deploy of `service` holds locked while it runs (flock)."""
    locks = here.root / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    return locks / f"service-{service.pk}.lock"


@contextmanager
def no_deploy_running(service: Service, what: str, field: str) -> Iterator[None]:
    """The block runs holding the service's deploy lock: no deploy of it starts meanwhile
    (it waits), and while one runs the block is refused, saying which and what to do."""
    with deploy_lock(machine(), service).open("a") as held:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise services.Refusal(_busy(service, what), field) from None
        yield


def _busy(service: Service, what: str) -> str:
    """Who holds the lock, as far as the rows say: a deploy, or the watch of one reading
    its hosts (each look holds it a moment), or a deploy about to say it runs."""
    found = service.deploys.filter(state=State.RUNNING).order_by("pk").first()
    if found is not None:
        return (
            f"{found.kind.capitalize()} #{found.pk} of {service.name} is running; {what} once "
            "it has ended (or cancel it on its page)"
        )
    watching = Watch.objects.filter(deploy__service=service, state=WatchState.WATCHING).first()
    if watching is not None:
        return (
            f"The watch of deploy #{watching.deploy_id} of {service.name} is reading its hosts "
            f"at this moment; {what} again in a few seconds"
        )
    return f"A deploy of {service.name} is starting; {what} once it has ended"


def move_site(service: Service, old_domain: str, change: Callable[[], None]) -> None:
    """Make `change` (the service's new domain, saved) and send the new domain to the
    slots the old one went to: what is live keeps serving, at the new domain only. With
    no new domain the site leaves Caddy (its release keeps running). Refused while a
    deploy of the service runs: it would set up the old domain again. Refused too while
    it has been deployed on SSH hosts: the seam to a host (places.py) cannot move a site."""
    if on_hosts := [p.host.name for p in services.placements(service) if p.slot_ports]:
        raise services.Refusal(
            f"{service.name} runs on SSH hosts ({', '.join(on_hosts)}), where onwatch cannot "
            "move its domain yet; take them off its hosts (onwatch services hosts "
            f"{service.name} 'this machine'), change the domain, then set them again",
            "domain",
        )
    here = machine()
    with no_deploy_running(service, "change the domain", "domain"):
        change()
        try:
            _move_site(here, service, old_domain)
        except (caddy.CaddyError, ValueError) as e:
            raise services.Refusal(f"Caddy did not take the new domain: {e}", "domain") from None


def _move_site(here: switch.Machine, service: Service, old_domain: str) -> None:
    found = [s for s in here.caddy.sites() if s.domain == old_domain]
    live = services.live_release(service)
    if found:
        health = found[0].health_path
    elif live is not None and serving(service) != "nothing":
        health = live.health_path or "/"  # taken off before, still running
    else:
        return  # never deployed: its first deploy sets the site up
    if not service.domain:
        here.caddy.remove_site(old_domain)
        return
    ports = (service.slot_ports[0], service.slot_ports[1])
    here.caddy.put_site(caddy.Site(service.domain, ports, health), replacing=old_domain)


def site_of(service: Service, release: Release) -> caddy.Site:
    ports = service.slot_ports
    return caddy.Site(service.domain, (ports[0], ports[1]), release.health_path or "/")


class Run:
    def __init__(self, ctx: JobContext, deploy: Deploy) -> None:
        self.ctx, self.deploy, self.service = ctx, deploy, deploy.service
        self.machine = machine()
        self.masker = Masker(self.service.secrets)
        # What a person should hear about a deploy that made its release live anyway.
        self.warning = ""
        self.to_do: list[str] = []  # what a person can do about it, one line each
        # Who its build, release command and web process run as (svcusers.py).
        self.user = ""
        # The release live before a deploy, which its own is watched against afterwards;
        # when Caddy's count of the site's requests began (just before the switch), and what
        # it counted of the old release until the switch, on every host.
        self.previous: Release | None = None
        self.count_began = 0.0  # time.monotonic() when Caddy's count began
        self.base: services.Tally | None = None
        # The slot the new release answers from, once the switch kept Caddy counting.
        self.watched = ""
        # The places whose Caddy counts the site for the watch (every host of the service),
        # why one could not, and each place's slot of the new release once its switch kept
        # counting (the watch reads them all: watch.py).
        self.counting_on: list[Target] = []
        self.uncounted: dict[str, str] = {}
        self.watched_on: list[tuple[Target, str]] = []
        # Where it goes (places.py), in order, and what users felt at each switch there.
        self.targets: list[Target] = []
        self.felts: list[tuple[str, switch.Felt]] = []
        # Why the new release is not watched although the service asks for it.
        self.unwatched = ""
        # A place whose switch was cut off (the host lost): what served there before.
        self.unsure: tuple[Target, str | None] | None = None
        # Going back failed somewhere: more than one release may serve.
        self.mixed = False

    # --- the whole run -------------------------------------------------------------------

    def all(self) -> Release:
        with self.only_deploy():
            # Its domain may have changed while it waited (set_domain waits for no deploy).
            self.service.refresh_from_db()
            services.deploy_started(self.deploy)
            self.own_user()
            self.targets = self.reach()
            try:
                release = self.kind_of_run()
            finally:
                for target in self.targets:
                    target.place.close()
            self.own_releases()
        return release

    def kind_of_run(self) -> Release:
        if self.deploy.kind == DeployKind.ROLLBACK:
            release = self.rollback_target()
            self.make_live(release)
            return release
        live = False
        try:
            release = self.build()
            # Only now: the build, a backup's wait and the migrations would grow the
            # log without bound, and the old release's errors while its data
            # changed under it would raise the bar the new one is judged against.
            self.count_before()
            self.make_live(release)
            live = True
        finally:
            self.stop_counts(keep=live)
        return release

    def reach(self) -> list[Target]:
        try:
            return targets_of(self.service)
        except places.PlaceError as e:
            raise DeployFailed(str(e)) from None

    @property
    def several(self) -> bool:
        """Whether the service runs elsewhere than on this machine alone: its steps then
        say where each ran."""
        return len(self.targets) > 1 or self.targets[0].placement is not None

    def on(self, name: str, target: Target) -> str:
        return f"{name} on {target.place.name}" if self.several else name

    def remote(self) -> list[Target]:
        return [t for t in self.targets if not t.local]

    def rollback_target(self) -> Release:
        try:
            return services.rollback_still_wanted(self.deploy)
        except services.Refusal as e:
            raise DeployFailed(str(e)) from None

    def count_before(self) -> None:
        """Caddy counts the live release's answers from now (the release is built and its
        release command ran) until the switch: the baseline the new release is watched
        against (none when the service is not watched, nothing serves yet, or Caddy keeps
        no log of the site: the watch then says so)."""
        self.previous = services.live_release(self.service)
        if not (self.service.watch_seconds and self.previous and self.service.domain):
            return
        self.count_began = time.monotonic()
        for target in self.targets:
            try:
                target.place.start_counting(self.service.domain)
            except places.PlaceError as e:
                said = f"the release before is not counted, so nothing compares with it: {e}"
                self.ctx.log(self.said_on(target, said))
                self.uncounted[target.place.name] = str(e)
                continue
            self.counting_on.append(target)
        if self.several and not self.counting_on:
            self.unwatched = f"not judged: Caddy could count on no host ({self.uncounted_said()})"

    def uncounted_said(self) -> str:
        return "; ".join(f"{name}: {why}" for name, why in self.uncounted.items())

    def counts_at(self, target: Target) -> bool:
        return any(t is target for t in self.counting_on)

    def read_base(self, target: Target) -> None:
        """What the release before answered on `target` since the count began (its switch's
        before_count), added to the baseline: it joins what it answered while it was
        watched (services.watch_started)."""
        try:
            sums = target.place.counted_before(self.service.domain)
        except places.PlaceError as e:
            self.ctx.log(self.said_on(target, f"the release before could not be counted: {e}"))
            return
        counts, span = watch.counted(sums), time.monotonic() - self.count_began
        more = services.Tally(counts.requests, counts.errors, counts.seconds, span)
        # The hosts counted side by side: their seconds of serving are the same ones.
        self.base = more if self.base is None else self.base + dataclasses.replace(more, span=0)
        self.base = dataclasses.replace(self.base, span=max(self.base.span, span))

    def stop_counts(self, keep: bool) -> None:
        """Caddy's count stops where no watch reads it: everywhere when the release did not
        go live, else where its switch did not keep it on."""
        kept = {id(t) for t, _ in self.watched_on} if keep else set()
        for target in self.counting_on:
            if id(target) not in kept:
                try:
                    target.place.stop_counting(self.service.domain)
                except places.PlaceError as e:
                    self.ctx.log(self.said_on(target, f"Caddy may still log each request: {e}"))

    def watch_hosts(self) -> list[dict[str, Any]]:
        """Each host's part of the watch (Watch.hosts), none for this machine alone."""
        if not self.several:
            return []
        watched = {id(t): upstream for t, upstream in self.watched_on}
        return [
            watch.host_entry(
                t.placement.host,
                t.place.name,
                watched.get(id(t), ""),
                "" if id(t) in watched else self.uncounted.get(t.place.name, "not counted"),
            )
            for t in self.targets
            if t.placement is not None
        ]

    def own_user(self) -> None:
        try:
            self.user = service_user(self.service.pk)
        except sandbox.SandboxError as e:
            raise DeployFailed(str(e)) from None
        if self.user and services.live_release(self.service) is None:
            # Nothing of the service runs as another user: its releases are closed at once.
            close_to(self.releases_folder(), self.user)

    def own_releases(self) -> None:
        """Once the release serves, what ran as the step user every service shared (an
        older onwatch) has stopped: the kept releases become the service's user's, and
        their folder is closed to every other. The new release serves already: what
        cannot be handed over is the deploy's warning, not a failed deploy."""
        if not self.user:
            return
        folder = self.releases_folder()
        left: list[str] = []
        for kept in sorted(folder.iterdir()):
            if kept.name.isdigit():
                left += self.handed(kept, partial(hand_to, kept, self.user))
        left += self.handed(folder, partial(close_to, folder, self.user))
        if left:
            self.warn(
                f"The service's releases could not all be handed to its own user {self.user} "
                f"({'; '.join(left)}): other services may still read them",
                f"Deploy {self.service.name} again to hand its releases to its own user; if "
                "this warning comes back, check those folders on this machine.",
            )

    def handed(self, path: Path, hand: Callable[[], None]) -> list[str]:
        """[] when `hand` made `path` the service user's, else what went wrong."""
        try:
            hand()
        except (OSError, KeyError) as e:
            return [f"{path}: {e}"]
        return []

    def warn(self, text: str, to_do: str) -> None:
        self.warning = f"{self.warning}; {text}" if self.warning else text
        self.to_do.append(to_do)

    def releases_folder(self) -> Path:
        return work_folder("releases", str(self.service.pk))

    @contextmanager
    def only_deploy(self) -> Iterator[None]:
        """Two deploys of one service never interleave, and start in the order they were
        asked for. One that must wait gives its slot back meanwhile (WaitLater), so that
        pipelines run in it (a deploy held a slot of the pipelines queue while it waited,
        and a worker's only one starved every pipeline until the other deploy ended)."""
        self.ctx.check()
        with holding(self.machine, self.service, "another deploy of this service to finish"):
            if services.older_deploy_due(self.deploy):
                raise WaitLater(
                    "waiting for an older deploy of this service to go first", WAIT_SECONDS
                )
            yield

    # --- building ------------------------------------------------------------------------

    def build(self) -> Release:
        commit = self.deploy.commit or (self.deploy.pipeline.commit if self.deploy.pipeline else "")
        release = services.new_release(self.deploy, commit)
        folder = Path(release.directory)
        try:
            self.step("checkout", lambda: self.checkout(release, folder, commit))
            project = self.step("read onwatch.toml", lambda: self.read_project(folder))
            # Sent before the build here changes the tree: each host builds its own.
            for t in self.remote():
                self.step(f"send to {t.place.name}", partial(self.send, t, release, folder))
            if project.build:
                self.build_everywhere(release, folder, project.build)
            if release_line := project.release:
                self.backup_first(release)
                first = self.targets[0]
                self.step(
                    self.on("release command", first),
                    partial(self.release_command, release_line, folder)
                    if first.local
                    else partial(self.run_at, first, release, release_line, True),
                )
        except DeployFailed as e:
            services.release_failed(release, str(e))
            raise
        services.release_built(release, project.web, project.health or "/")
        return release

    def build_everywhere(self, release: Release, folder: Path, command: str) -> None:
        """Here in the sandbox (once, for every place of this machine), then on each host."""
        if local := [t for t in self.targets if t.local]:
            with pipelines.caches_held(self.ctx, self.service, "pipeline or build"):
                self.step(self.on("build", local[0]), lambda: self.sandboxed(command, folder))
        for t in self.remote():
            self.step(f"build on {t.place.name}", partial(self.run_at, t, release, command))

    def send(self, target: Target, release: Release, folder: Path) -> str:
        try:
            there = target.place.release_folder(self.service.pk, release.pk)
            target.place.receive(there, folder)
        except places.PlaceError as e:
            raise DeployFailed(at(target, str(e))) from None
        return f"{there} on {target.place.name}"

    def run_at(self, target: Target, release: Release, command: str, once: bool = False) -> str:
        """A build (or, `once`, the release command) on an SSH host, its lines in the
        deploy's log, stopped at its time limit or when the deploy is cancelled."""
        log = StepLog(self.ctx.job.pk, self.service.secrets, prefix=f"[{target.place.name}] ")
        log.say(f"$ {command}")
        env = {**self.service.secrets, "ONWATCH_DEPLOY": str(self.deploy.pk)}
        seconds = RELEASE_COMMAND_SECONDS if once else pipelines.STEP_LIMITS.seconds
        try:
            folder = target.place.release_folder(self.service.pk, release.pk)
            ran = target.place.run(
                folder, command, env, seconds, lambda line: log.say(line), self.ctx.cancelled
            )
        except places.PlaceError as e:
            raise DeployFailed(at(target, str(e))) from None
        finally:
            log.close()
        # Said on the step, where the deploy's page shows it, failed or not.
        bare = f" (not sandboxed: {ran.unsandboxed})" if ran.unsandboxed else ""
        if ran.reason is not None or ran.exit_code != 0:
            said = " | ".join(self.masker.mask(line) for line in ran.last_lines) or "nothing"
            what = "the release command " if once else ""
            why = ran.reason or f"exited with {ran.exit_code}"
            raise DeployFailed(f"on {target.place.name}: {what}{why}{bare}: {said}")
        return f"exited with 0 in {ran.seconds:.1f} s{bare}"

    def checkout(self, release: Release, folder: Path, commit: str) -> str:
        service = self.service
        url = services.source_url(self.deploy.pipeline) if self.deploy.pipeline else service.git_url
        if problem := services.local_repository_problem(url, service):
            raise DeployFailed(f"the repository's address is not usable: {problem}")
        home = work_folder("releases", str(service.pk), f".home-{release.pk}")
        try:
            with services.ssh_session(service) as session:
                env = git.environment(home, session.git_command() if session else "")
                git.fetch(folder, url, service.branch, env)
                found = git.checkout(folder, service.branch, commit, env)
        except git.GitError as e:
            raise DeployFailed(str(e)) from None
        finally:
            shutil.rmtree(home, ignore_errors=True)
        message = self.masker.mask(found.message)
        services.release_checked_out(release, found.sha, message)
        return f"{found.sha[:12]}: {message.splitlines()[0] if message else ''}"

    def read_project(self, folder: Path) -> projectfile.Project:
        try:
            project = projectfile.read(folder)
        except projectfile.ProjectError as e:
            raise DeployFailed(e.lines[0]) from None
        if not project.web:
            raise DeployFailed(
                f"{projectfile.FILE} has no [web] command, so there is nothing to run: add "
                '[web] command = "… --bind 127.0.0.1:$PORT"'
            )
        return project

    def sandboxed(self, command: str, folder: Path, release: bool = False) -> str:
        """Run `command` in the release's folder as pipeline steps run: in the sandbox, as
        the step user, its lines streamed masked into the deploy's log, stopped (its whole
        tree) when the deploy is cancelled or at its time limit."""
        log = StepLog(self.ctx.job.pk, self.service.secrets)
        log.say(f"$ {command}")
        tools = tools_folder()
        step = sandbox.Step(
            argv=["bash", "-c", command],
            workspace=folder,
            env=pipelines.step_env(self.service, folder, {"ONWATCH_DEPLOY": str(self.deploy.pk)}),
            caches=caches_of(self.service),
            readonly=[tools] if tools else [],
            limits=sandbox.Limits(seconds=RELEASE_COMMAND_SECONDS)
            if release
            else pipelines.STEP_LIMITS,
            # The release command (migrations) must reach the service's database, which is
            # usually on this machine (127.0.0.1 or a socket file): it shares this machine's
            # network, loopback included, which the build does not.
            host_network=release,
            user=self.user,
        )
        try:
            outcome = sandbox.run(step, log.write, self.ctx.cancelled)
        except sandbox.SandboxError as e:
            raise DeployFailed(str(e)) from None
        log.close()
        if outcome.reason is not None or outcome.exit_code != 0:
            said = " | ".join(log.last(3)) or "nothing"
            what = "the release command " if release else ""
            raise DeployFailed(f"{what}{pipelines.failure_reason(outcome)}: {said}")
        return f"exited with 0 in {outcome.seconds:.1f} s"

    def backup_first(self, release: Release) -> None:
        """The release has migrations: when the service names a backup plan, a backup of
        it runs (as a job of the backups app) and ends well before they run."""
        if self.service.backup_plan_id is None:
            return
        if self.deploy.skip_backup:
            by = self.deploy.triggered_by or "someone"
            self.step("backup", lambda: f"skipped on purpose: {by} deployed without it")
            return
        self.step("backup", lambda: self.back_up(release))

    def back_up(self, release: Release) -> str:
        """Wait for the backup in this deploy's slot: the deploy holds its service's lock
        and a built release, which giving the slot back (WaitLater) would let go. Backups
        run in a queue of their own, so the wait never blocks the backup it waits for."""
        job_id = services.backup_before_migrations(self.deploy)
        assert job_id is not None
        self.ctx.log(f"backing up before the migrations: job #{job_id}")
        state = self.wait_for_backup(job_id)
        if not state.ok:
            raise DeployFailed(
                f"the backup before migrations failed: {state.error}; nothing changed; fix "
                f"the backup or deploy without it (onwatch deploy {self.service.name} "
                "--skip-backup)"
            )
        services.release_backed_up(release, state.snapshot, state.at)
        return release.backup_text

    def wait_for_backup(self, job_id: int) -> backup_services.Asked:
        """Until the backup ended; once, why it waits when it has not even started."""
        state = backup_services.backup_state(job_id)
        asked, said = time.monotonic(), False
        while not state.ended:
            if not (state.started or said) and time.monotonic() - asked > BACKUP_START_SECONDS:
                said = True
                self.ctx.log(
                    f"the backup (job #{job_id}) has not started yet: it waits for a free slot "
                    "of the backups' queue (another backup, drill or restore runs); cancel the "
                    "deploy, or deploy with --skip-backup, rather than wait"
                )
            if self.ctx.cancelled.wait(BACKUP_POLL_SECONDS):
                # A backup is never harmful, and one cut off would leave nothing: it goes on.
                raise DeployFailed(
                    f"cancelled while it waited for the backup before migrations; that "
                    f"backup (job #{job_id}) goes on to its end"
                )
            state = backup_services.backup_state(job_id)
        return state

    def release_command(self, command: str, folder: Path) -> str:
        """Run once, before any traffic moves, with the service's secrets. It may change
        the dependency caches (uv run syncs), which one run of the service writes at a time."""
        with pipelines.caches_held(self.ctx, self.service, "pipeline or build"):
            return self.sandboxed(command, folder, release=True)

    # --- switching -----------------------------------------------------------------------

    def make_live(self, release: Release) -> None:
        """Switch each place in turn behind the same gate; when one fails, those switched
        already go back to what they served before: no mix of releases stays live."""
        self.check_folders(release)
        if self.user and any(t.local for t in self.targets):
            # Kept from before the service had a user of its own (a rollback): its now too.
            hand_to(Path(release.directory), self.user)
        switched: list[tuple[Target, str | None]] = []
        try:
            for t in self.targets:
                switched.append((t, self.switch_at(t, release)))
        except Exception as e:  # whatever stopped it, no host stays on the new release alone
            # Nothing is watched: Caddy's count kept on for the watch stops with the run
            # (going back here may fail before its own switch counts and stops).
            self.watched = ""
            self.sum_felt()
            unsure = [self.unsure] if self.unsure else []
            why = str(e) if isinstance(e, DeployFailed) else f"{type(e).__name__}: {e}"
            said = self.went_back([*switched, *unsure], self.masker.mask(why))
            raise DeployFailed(said) from None
        self.sum_felt()
        if self.several:
            self.now_serving()  # noted per host, for the service's page and the API

    def check_folders(self, release: Release) -> None:
        built = built_on(release)
        for t in self.targets:
            where = "this machine" if not self.several else t.place.name
            # Places of this machine (tests stand them for hosts) share its one build.
            if built is not None and (THIS_MACHINE if t.local else t.place.name) not in built:
                raise DeployFailed(
                    f"{release.label} was never built on {where}, which became a host of "
                    f"{self.service.name} after it: deploy first (onwatch deploy "
                    f"{self.service.name}), then roll back to a release built there too"
                )
            try:
                there = (
                    Path(release.directory).is_dir()
                    if t.local
                    else t.place.has_folder(self.folder_at(t, release))
                )
            except places.PlaceError as e:
                raise DeployFailed(at(t, str(e))) from None
            if not there:
                raise DeployFailed(f"{release.label} is no longer on {where} (its folder is gone)")

    def folder_at(self, target: Target, release: Release) -> str:
        if target.local:
            return release.directory
        return target.place.release_folder(self.service.pk, release.pk)

    def switch_at(self, target: Target, release: Release) -> str | None:
        """Switch one place to `release`; what served there before (None: nothing). Once
        its switch started (its slot ports asked for), a failure is DeployFailed."""
        self.ensure_ports(target)
        site = target.site(self.service.domain, release)
        self.step(self.on("prepare Caddy", target), lambda: self.prepare(target, site))
        try:
            before = target.place.serving(site)
        except places.PlaceError as e:
            raise DeployFailed(at(target, str(e))) from None
        counts = self.counts_at(target)
        try:
            record = target.place.switch(
                site,
                self.release_at(target, release),
                self.named(target),
                GATE,
                keep_counting=counts,
                # The old release's answers while the new one started and passed its gate.
                before_count=partial(self.read_base, target) if counts else lambda: None,
            )
        except switch.SwitchFailed as e:
            self.keep_felt(target, e.record)
            self.restore_site(target, before)
            raise DeployFailed(self.said_on(target, self.masker.mask(str(e)))) from None
        except places.PlaceError as e:
            # Lost mid-switch: it may have moved, so it goes back with the others.
            self.unsure = (target, before)
            raise DeployFailed(at(target, str(e))) from None
        if record.still_counting:
            self.watched_on.append((target, f"127.0.0.1:{record.port}"))
            self.watched = self.watched or self.watched_on[-1][1]
        if record.warning:
            self.warn(self.masker.mask(record.warning), stop_old(self.service))
        self.keep_felt(target, record)
        return before

    def restore_site(self, target: Target, before: str | None) -> None:
        """Caddy asks the live release the health path "prepare Caddy" set for the new
        one: where the old one still serves, it gets its own back (a release answering 404
        on the new path would be taken for down)."""
        old = release_labelled(self.service, before) if before else None
        if old is None:
            return
        try:
            target.place.put_site(target.site(self.service.domain, old))
        except places.PlaceError as e:
            self.ctx.log(f"{at(target, str(e))}: Caddy still asks {old.label} the new health path")

    def said_on(self, target: Target, text: str) -> str:
        return f"on {target.place.name}: {text}" if self.several else text

    def ensure_ports(self, target: Target) -> None:
        """An SSH host's slot ports, asked of it on the service's first deploy there."""
        if len(target.ports) == 2:
            return
        # A service stopped there keeps its slots, though its site left Caddy: not those.
        avoid = (
            frozenset(services.ports_kept_on(target.placement.host))
            if target.placement
            else frozenset()
        )
        try:
            target.ports = target.place.free_ports(2, avoid)
        except places.PlaceError as e:
            raise DeployFailed(at(target, str(e))) from None
        if target.placement is not None:
            services.placement_ports(target.placement, target.ports)

    def release_at(self, target: Target, release: Release) -> switch.Release:
        return switch.Release(
            release.label,
            release.web_command,
            Path(self.folder_at(target, release)),
            self.service.secrets,
            # The service's user is this machine's; a host's agent runs it as its own.
            user=self.user if target.local else "",
        )

    def named(self, target: Target) -> Callable[[switch.Step], None]:
        """The switch's steps on the timeline, named after their place when there are
        several ("health gate on deploy@10.0.0.7")."""
        if not self.several:
            return self.on_switch_step

        def on_step(step: switch.Step) -> None:
            self.on_switch_step(dataclasses.replace(step, name=self.on(step.name, target)))

        return on_step

    # --- going back ----------------------------------------------------------------------

    def went_back(self, switched: list[tuple[Target, str | None]], why: str) -> str:
        """Every place switched already goes back to what it served before (last first);
        the deploy's one line: why, and what serves now on every host."""
        if not switched:
            return f"{why}; what serves now: {self.now_serving()}" if self.several else why
        stuck = [left for t, before in reversed(switched) if (left := self.switch_back(t, before))]
        now = self.now_serving()
        if stuck:
            self.mixed = True
            alert_mix(self.deploy, stuck, now)
            return f"{why}; going back failed ({'; '.join(stuck)}); what serves now: {now}"
        names = ", ".join(t.place.name for t, _ in switched)
        return f"{why}; switched back on {names}; what serves now: {now}"

    def unmix(self, why: str) -> str:
        """After its worker died: the places on this deploy's release go back to the one
        most others serve (none do: nothing is mixed, nothing changes)."""
        self.targets = self.reach()
        try:
            said = [(t, _serving_at(self.service, t)) for t in self.targets]
            new = str(self.deploy.release)
            olds = Counter(x for _, x in said if x != new and release_labelled(self.service, x))
            on_new = [t for t, label in said if label == new]
            if not (olds and on_new):
                return why
            if any(t.local for t in on_new):
                self.user = service_user(self.service.pk)
            before = olds.most_common(1)[0][0]
            # A host that joined with this deploy never had the old release: it served
            # nothing before, as a failed deploy's going back takes it.
            old = release_labelled(self.service, before)
            built = built_on(old) if old is not None else None
            back = [(t, before if built is None or t.place.name in built else None) for t in on_new]
            return self.went_back(back, why)
        finally:
            for target in self.targets:
                target.place.close()

    def switch_back(self, target: Target, before: str | None) -> str:
        """'' when `target` serves `before` again, else what is left there, in words."""
        try:
            self.step(f"switch back on {target.place.name}", partial(self.back, target, before))
        except Exception as e:  # whatever it was, the others still go back, and it is said
            return f"{target.place.name}: {self.masker.mask(str(e))}"
        return ""

    def back(self, target: Target, before: str | None) -> str:
        site = caddy.Site(self.service.domain, (target.ports[0], target.ports[1]))
        if target.place.serving(site) == before:
            # A host lost mid-switch may not have moved: nothing to undo there.
            return f"{before or 'nothing'} still serves on {target.place.name}"
        if before is None:
            target.place.stop_serving(set(target.ports))
            return f"nothing served on {target.place.name} before: the new release was stopped"
        old = release_labelled(self.service, before)
        if old is None or old.state != ReleaseState.READY:
            raise DeployFailed(f"{before} is no longer kept, so it cannot serve again")
        record = target.place.switch(
            target.site(self.service.domain, old),
            self.release_at(target, old),
            lambda step: None,
            GATE,
        )
        self.keep_felt(target, record)
        self.restore_site(target, before)
        return f"{old.label} serves on {target.place.name} again"

    def now_serving(self) -> str:
        return serving_of(self.service, self.targets, every=True)

    # --- what users felt -----------------------------------------------------------------

    def keep_felt(self, target: Target, record: switch.Switch) -> None:
        if record.felt is not None:
            self.felts.append((target.place.name, record.felt))

    def sum_felt(self) -> None:
        """What users felt, summed over every switch (back ones too), on the deploy; when
        they saw errors or the old version after the switch, a person hears it."""
        if not self.felts:
            return
        services.deploy_felt(self.deploy, summed(self.felts, self.several))
        if self.deploy.felt_bad:
            self.warn(
                f"Not every request went well during the switch: {self.deploy.felt_text}",
                ROLLBACK_FELT_TO_DO if self.deploy.kind == DeployKind.ROLLBACK else FELT_TO_DO,
            )

    def prepare(self, target: Target, site: caddy.Site) -> str:
        """Caddy and supervisord running, and the domain sent to the service's two slots.
        Changed only when the site is new or changed (a reload closes idle connections)."""
        try:
            target.place.ensure_ready()
            changed = target.place.put_site(site)
        except places.PlaceError as e:
            raise DeployFailed(self.said_on(target, str(e))) from None
        return f"{site.domain} set up in Caddy" if changed else f"{site.domain} was set up"

    def on_switch_step(self, step: switch.Step) -> None:
        services.deploy_step(self.deploy, step_row(step))
        if step.live_at is not None and self.deploy.switched_at is None:
            services.deploy_switched(self.deploy, step.live_at)
        if step.live_at is not None:
            services.deploy_live_on_host(self.deploy, step.live_at)

    # --- one step of the timeline --------------------------------------------------------

    def step[T](self, name: str, body: Callable[[], T]) -> T:
        record = switch.Step(name, timezone.now())
        self.on_switch_step(record)
        self.ctx.log(f"{name}")
        try:
            done: T = body()
        except BaseException as e:
            record.ok, record.detail = False, self.masker.mask(str(e))
            raise
        finally:
            record.ended = timezone.now()
            self.on_switch_step(record)
        record.detail = self.masker.mask(done) if isinstance(done, str) else record.detail
        self.on_switch_step(record)
        return done


def built_on(release: Release) -> set[str] | None:
    """The places the deploy that built `release` built it on, from its timeline (None:
    every place, as far as can be told: built before services had hosts, or by a deploy
    since removed). A host is sent the tree to build; this machine builds what it checked
    out, in a step of its own when hosts build too."""
    deploy = Deploy.objects.filter(release=release, kind=DeployKind.DEPLOY).first()
    if deploy is None:
        return None
    names = [str(s.get("name", "")) for s in deploy.steps]
    sent = {n.removeprefix("send to ") for n in names if n.startswith("send to ")}
    builds = [n for n in names if n == "build" or n.startswith("build on ")]
    here = not builds or "build" in builds or f"build on {THIS_MACHINE}" in builds
    return sent | {THIS_MACHINE} if here else sent


def step_row(step: switch.Step) -> dict[str, Any]:
    took = (step.ended - step.started).total_seconds() if step.ended else None
    row = {
        "name": step.name,
        "started": step.started.isoformat(),
        "ended": step.ended.isoformat() if step.ended else None,
        "seconds": took,
        "ok": step.ok,
        "detail": step.detail,
    }
    # The switch step of each host says when the release went live there.
    return row | ({"live_at": step.live_at.isoformat()} if step.live_at else {})


def serving(service: Service) -> str:
    """What serves the service's domain now, read from Caddy's slot files on each of its
    places: one release's label, or each place's when they differ (never hidden). Noted
    on each host's row too, for the service's page."""
    if not service.domain:
        return "nothing"
    try:
        targets = targets_of(service)
    except places.PlaceError as e:
        return f"unknown ({e})"[:300]
    try:
        return serving_of(service, targets)
    finally:
        for t in targets:
            t.place.close()


@dataclass(frozen=True)
class Where:
    host: str
    serving: str  # a release's label, "nothing", or "unknown (why)"
    seen_at: datetime | None  # when that was read (None: just now)


def where_it_runs(service: Service, look: bool = False) -> list[Where]:
    """Each host of the service, in deploy order, with what serves there: as noted at
    the last deploy's end, or, with `look` (and always for this machine alone), read now."""
    rows = services.placements(service)
    if not service.domain:
        return [Where(r.host.name, "nothing", None) for r in rows] or [
            Where(THIS_MACHINE, "nothing", None)
        ]
    if look or not rows:
        said = serving(service)
        if not rows:
            return [Where(THIS_MACHINE, said, None)]
        rows = services.placements(service)
    return [Where(r.host.name, r.serving or "nothing yet", r.serving_at) for r in rows]


def serving_of(service: Service, targets: list[Target], every: bool = False) -> str:
    """`every`: one release everywhere is said so ("release 4 (1a2b3c4) on every host")."""
    said = [(t.place.name, _serving_at(service, t)) for t in targets]
    services.placements_serving(
        {t.placement.pk: label for t, (_, label) in zip(targets, said, strict=True) if t.placement}
    )
    labels = {label for _, label in said}
    if len(labels) == 1:
        label = labels.pop()
        several = len(said) > 1 or targets[0].placement is not None
        return (
            f"{label} on every host ({', '.join(n for n, _ in said)})"
            if every and several
            else label
        )
    return ", ".join(f"{label} on {name}" for name, label in said)[:300]


def _serving_at(service: Service, target: Target) -> str:
    if len(target.ports) != 2:
        return "nothing"
    site = caddy.Site(service.domain, (target.ports[0], target.ports[1]))
    try:
        return target.place.serving(site) or "nothing"
    except places.PlaceError as e:
        # Its remedy is the deploy's reason already; what served there last is the news.
        last = last_seen(target.placement.serving if target.placement else "")
        seen = f"; {last} when last seen" if last else ""
        return f"unknown ({str(e).split(': ')[0]}{seen})"


def last_seen(label: str) -> str:
    """The release a host served when last read, also from an "unknown (…)" label that
    kept it: a host unreachable twice in a row still says what served there."""
    if not label.startswith("unknown ("):
        return "" if label == "nothing" else label
    said, _, tail = label.rpartition("; ")
    return tail.removesuffix(" when last seen)") if said and tail.endswith(" seen)") else ""


def release_labelled(service: Service, label: str) -> Release | None:
    """The release a slot's label names (Release.label: "release 4 (1a2b3c4)")."""
    found = re.match(r"release (\d+) ", label)
    return service.releases.filter(pk=int(found[1])).first() if found else None


def summed(felts: list[tuple[str, switch.Felt]], several: bool) -> switch.Felt:
    """What users felt over every switch of a deploy; not measured when any was not."""
    drains = [f.drain_seconds for _, f in felts if f.drain_seconds is not None]
    unmeasured = [
        f"{name}: {f.unmeasured}" if several else f.unmeasured for name, f in felts if f.unmeasured
    ]
    return switch.Felt(
        served=sum(f.served for _, f in felts),
        failed=sum(f.failed for _, f in felts),
        app_errors=sum(f.app_errors for _, f in felts),
        mixed=sum(f.mixed for _, f in felts),
        drain_seconds=max(drains) if drains else None,
        unmeasured="; ".join(unmeasured)[:300],
    )


def execute(ctx: JobContext, deploy: Deploy) -> dict[str, object]:
    run = Run(ctx, deploy)
    try:
        release = run.all()
    except WaitLater:
        raise  # not started: back to the queue
    except JobCancelled:
        services.deploy_ended(deploy, State.CANCELLED, "cancelled", serving(deploy.service))
        raise
    except DeployFailed as e:
        if ctx.cancelled.is_set() and run.mixed:
            # Going back failed: a mix may serve, which "cancelled" would hide.
            fail(deploy, f"cancelled while it failed: {e}")
            raise JobFailed(deploy.reason) from None
        if ctx.cancelled.is_set():
            # Stopped by a person, not failed by itself: the step's own end says nothing.
            services.deploy_ended(deploy, State.CANCELLED, "cancelled", serving(deploy.service))
            raise JobCancelled("cancelled") from None
        fail(deploy, str(e))
        raise JobFailed(deploy.reason) from None
    except Exception as e:
        fail(deploy, f"onwatch could not finish the {deploy.kind}: {type(e).__name__}: {e}")
        raise JobFailed(deploy.reason) from None
    services.deploy_ended(deploy, State.SUCCEEDED, run.warning, release.label)
    if run.watched and run.previous is not None:
        services.watch_started(deploy, run.previous, run.watched, run.base, run.watch_hosts())
    elif run.unwatched:
        services.deploy_not_watched(deploy, run.unwatched)
    if run.warning:
        warn_people(deploy, run.to_do)
    try:
        prune(deploy.service)
    except (places.PlaceError, OSError) as e:  # the deploy is done; old folders wait
        log.warning("old releases of %s were not all removed: %s", deploy.service.name, e)
    return {"deploy": deploy.pk, "release": release.pk}


def fail(deploy: Deploy, why: str, state: str = State.FAILED) -> None:
    say_failed(deploy, why, state)


STOPPED = "onwatch stopped while the deploy ran (its worker stopped answering)"


def interrupted(deploy: Deploy) -> None:
    """Its worker died mid-deploy. "Deploy again" is said only where nothing goes back by
    itself: beside "nothing yet, you will hear again" it told the person woken two things."""
    stop_counting(deploy.service)
    if may_be_mixed(deploy):
        go_back_later(deploy, STOPPED)
    else:
        say_failed(deploy, f"{STOPPED}; deploy again", State.INTERRUPTED)


def say_failed(deploy: Deploy, why: str, state: str) -> None:
    """The deploy's end, with what serves now, and its alert."""
    reason, live = with_now(deploy.service, why)
    services.deploy_ended(deploy, state, reason, live)
    alert_failed(deploy, "was interrupted" if state == State.INTERRUPTED else "failed")


def with_now(service: Service, why: str, new: str = "") -> tuple[str, str]:
    """`why` with what serves the service's domain now (unless it says so itself), and that;
    `new`: the deploy's own release, which serves "now", not "still"."""
    live = serving(service)
    domain = service.domain
    now = f"{live} still serves {domain}" if live != "nothing" else f"nothing serves {domain} yet"
    if live == new:
        now = f"{live} serves {domain}"
    if " on " in live:  # several hosts, each said: "X on a, Y on b still serves" misread
        now = f"what serves {domain} now: {live}"
    # A deploy to several places says itself what serves on each.
    return (why if now in why or "what serves now:" in why else f"{why}; {now}"), live


def may_be_mixed(deploy: Deploy) -> bool:
    """Whether a worker that died mid-deploy may have left some hosts on the new release:
    it built one, and the service has more than one place to switch."""
    if deploy.release_id is None or deploy.job_id is None or not deploy.service.domain:
        return False
    return len(services.placements(deploy.service)) > 1


def go_back_later(deploy: Deploy, why: str) -> None:
    """The reaper (in the scheduler's tick) only ends the deploy interrupted and queues its
    going back: switching hosts back takes up to a gate's minute each, which escalations
    and heartbeats' alerts would wait for. The job says what it did, and alerts."""
    # One transaction: a worker that takes the job at once must find the deploy's line
    # saying it checks, or its own words would be overwritten by them.
    with transaction.atomic():
        job, new = services.queue_going_back(deploy, why)
        if not new:  # the reaper came by again: the job under way (or ended) says it
            return
        checking = going_back_said(job.pk)
        services.deploy_ended(
            deploy, State.INTERRUPTED, f"{why}; {checking}", f"unknown ({checking})"
        )
    # Said now, not when the job runs: it may wait behind a long pipeline on its queue.
    alert_failed(deploy, "was interrupted")


CHECKING = "onwatch is checking its hosts for a mix of releases"


def going_back_said(job_id: int) -> str:
    return f"{CHECKING} (job #{job_id})"


def go_back(ctx: JobContext, deploy: Deploy, why: str) -> dict[str, object]:
    """The going-back job: holding the service's deploy lock (waiting for whoever holds
    it), the places on the interrupted deploy's release go back to what the others serve;
    the deploy's line says what was done, and alerts. JobFailed when a mix may be left."""
    run = Run(JobContext(deploy.job or ctx.job, cancelled=ctx.cancelled), deploy)
    with holding(run.machine, deploy.service, "the deploy or watch that holds the service to end"):
        # Said even when a cancel cut it short: what was done is the news.
        said, told = unmixed(run, why)
        reason, live = with_now(deploy.service, said, str(deploy.release))
        services.deploy_went_back(deploy, reason, live)
        if not run.mixed:  # alert_mix told it already, with where and what to do
            alert_failed(deploy, "was interrupted", went_back_to_do(deploy, told))
    ctx.log(f"deploy #{deploy.pk}: {deploy.reason}")
    if run.mixed:
        raise JobFailed(f"going back failed on a host; deploy #{deploy.pk} says where")
    return {"deploy": deploy.pk, "live": deploy.live_after}


def unmixed(run: Run, why: str) -> tuple[str, bool]:
    """`why`, with what going back did (or why nothing could be told), and whether told."""
    try:
        return run.unmix(why), True
    except JobCancelled:
        raise
    except Exception as e:  # the interruption is said and alerted all the same
        log.warning("deploy #%s: its hosts were not checked for a mix: %s", run.deploy.pk, e)
        return f"{why}; whether its hosts serve a mix of releases could not be told ({e})", False


def went_back_to_do(deploy: Deploy, told: bool) -> str:
    """What to do once the going-back job said what serves on each host."""
    name, live, new = deploy.service.name, deploy.live_after, str(deploy.release)
    if not told:
        return set_every_host(deploy)
    if "unknown (" in live:
        return failed_to_do(deploy)
    if live == new:
        # The deploy ended interrupted, not succeeded: onwatch still counts the release
        # before it as live, so the new one's watch never ran and a rollback would go back
        # from the wrong release.
        return (
            f"What to do: deploy {name} again: {new} serves on every host (each was switched "
            f"before onwatch stopped), but onwatch did not record it as live, so it was not "
            f"watched and a rollback would not start from it."
        )
    if " on " in live:
        return set_every_host(deploy)
    if live == "nothing":  # its first deploy, cut short before any host switched
        return f"What to do: deploy {name} again: nothing serves it yet on any host."
    return (
        f"What to do: nothing is urgent, {live} serves on every host as before the deploy. "
        f"Deploy {name} again to ship {new}: it was cut short, not refused."
    )


def set_every_host(deploy: Deploy) -> str:
    return (
        f"What to do: deploy {deploy.service.name} again, which sets every host to one "
        "release; until then users may get different releases from different hosts."
    )


def going_back_ended(job_id: int, deploy: Deploy, why: str, what: str) -> None:
    """A going-back job that ended without saying (cancelled, or its worker died on its
    last attempt): the deploy says nothing was made sure of, and alerts. Only while its
    line still says the job is checking: a job that said its end keeps its words."""
    if not deploy.reason.endswith(going_back_said(job_id)):
        return
    not_checked = (
        f"{why}; going back on its hosts {what}, so whether they serve a mix of releases "
        f"is not known: deploy {deploy.service.name} again, which sets every host"
    )
    services.deploy_went_back(deploy, not_checked, "unknown (not checked after the interruption)")
    alert_failed(deploy, "was interrupted", set_every_host(deploy))


def stop_counting(service: Service) -> None:
    """A worker that died mid-switch left Caddy logging every request of the site: on a
    busy site that fills the disk until the next switch."""
    if not service.domain:
        return
    here = machine()
    try:
        with switch.site_lock(here, service.domain) as ours:
            # Held: a live switch (a rollback, a newer deploy) counts now and stops itself.
            if ours:
                here.caddy.stop_counting(service.domain)
                here.caddy.forget_answers(service.domain)
    except OSError as e:
        log.warning("Caddy may still log each request of %s: %s", service.domain, e)


def alert_failed(deploy: Deploy, verb: str = "failed", to_do: str = "") -> None:
    service = deploy.service
    _alert(
        deploy,
        verb,
        f"What serves {service.domain} now: {deploy.live_after or 'nothing'}",
        to_do or failed_to_do(deploy),
    )


def failed_to_do(deploy: Deploy) -> str:
    """One that failed before its switch changed nothing users see: rolling back, as was
    once advised for every failure, would take away the release that still serves well."""
    if deploy.live_after and CHECKING in deploy.live_after:
        return (
            "What to do: nothing yet. onwatch is switching the hosts that took the new "
            "release back to what the others serve; you will hear again when that is done."
        )
    if deploy.live_after and "unknown (" in deploy.live_after:
        # A host that cannot be read may be down: "nothing is urgent" could be untrue.
        return (
            "What to do: find out why onwatch could not read a host (above, and the "
            f"{deploy.kind}'s timeline linked below), bring it back, then deploy again."
        )
    if deploy.switched_at is None and deploy.live_after:
        # Several hosts are each said above: "X on a, nothing on b still serves" misread.
        live = deploy.live_after
        serves = "what served before still serves" if " on " in live else f"{live} still serves"
        return (
            f"What to do: nothing is urgent, {serves} as before. Read the {deploy.kind}'s "
            "timeline (linked below), fix the cause and deploy again."
        )
    return (
        f"What to do: read the {deploy.kind}'s timeline (linked below); fix the cause and "
        f"deploy again, or roll back to an earlier release (onwatch rollback "
        f"{deploy.service.name})."
    )


def warn_people(deploy: Deploy, to_do: list[str]) -> None:
    """The warning, unless it is only the app's errors during a watch's rollback: the last
    answers of the release it rolled back, which the watch's incident tells of a moment
    later (people got three alerts for one bad release)."""
    only_errors = to_do == [ROLLBACK_FELT_TO_DO] and not (
        deploy.switch_failed or deploy.switch_mixed
    )
    if deploy.trigger == "watch" and only_errors:
        return
    alert_warning(deploy, to_do)


def alert_warning(deploy: Deploy, to_do: list[str] | None = None) -> None:
    """A deploy that made its release live but left something behind (its reason);
    `to_do`: what to do about each thing, else about an old process left running."""
    service = deploy.service
    _alert(
        deploy,
        "succeeded with a warning",
        f"What serves {service.domain} now: {deploy.live_after}",
        f"What to do: {not_urgent(deploy)}. " + " ".join(to_do or [stop_old(service)]),
    )


def not_urgent(deploy: Deploy) -> str:
    """It said "nothing is urgent" seconds before the watch rolled the release back."""
    if Watch.objects.filter(deploy=deploy).exists():
        return (
            f"nothing is urgent yet, {serving_well(deploy)}; onwatch watches it for "
            f"{deploy.service.watch_seconds} s and rolls it back by itself if it answers "
            "clearly worse than the release before it"
        )
    return f"nothing is urgent, {serving_well(deploy)}"


def serving_well(deploy: Deploy) -> str:
    if deploy.kind == DeployKind.ROLLBACK:
        return f"{deploy.live_after or 'the release rolled back to'}, made live again, serves"
    return "the new release serves"


def stop_old(service: Service) -> str:
    return (
        f"The next deploy of {service.name} stops the old process; to stop it sooner, deploy again."
    )


def _alert(deploy: Deploy, verb: str, serves: str, to_do: str) -> None:
    """To the service's channels: what, since when, what serves, what to do, and the link;
    masked, as a deploy's text may hold the service's secrets."""
    service = deploy.service
    what = "Rollback" if deploy.kind == DeployKind.ROLLBACK else "Deploy"
    since = deploy.started_at or deploy.created_at
    body = [
        f"What is wrong: {deploy.reason}",
        f"Since: {since:%Y-%m-%d %H:%M} UTC",
        serves,
        to_do,
    ]
    masker = Masker(service.secrets)
    alert_channels(
        channels_of(service),
        title=masker.mask(f"{what} #{deploy.pk} of {service.name} {verb}"),
        body=masker.mask("\n".join(body)),
        link=reverse("deploy_detail", args=[deploy.pk]),
    )


def alert_mix(deploy: Deploy, stuck: list[str], now: str) -> None:
    """Going back failed on a place: more than one release may serve, which a person must
    hear at once, with where and what to do."""
    service = deploy.service
    masker = Masker(service.secrets)
    # Its going-back job's, after its worker died: "failed" would misname what happened.
    verb = "was interrupted" if deploy.state == State.INTERRUPTED else "failed"
    since = deploy.started_at or deploy.created_at
    body = [
        f"What is wrong: a {deploy.kind} of {service.name} {verb}, and going back to the "
        f"release that served before failed on: {'; '.join(stuck)}",
        f"Since: {since:%Y-%m-%d %H:%M} UTC",
        f"What serves {service.domain} now: {now}",
        f"What to do: roll back (onwatch rollback {service.name}) or deploy again once the "
        "host answers; until then users may get different versions from different hosts.",
    ]
    alert_channels(
        channels_of(service),
        title=masker.mask(f"{service.name} serves a mix of releases after deploy #{deploy.pk}"),
        body=masker.mask("\n".join(body)),
        link=reverse("deploy_detail", args=[deploy.pk]),
    )


def channels_of(service: Service) -> list[Channel]:
    chosen = services.deploy_channels(service)
    return list(organization_channels(service.org)) if chosen is None else chosen


def stop_serving(service: Service) -> None:
    """A deleted service's releases stop and its sites leave Caddy (a reload, once).
    Caddy and supervisord are started for it when they do not answer (never leaving a site
    that points at a removed release); Refusal, saying what to do, when they cannot be."""
    ports = set(service.slot_ports)
    stop_on_hosts(service)
    with _reaching(service) as here:
        if here is not None:
            switch.stop_serving(here, ports)


def stop_where_not(service: Service, chosen: list[Host]) -> list[str]:
    """The service stops on each place it served on that is not among `chosen` ([]: this
    machine only); what could not be stopped, one line a host (a host gone for good must
    still be taken off). Only those are reached: a host kept is not asked anything."""
    here = not chosen or any(h.local for h in chosen)
    kept = {h.pk for h in chosen}
    rows = services.placements(service)
    if not rows:
        return [] if here else _stopped(service, targets_of(service))
    taken_off = [r for r in rows if not (here if r.host.local else r.host_id in kept)]
    left: list[str] = []
    for row in taken_off:
        if len(ports_of(service, row)) != 2:
            continue  # never deployed there
        try:
            left += _stopped(service, [target_of(service, row)])
        except places.PlaceError as e:
            left.append(_not_stopped(service, row.host.name, str(e)))
    return left


def answering(service: Service, chosen: list[Host]) -> list[Host]:
    """Those of `chosen` where a release of the service serves now, as read there (this
    machine always answers; a host that cannot be reached serves nobody)."""
    rows = {r.host_id: r for r in services.placements(service)}
    return [h for h in chosen if h.local or _releases_there(service, rows.get(h.pk))]


def _releases_there(service: Service, row: ServiceHost | None) -> bool:
    if row is None or len(ports_of(service, row)) != 2:
        return False
    try:
        target = target_of(service, row)
    except places.PlaceError:
        return False
    try:
        return release_labelled(service, _serving_at(service, target)) is not None
    finally:
        target.place.close()


def _stopped(service: Service, targets: list[Target]) -> list[str]:
    left: list[str] = []
    for t in targets:
        try:
            t.place.stop_serving(set(t.ports))
        except places.PlaceError as e:
            left.append(_not_stopped(service, t.place.name, str(e)))
        finally:
            t.place.close()
    return left


def _not_stopped(service: Service, host: str, why: str) -> str:
    return (
        f"{service.name} could not be stopped on {host} ({why}); it may still serve there: "
        "stop it there by hand, or set the host back and take it off again once it answers"
    )


def stop_on_hosts(service: Service) -> None:
    """Its releases stop on each SSH host it ran on; Refusal naming those that could not."""
    try:
        targets = [t for t in targets_of(service) if not t.local and len(t.ports) == 2]
    except places.PlaceError as e:
        raise services.Refusal(
            f"{service.name}'s hosts cannot be reached: {e}", "confirm"
        ) from None
    again = (
        f"delete it again, or take that host off its hosts first (onwatch services hosts "
        f"{service.name} 'this machine'), which says what may still run there"
    )
    _stop_on(service, targets, "confirm", again)


def _stop_on(service: Service, targets: list[Target], field: str, again: str) -> None:
    left: list[str] = []
    for t in targets:
        try:
            t.place.stop_serving(set(t.ports))
        except places.PlaceError as e:
            left.append(f"{t.place.name}: {e}")
        finally:
            t.place.close()
    if left:
        raise services.Refusal(
            f"{service.name}'s releases could not be stopped on {'; '.join(left)}; when "
            f"that host answers again, {again}",
            field,
        )


def check_can_stop_serving(service: Service) -> None:
    """Refusal now, before anything of the service is stopped, when stop_serving could not
    do its work."""
    with _reaching(service):
        pass


@contextmanager
def _reaching(service: Service) -> Iterator[switch.Machine | None]:
    """This machine with Caddy and supervisord running, or None when nothing of the
    service is set up in them."""
    here = machine()
    if not switch.left_behind(here, set(service.slot_ports)):
        yield None
        return
    try:
        here.ensure_running()
        yield here
    except (caddy.CaddyError, procman.ProcmanError) as e:
        raise services.Refusal(
            f"{service.name}'s releases could not be stopped and its domain taken off "
            f"Caddy: {e}; when that works again, delete it again",
            "confirm",
        ) from None


def prune(service: Service) -> list[Release]:
    """Remove the folders of releases beyond those kept (services.releases_to_prune)."""
    pruned = services.releases_to_prune(service)
    for release in pruned:
        if release.directory and os.path.isdir(release.directory):
            remove_workspace(Path(release.directory))
        services.release_pruned(release)
    if pruned:
        prune_on_hosts(service, pruned)
    return pruned


def prune_on_hosts(service: Service, pruned: list[Release]) -> None:
    """The same releases go on every SSH host: each keeps what this machine keeps. A host
    that cannot be reached keeps them until a later prune (they only take room)."""
    try:
        targets = [t for t in targets_of(service) if not t.local]
    except places.PlaceError as e:
        log.warning("old releases of %s stay on its hosts: %s", service.name, e)
        return
    for t in targets:
        folders = [t.place.release_folder(service.pk, r.pk) for r in pruned]
        try:
            t.place.remove_folders(folders)
        except places.PlaceError as e:
            log.warning("old releases of %s stay on %s: %s", service.name, t.place.name, e)
        finally:
            t.place.close()
