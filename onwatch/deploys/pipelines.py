"""A pipeline's run: check out the exact commit into a fresh workspace, read how the
service is built and tested, run those steps in the sandbox, and say how it went. The
workspace is removed at the end whatever happens; a failed pipeline alerts with the step
that failed and its last lines, and the next green one says it is fixed."""

from __future__ import annotations

import contextvars
import errno
import fcntl
import threading
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from functools import partial
from pathlib import Path

from django.urls import reverse
from django.utils import timezone

from onwatch.alerts.services import alert_channels
from onwatch.core import jobs, ssh
from onwatch.core.jobs import JobCancelled, JobContext, JobFailed
from onwatch.core.masking import Masker
from onwatch.deploys import git, junit, phases, projectfile, sandbox, services
from onwatch.deploys.models import Pipeline, PipelineStep, Service, State, Trigger
from onwatch.deploys.steplog import StepLog
from onwatch.deploys.workdir import (
    bytecode_cache,
    caches_of,
    discard,
    disk_full,
    mirror_of,
    pipeline_bytecode,
    service_folder,
    service_user,
    share_bytecode,
    step_problem,
    tool_env,
    tools_folder,
    unshare_bytecode,
    uv_python,
    work_folder,
    workspace_of,
)

ALERT_LINES = 20
ALERT_TESTS = 10
# The shell's exit code for a command it did not find (uv or npm not installed here).
NOT_FOUND = 127
STEP_PATH = git.SYSTEM_PATH
LOCK_POLL_SECONDS = 0.5
# What each step may take: time, memory, processes, output (the service page says which
# enforces memory).
STEP_LIMITS = sandbox.Limits()


class StepFailed(Exception):
    """The step ended without success; the message is its one-line reason."""

    def __init__(self, reason: str, exit_code: int | None = None) -> None:
        super().__init__(reason)
        self.exit_code = exit_code


def report_path(workspace: Path, relative: str) -> Path:
    """The report's path in the checkout, refused when a folder on the way is a link: the
    step wrote them and a link could lead to onwatch's own files (the file itself is opened
    without following a link)."""
    if not projectfile.report_path_ok(relative):
        raise junit.JUnitError(f"the test report {relative} leads out of the checkout")
    path = workspace
    for part in Path(relative).parts[:-1]:
        path = path / part
        if path.is_symlink():
            raise junit.JUnitError(f"the test report {relative} leads out of the checkout")
    return workspace / relative


@contextmanager
def caches_held(ctx: JobContext, service: Service, what: str = "pipeline") -> Iterator[None]:
    """The service's caches are written by one of its pipelines (or release builds) at a
    time (uv and npm do not expect two writers); a second one waits here, and says so."""
    path = work_folder("caches") / f"{service.pk}.lock"
    with path.open("a") as held:
        said = False
        while not ctx.cancelled.is_set():
            try:
                fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not said:
                    ctx.log(f"waiting for another {what} of this service to finish")
                    said = True
                ctx.cancelled.wait(LOCK_POLL_SECONDS)
        else:
            raise StepFailed("cancelled")
        yield  # closing the file releases the lock


def step_env(
    service: Service,
    workspace: Path,
    marker: dict[str, str],
    linked: bool = False,
    bytecode: Path | None = None,
) -> dict[str, str]:
    """The whole environment of a step in the sandbox (nothing is inherited); linked: see
    tool_env; bytecode: where Python keeps what it compiles (see share_bytecode)."""
    tools = tools_folder()
    return {
        "PATH": f"{tools / 'bin'}:{STEP_PATH}" if tools else STEP_PATH,
        "HOME": str(workspace / ".home"),
        "LANG": "C.UTF-8",
        "CI": "true",
        # Python otherwise holds its output back in blocks when it goes to a pipe: it
        # would show late, and out of order with what it prints to stderr.
        "PYTHONUNBUFFERED": "1",
        **marker,
        **({"PYTHONPYCACHEPREFIX": str(bytecode)} if bytecode else {}),
        **tool_env(caches_of(service), linked),
        **service.secrets,
    }


class Run:
    def __init__(self, ctx: JobContext, pipeline: Pipeline) -> None:
        self.ctx = ctx
        self.pipeline = pipeline
        self.service = pipeline.service
        self.workspace = workspace_of(pipeline)
        self.position = 0
        self.current: PipelineStep | None = None
        self.log: StepLog | None = None
        self.masker = Masker(self.service.secrets)
        # Pipelines only: a release's build is kept, and its web process runs without it.
        self.bytecode = bytecode_cache(self.service)
        # The service's caches, held from its first sandboxed step until its workspace is
        # removed: the next pipeline's sandbox, bound to the service's folder, hides the
        # workspaces beside its own, and one vanishing half-way would fail its step.
        self.held = ExitStack()
        # Whether a step ran in the sandbox yet: it handed the workspace and caches over to
        # the step user, the only one to write there until the workspace is removed (the
        # caches are held), so the next steps need not walk them again.
        self.handed_over = False
        # The commands of the sandboxed steps still to come, and the sandbox of the next
        # one, made while the step before it runs (sandbox.Ahead).
        self.upcoming: list[str] = []
        self.ahead: sandbox.Ahead | None = None
        # The one network the sandboxed steps share (sandbox.Network), made with the first.
        self.network: sandbox.Network | None = None

    # --- the steps ------------------------------------------------------------------------

    def all(self) -> None:
        self.step("checkout", self.service.git_url, self.checkout)
        project = self.step("read onwatch.toml", projectfile.FILE, self.read_project)
        self.upcoming = [command for _name, command in project.steps()]
        for name, command in project.steps():
            if name == "test" and project.report:
                self.step(name, command, partial(self.tested, command, project.report))
            else:
                self.step(name, command, partial(self.sandboxed, command))

    def tested(self, command: str, report: str) -> None:
        """The test step with its report read, whatever the command's end: a command that
        exits 0 while its report lists failures fails (a runner's exit code can lie, e.g. a
        wrapper script that does not pass it on), so nothing looks greener than it is."""
        try:
            self.sandboxed(command)
        finally:
            if not self.ctx.cancelled.is_set():
                self.read_report(report)
        failing = (self.pipeline.tests_failed or 0) + (self.pipeline.tests_errors or 0)
        if failing:
            tests = "test" if failing == 1 else "tests"
            raise StepFailed(
                f"the test report lists {failing} failing {tests} though the command exited 0",
                0,
            )

    def read_report(self, relative: str) -> None:
        """The test step's JUnit report; one that is missing or unreadable is a line in the
        log, never a failure of its own (the step's exit code says whether tests passed)."""
        try:
            report = junit.read(report_path(self.workspace, relative))
        except junit.JUnitError as e:
            self.ctx.log(self.masker.mask(f"no test results: {e}"))
            return
        services.record_tests(self.pipeline, report, self.masker.mask)
        p = self.pipeline
        self.ctx.log(
            f"test report: {p.tests_total} tests, {p.tests_failed} failed, "
            f"{p.tests_errors} errors, {p.tests_skipped} skipped"
        )

    def caches_held(self) -> AbstractContextManager[None]:
        return caches_held(self.ctx, self.service)

    def checkout(self) -> None:
        service, log = self.service, self.log
        assert log is not None
        # Said before anything is fetched: every step after would fail the same way.
        with phases.timed("checkout: can steps run"):
            problem = step_problem()
        if problem:
            raise StepFailed(problem)
        # Before anything is fetched: one pipeline of the service at a time updates its
        # mirror and binds its folder in a sandbox (see Run.held).
        self.held.enter_context(self.caches_held())
        url = services.source_url(self.pipeline)
        pushed = url != service.git_url
        # Again here: a link on the way may have changed since the address was saved. A
        # pushed commit comes from onwatch's own copy, which is in its data directory.
        if not pushed and (problem := services.local_repository_problem(url, service)):
            raise StepFailed(f"the repository's address is not usable: {problem}")
        log.say(f"fetching branch {self.pipeline.branch} of {'the pushed copy' if pushed else url}")
        opened: AbstractContextManager[ssh.Session | None] = (
            nullcontext() if pushed else services.ssh_session(self.service, self.said_pinned)
        )
        with opened as session:
            env = git.environment(self.workspace, session.git_command() if session else "")
            ssh_log = session.log_text if session else str
            # Onwatch's until the step starts; the step user passes through to set up in
            # it. Made here, not by whichever of git and the sandbox comes first.
            self.workspace.mkdir(parents=True, exist_ok=True)
            self.workspace.chmod(0o711)
            said, commit = self.fetch_beside_first_sandbox(url, pushed, env, ssh_log)
            if said:
                log.say(said)
        # A commit message may quote a secret too (a config pasted in).
        author, message = self.masker.mask(commit.author), self.masker.mask(commit.message)
        Pipeline.objects.filter(pk=self.pipeline.pk).update(
            commit=commit.sha, author=author, message=message
        )
        self.pipeline.commit, self.pipeline.author = commit.sha, author
        self.pipeline.message = message
        log.say(commit_line(self.pipeline))

    def fetch_beside_first_sandbox(
        self, url: str, pushed: bool, env: dict[str, str], ssh_log: Callable[[], str]
    ) -> tuple[str, git.Commit]:
        """git in a thread of its own (it touches no database), up to the checked-out
        commit: the first step's sandbox is made meanwhile, in this one (bubblewrap dies
        with its thread). Should making it fail, git is stopped rather than waited for (up
        to twice FETCH_SECONDS)."""
        failed = threading.Event()

        def stopped() -> bool:
            return failed.is_set() or self.ctx.cancelled.is_set()

        with ThreadPoolExecutor(1, thread_name_prefix="fetch") as pool:
            run_here = contextvars.copy_context().run
            fetched = pool.submit(run_here, self.fetch, url, pushed, env, ssh_log, stopped)
            try:
                self.make_first_sandbox()
            except BaseException:
                failed.set()
                raise
            with phases.timed("checkout: waited for git"):
                return fetched.result()

    def fetch(
        self,
        url: str,
        pushed: bool,
        env: dict[str, str],
        ssh_log: Callable[[], str],
        stopped: Callable[[], bool],
    ) -> tuple[str, git.Commit]:
        """The branch into the workspace, and its commit checked out. A remote's is fetched
        into the service's mirror first, so only what is new crosses the network; one
        pipeline of the service at a time does (its caches are held). A repository on this
        machine (onwatch's pushed copy, a path) is its own mirror. Timed as beside the
        pipeline's path: what it waits for is timed there."""
        branch, said, fetched = self.pipeline.branch, "", ""
        source = git.local_path(url)
        with phases.overlapped():
            if source is None:  # a remote's (onwatch's pushed copy is a path)
                with phases.timed("checkout: mirror updated"):
                    source = mirror_of(self.service.pk)
                    said = git.update_mirror(source, url, branch, env, ssh_log, stopped)
            with phases.timed("checkout: cloned"):
                # Linked only where the step runs as another user, who cannot change what
                # is linked (sandbox._hand_over leaves it its owner's); as onwatch's own, it
                # could make the files writable, and write the source.
                linked = sandbox.shares_root()
                cloned = git.clone_local(self.workspace, source, branch, env, linked, stopped)
            if not cloned:
                with phases.timed("checkout: fetched"):
                    fetched = git.fetch(self.workspace, str(source), branch, env, stopped=stopped)
            with phases.timed("checkout: git checkout"):
                check = git.checked_out if cloned else git.checkout
                commit = check(self.workspace, branch, self.pipeline.commit, env)
        return "\n".join(filter(None, [said, fetched])), commit

    def make_first_sandbox(self) -> None:
        """The first step's sandbox, made while the checkout runs (its command is in the
        files the checkout brings)."""
        if sandbox.network_isolated():
            # First: its holder sets itself up while the bytecode is shared.
            self.network = sandbox.Network(service_user(self.service.pk))
        # Before the sandbox is made: it hands the caches over while it sets itself up.
        with phases.timed("start: bytecode shared"):
            uv = uv_python(caches_of(self.service))
            share_bytecode(self.bytecode, self.workspace, uv)
        self.ahead = sandbox.Ahead(self.sandbox_step(None))

    def said_pinned(self, fingerprint: str) -> None:
        assert self.log is not None
        self.log.say(f"pinned the server's host key {fingerprint} (first use)")

    def read_project(self) -> projectfile.Project:
        assert self.log is not None
        try:
            project = projectfile.read(self.workspace)
        except projectfile.ProjectError as e:
            for line in e.lines:
                self.log.say(line)
            raise StepFailed(e.lines[0]) from None
        self.log.say(f"commands from {project.source}")
        for name, command in project.steps():
            self.log.say(f"{name}: {command}")
        missing = [n for n in project.env_names if n not in self.service.secrets]
        if missing:
            self.log.say(f"note: the service has no secret for {', '.join(missing)}")
        return project

    def sandboxed(self, command: str) -> None:
        assert self.log is not None
        self.log.say(f"$ {command}")
        with self.made_for(command) as made:
            self.handed_over = True  # by starting it
            made.start(["bash", "-c", command] if made.step.argv == sandbox.LATER else ())
            # Made once this step's command runs: it then costs this step nothing.
            if self.upcoming:
                self.ahead = sandbox.Ahead(self.sandbox_step(self.upcoming.pop(0)))
            outcome = made.follow(self.write, self.ctx.cancelled)
        self.log.close()
        if outcome.reason is not None or outcome.exit_code != 0:
            raise StepFailed(failure_reason(outcome), outcome.exit_code)
        assert self.current is not None
        self.current.exit_code = outcome.exit_code

    def made_for(self, command: str) -> sandbox.Ahead:
        """The step's sandbox: the one made ahead, or else one made now."""
        if command in self.upcoming:
            self.upcoming.remove(command)
        ahead, self.ahead = self.ahead, None
        if ahead is not None and ahead.step.argv in (sandbox.LATER, ["bash", "-c", command]):
            return ahead
        if ahead is not None:
            ahead.close()
        return sandbox.Ahead(self.sandbox_step(command))

    def close_ahead(self) -> None:
        """A sandbox made for a step that will not run (one before it failed)."""
        ahead, self.ahead = self.ahead, None
        if ahead is not None:
            ahead.close()

    def close_network(self) -> None:
        network, self.network = self.network, None
        if network is not None:
            network.close()

    def sandbox_step(self, command: str | None) -> sandbox.Step:
        """command: None for a sandbox made before it is known (sandbox.LATER)."""
        with phases.timed("step: environment"):
            caches = {**caches_of(self.service), "bytecode": self.bytecode}
            tools = tools_folder()
            marker = {"ONWATCH_PIPELINE": str(self.pipeline.pk)}
            linked = sandbox.shares_root()
            pycache = pipeline_bytecode(self.bytecode, self.workspace)
            env = step_env(self.service, self.workspace, marker, linked, pycache)
        return sandbox.Step(
            argv=sandbox.LATER if command is None else ["bash", "-c", command],
            workspace=self.workspace,
            env=env,
            caches=caches,
            readonly=[tools] if tools else [],
            limits=STEP_LIMITS,
            shared_root=service_folder(self.service.pk) if linked else None,
            user=service_user(self.service.pk),
            handed_over=self.handed_over,
            network=self.network,
        )

    def write(self, chunk: bytes) -> None:
        assert self.log is not None
        with phases.timed("step: output logged"):
            self.log.write(chunk)

    # --- one step ---------------------------------------------------------------------------

    def step[T](self, name: str, command: str, body: Callable[[], T]) -> T:
        """Run `body` as the pipeline's next step, recorded with its state and duration."""
        self.position += 1
        with phases.timed("step: recorded as started"):
            self.current = PipelineStep.objects.create(
                pipeline=self.pipeline,
                position=self.position,
                name=name,
                command=self.masker.mask(command),
                state=State.RUNNING,
                started_at=timezone.now(),
            )
            self.log = StepLog(self.ctx.job.pk, self.service.secrets)
            self.ctx.log(f"step {self.position}: {name}")
        try:
            done = body()
        except StepFailed as e:
            failed = StepFailed(full_disk_or(str(e)), e.exit_code)
        except (git.GitError, ssh.SshError, sandbox.SandboxError) as e:
            failed = StepFailed(full_disk_or(str(e)))
        except OSError as e:
            if e.errno != errno.ENOSPC:
                said = f"onwatch could not run this step: {type(e).__name__}: {e}"
                self.end_step(State.FAILED, said)
                raise
            failed = StepFailed(full_disk_or(str(e)))
        except BaseException as e:
            self.end_step(State.FAILED, f"onwatch could not run this step: {type(e).__name__}: {e}")
            raise
        else:
            with phases.timed("step: recorded as ended"):
                self.end_step(State.SUCCEEDED, "", self.current.exit_code)
            return done
        self.end_step(State.FAILED, str(failed), failed.exit_code)
        raise failed from None

    def end_step(self, state: str, reason: str, exit_code: int | None = None) -> None:
        step, log = self.current, self.log
        assert step is not None and log is not None
        reason = self.masker.mask(reason)
        if self.ctx.cancelled.is_set() and state != State.SUCCEEDED:
            # Stopped, not ended by itself: whatever code the kill left says nothing.
            state, reason, exit_code = State.CANCELLED, "cancelled", None
        log.close()
        if reason and log.last(1) != [reason]:
            log.say(reason)
        step.state, step.reason, step.exit_code = state, reason, exit_code
        step.ended_at = timezone.now()
        assert step.started_at is not None
        step.seconds = (step.ended_at - step.started_at).total_seconds()
        step.tail = "\n".join(log.last(ALERT_LINES * 5))
        if Pipeline.objects.filter(pk=step.pipeline_id).exists():  # its service may be gone
            step.save()


def full_disk_or(reason: str) -> str:
    """A step that failed because the work folder's disk filled up (a build writing into
    its workspace, git checking out) fails saying so, whatever it printed about it."""
    if reason.startswith("the disk holding onwatch's work folder is full"):
        return reason
    return disk_full() or reason


def failure_reason(outcome: sandbox.Outcome) -> str:
    reason = outcome.reason or f"exited with {outcome.exit_code}"
    if reason.endswith("the step's time limit"):
        # Usually a test waiting for something that never comes (a server, input).
        reason += "; its last lines show where it hung: make it finish, or stop what it waits for"
    if outcome.exit_code == NOT_FOUND:
        reason += (
            ": a program it runs was not found (its name is in the output above); install it "
            "where onwatch runs, or change the command"
        )
    return reason


def execute(ctx: JobContext, pipeline: Pipeline) -> dict[str, object]:
    """The pipeline's job: runs it to its end state, which the job's state follows."""
    seconds: dict[str, float] = {}
    # Registered first, so it runs last: after the workspace is removed.
    ctx.on_end(lambda: phases.report(pipeline.pk, seconds))
    with phases.recording(seconds):
        with phases.timed("start: recorded as running"):
            Pipeline.objects.filter(pk=pipeline.pk).update(
                state=State.RUNNING, started_at=timezone.now()
            )
            pipeline.refresh_from_db()
            run = Run(ctx, pipeline)
        # Last registered runs first: a sandbox made for a step that did not run is
        # stopped, then the steps' network, the workspace goes, then the caches are let go.
        ctx.on_end(run.held.close)
        ctx.on_end(lambda: removed(run, seconds))
        ctx.on_end(run.close_network)
        ctx.on_end(run.close_ahead)
        return run_to_end(ctx, run)


def removed(run: Run, seconds: dict[str, float]) -> None:
    with phases.recording(seconds), phases.timed("end: workspace removed"):
        discard(run.workspace)
        # Before the caches are let go: the next pipeline's step may be writing there.
        unshare_bytecode(run.bytecode, run.workspace)


def run_to_end(ctx: JobContext, run: Run) -> dict[str, object]:
    pipeline = run.pipeline
    try:
        run.all()
    except StepFailed as e:
        if ctx.cancelled.is_set():
            # A reason given with the cancel (superseded by pipeline #N) is kept.
            given = Pipeline.objects.filter(pk=pipeline.pk).values_list("reason", flat=True)
            end(pipeline, State.CANCELLED, given.first() or "cancelled")
            raise JobCancelled("cancelled") from None
        end(pipeline, State.FAILED, str(e))
        alert_failed(pipeline)
        said = f"{describe(pipeline)} failed at {failing_step(pipeline)}: {e}"
        raise JobFailed(run.masker.mask(said)) from None
    except Exception as e:
        # Said here, masked, rather than by the job's own handling: its message and
        # traceback may quote what a step printed.
        jobs.append_line(ctx.job.pk, run.masker.mask(traceback.format_exc()))
        said = f"onwatch could not run the pipeline: {type(e).__name__}: {e}"
        end(pipeline, State.FAILED, said)
        alert_failed(pipeline)
        raise JobFailed(run.masker.mask(said)) from None
    with phases.timed("end: recorded"):
        end(pipeline, State.SUCCEEDED, "")
    with phases.timed("end: fixed or not"):
        alert_if_fixed(pipeline)
    return {"pipeline": pipeline.pk, "commit": pipeline.commit}


def end(pipeline: Pipeline, state: str, reason: str) -> None:
    reason = Masker(pipeline.service.secrets).mask(reason)
    if Pipeline.objects.filter(pk=pipeline.pk).update(
        state=state, reason=reason, ended_at=timezone.now()
    ):
        pipeline.refresh_from_db()
    # else its service was deleted while it ran: there is nothing left to record it in.


def describe(pipeline: Pipeline) -> str:
    return f"Pipeline #{pipeline.pk} of {pipeline.service.name} ({pipeline.branch})"


def failing_step(pipeline: Pipeline) -> str:
    step = pipeline.steps.exclude(state=State.SUCCEEDED).order_by("position").first()
    return step.name if step else "its start"


def alert_failed(pipeline: Pipeline, verb: str = "failed") -> None:
    step = pipeline.steps.exclude(state=State.SUCCEEDED).order_by("position").first()
    lines = step.tail.splitlines()[-ALERT_LINES:] if step else []
    body = [
        f"What is wrong: {step.name + ': ' if step else ''}{pipeline.reason or verb}",
        commit_line(pipeline),
        pusher_line(pipeline),
        "What to do: read the step's output below (the whole log is on the pipeline's page), "
        "fix the cause and push again, or run the pipeline again.",
    ]
    if failing := pipeline.failing_tests:
        names = [t["name"] for t in failing[:ALERT_TESTS]]
        more = pipeline.tests_failed + pipeline.tests_errors - len(names)
        body += ["", f"Failing tests: {', '.join(names)}{f' and {more} more' if more > 0 else ''}"]
    if lines:
        body += ["", f"Last {len(lines)} lines of {step.name if step else 'the log'}:", *lines]
    # What the rows hold is masked already; the alert leaves the machine, so once more.
    masker = Masker(pipeline.service.secrets)
    alert_channels(
        services.who_hears(pipeline),
        title=masker.mask(f"{describe(pipeline)} {verb} at {step.name if step else 'its start'}"),
        body=masker.mask("\n".join(body)),
        link=reverse("pipeline_detail", args=[pipeline.pk]),
    )


def commit_line(pipeline: Pipeline) -> str:
    if not pipeline.commit:
        return f"Commit: not checked out (branch {pipeline.branch})"
    subject = pipeline.message.splitlines()[0] if pipeline.message else ""
    return f"Commit: {pipeline.commit[:12]} by {pipeline.author}: {subject}"


RUN_NOW = (Trigger.UI, Trigger.API, Trigger.CLI)


def pusher_line(pipeline: Pipeline) -> str:
    """Who pushed (or ran it now), so the alert reaches and names the person to act."""
    said = "Started by" if pipeline.trigger in RUN_NOW else "Pushed by"
    if pipeline.pusher is not None:
        return f"{said}: {pipeline.pushed_by}"
    if pipeline.pusher_email:
        return (
            f"{said}: {pipeline.pusher_email}, who is not a member of "
            f"{pipeline.service.org.name} (so only the service's channels hear about it)"
        )
    return f"{said}: {pipeline.triggered_by or 'onwatch'} ({pipeline.get_trigger_display()})"


def alert_if_fixed(pipeline: Pipeline) -> None:
    """The first green pipeline after a red one (of the same branch) says so."""
    before = (
        Pipeline.objects.filter(
            service=pipeline.service, branch=pipeline.branch, pk__lt=pipeline.pk
        )
        .filter(state__in=[State.SUCCEEDED, State.FAILED, State.INTERRUPTED])
        .order_by("-pk")
        .first()
    )
    if before is None or before.state == State.SUCCEEDED:
        return
    # To the same people as the failure: the service's channels and whoever pushed it.
    alert_channels(
        services.who_hears(before),
        title=f"{describe(pipeline)} passes again: fixed",
        body="\n".join(
            [
                f"The tests pass again after pipeline #{before.pk} {before.state}.",
                commit_line(pipeline),
                pusher_line(pipeline),
            ]
        ),
        link=reverse("pipeline_detail", args=[pipeline.pk]),
        notify_type="success",
    )
