"""git, the one place that builds its command lines and reads its failures: which URLs a
service may use, and fetching one commit of a branch into a fresh workspace."""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from onwatch.core import ssh

FETCH_SECONDS = 600
LOCAL_SECONDS = 60
# What a pipeline may fetch from: never git's "ext::" (it runs a command) or other helpers.
PROTOCOLS = "file:https:http:ssh:git"
# Neither user nor host may start with "-": ssh would read it as an option.
SCP_LIKE = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9_][A-Za-z0-9_.+-]*)@)?(?P<host>[A-Za-z0-9_][A-Za-z0-9_.-]*)"
    r":(?P<path>.+)$"
)
LOOPBACK = ("localhost", "127.0.0.1", "::1")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class GitError(Exception):
    """git could not do what was asked; the message is one line that says what to do."""


def url_problem(url: str) -> str | None:
    """Why git must not fetch `url`, or None when it may."""
    if not url or url != url.strip() or any(c in url for c in "\n\r\x00"):
        return "the repository's address must be one line without spaces around it"
    if url.startswith("-"):
        return "a repository's address cannot start with -"
    if url.startswith("/"):
        return None
    parts = urlsplit(url)
    if parts.password:
        # It would be stored and shown as the address; the deploy key is the way in.
        return "put no password or token in the address; use its SSH address and the deploy key"
    if parts.scheme in ("https", "ssh", "file"):
        return None if parts.scheme == "file" or parts.hostname else "the address names no host"
    if parts.scheme in ("http", "git"):
        if parts.hostname in LOOPBACK:
            return None
        return f"{parts.scheme}:// sends the code unencrypted; use https:// or ssh://"
    if scp_like(url):
        return None
    return (
        "use an address git can fetch: https://host/path, ssh://user@host/path, "
        "user@host:path or a path on this machine"
    )


def local_path(url: str) -> Path | None:
    """The folder on this machine a plain path or file:// address names, or None."""
    if url.startswith("/"):
        return Path(url)
    parts = urlsplit(url)
    return Path(unquote(parts.path)) if parts.scheme == "file" else None


def ssh_endpoint(url: str) -> ssh.Endpoint | None:
    """Where an SSH address connects (for its host key), or None for other addresses."""
    parts = urlsplit(url)
    if parts.scheme == "ssh" and parts.hostname:
        return ssh.endpoint(parts.hostname, parts.port, parts.username or "")
    found = scp_like(url)
    return ssh.endpoint(found.group("host"), None, found.group("user") or "") if found else None


def scp_like(url: str) -> re.Match[str] | None:
    """`[user@]host:path`, as git reads an address with a colon before any slash and no
    "://". Never "transport::address": git hands that to a helper (ext:: runs commands)."""
    if "://" in url or "::" in url or url.startswith("/"):
        return None
    return SCP_LIKE.match(url)


@dataclass(frozen=True)
class Commit:
    sha: str
    author: str
    message: str


def environment(home: Path, ssh_command: str = "") -> dict[str, str]:
    """Everything git sees: no prompts, no user or system configuration, English words."""
    env = {
        "PATH": os.environ.get("PATH", SYSTEM_PATH),
        "HOME": str(home),
        "LANG": "C",
        "LC_ALL": "C",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_ALLOW_PROTOCOL": PROTOCOLS,
    }
    if ssh_command:
        env["GIT_SSH_COMMAND"] = ssh_command
    return env


def _never() -> bool:
    return False


# How often a running git is asked whether it is to stop (its end is seen at once).
STOP_POLL_SECONDS = 0.2


def git(
    args: list[str], env: dict[str, str], seconds: float, stopped: Callable[[], bool] = _never
) -> subprocess.CompletedProcess[str]:
    """git's answer; stopped, or out of time, it is killed with what it started (ssh,
    pack-objects), which would otherwise go on writing.

    Its output goes to files in memory and its end is seen through a pidfd: this thread
    wakes when git exits (and each STOP_POLL_SECONDS, to ask whether to stop it). With
    pipes it woke for each chunk, each end of file and each step of Popen.wait's sleeping
    poll, and each wake waits for the GIL, which the worker's other threads hold while
    they set a sandbox up: beside a thread holding the GIL, a local clone and a log took
    110-130 ms instead of 55. Nor does a child git
    leaves behind holding its output (ssh's control master, say) keep it waiting."""
    with _memory_file("git-out") as out, _memory_file("git-err") as err:
        proc = _started(args, env, out, err)
        try:
            with _pidfd(proc.pid) as pidfd:
                _wait(proc, pidfd, args, seconds, stopped)
        except BaseException:  # GitError said so already; anything else leaves none running
            if proc.returncode is None:
                _kill(proc)
            raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, _read(out), _read(err))


def _started(args: list[str], env: dict[str, str], out: int, err: int) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            ["git", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise GitError("git is not installed; install it (apt install git)") from None


def _wait(
    proc: subprocess.Popen[bytes],
    pidfd: int,
    args: list[str],
    seconds: float,
    stopped: Callable[[], bool],
) -> None:
    deadline = time.monotonic() + seconds
    while not select.select([pidfd], [], [], STOP_POLL_SECONDS)[0]:
        if stopped() or time.monotonic() > deadline:
            _kill(proc)
            raise GitError(_why_killed(args, seconds, stopped()))
    proc.wait()


@contextlib.contextmanager
def _memory_file(name: str) -> Iterator[int]:
    fd = os.memfd_create(name)
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def _pidfd(pid: int) -> Iterator[int]:
    fd = os.pidfd_open(pid)
    try:
        yield fd
    finally:
        os.close(fd)


def _read(fd: int) -> str:
    """As text, line ends as a pipe read as text gives them (a remote's progress ends its
    lines in CR)."""
    size = os.lseek(fd, 0, os.SEEK_END)
    if not size:
        return ""
    text = os.pread(fd, size, 0).decode(errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _why_killed(args: list[str], seconds: float, stopped: bool) -> str:
    what = _command(args)
    if stopped:
        return f"git {what} was stopped before it was done"
    return (
        f"git {what} gave no answer within {seconds:g} s; check that the repository's server is up"
    )


def _command(args: list[str]) -> str:
    """The git command `args` run, past the options before it (-C folder, -c name=value)."""
    at = 0
    while at < len(args) - 1 and args[at] in ("-C", "-c"):
        at += 2
    return args[at]


def fetch(
    workspace: Path,
    url: str,
    branch: str,
    env: dict[str, str],
    ssh_log: Callable[[], str] = str,
    stopped: Callable[[], bool] = _never,
) -> str:
    """Fetch `branch` of `url` into a new repository at `workspace`; git's own words.
    `ssh_log` reads what ssh said: it logs to a file (core/ssh.py), not to git's stderr."""
    workspace.mkdir(parents=True, exist_ok=True)
    # No template: its sample hooks are files to copy for a repository that runs none.
    ran = git(["init", "--quiet", "--template=", str(workspace)], env, LOCAL_SECONDS)
    if ran.returncode != 0:
        raise GitError(f"could not make the workspace: {last_line(ran)}")
    ref = f"+refs/heads/{branch}:refs/remotes/origin/{branch}"
    # One pack as it came, not a file per object: below 100 objects git writes each one
    # apart, which took a small repository's checkout some 100 ms more.
    # No maintenance either: the workspace is gone after the run, and it is a process more.
    fetch = ["-c", "fetch.unpackLimit=1", "fetch", "--no-tags", "--quiet", "--no-auto-maintenance"]
    ran = git(["-C", str(workspace), *fetch, "--", url, ref], env, FETCH_SECONDS, stopped)
    if ran.returncode != 0:
        raise GitError(fetch_failure(ran, url, branch, ssh_log()))
    return (ran.stdout + ran.stderr).strip()


def clone_local(
    workspace: Path,
    source: Path,
    branch: str,
    env: dict[str, str],
    linked: bool,
    stopped: Callable[[], bool] = _never,
) -> bool:
    """`branch` of a repository on this machine into the empty folder `workspace`, its
    objects hard-linked (`linked`; copied when the source is on another disk) or copied as
    files: a fetch packs them and unpacks them again through a pipe (twice the time for a
    small repository, more for a large one). Links only where steps run as another user,
    who must not own them (sandbox._hand_over): git never changes an object file (it
    writes new ones), so the workspace needs nothing of the source once cloned, and the
    source nothing of the workspace. Whether it was cloned; when not (the branch is
    missing, say), the caller fetches, whose failure says what to do. The workspace names
    no remote, as a fetched one does not."""
    copied = [] if linked else ["--no-hardlinks"]
    # Checked out by the clone itself, the branch's newest (usually the pipeline's commit:
    # see checked_out), in the same process.
    clone = ["clone", "--quiet", "--single-branch", "--no-tags", "--template="]
    args = [*clone, *copied, "--branch", branch, "--", str(source), str(workspace)]
    ran = git(args, env, LOCAL_SECONDS, stopped)
    if ran.returncode != 0:
        shutil.rmtree(workspace / ".git", ignore_errors=True)
        return False
    _forget_source(workspace / ".git" / "config")
    return True


def _forget_source(config: Path) -> None:
    """The clone's own configuration without its remote and the branch that follows it:
    the source's path means nothing in the sandbox (a fetched workspace names none). The
    file is the one git wrote a moment ago, one section header a line."""
    kept, dropped = [], False
    for line in config.read_text().splitlines(keepends=True):
        if line.startswith("["):
            dropped = line.startswith(('[remote "', '[branch "'))
        if not dropped:
            kept.append(line)
    config.write_text("".join(kept))


def update_mirror(
    mirror: Path,
    url: str,
    branch: str,
    env: dict[str, str],
    ssh_log: Callable[[], str] = str,
    stopped: Callable[[], bool] = _never,
) -> str:
    """Fetch `branch` of `url` into `mirror`, a bare repository made on first use: the next
    fetch brings only what is new, not the whole history again. Git's own words."""
    kept = (mirror / "HEAD").is_file()
    ran = _fetch_into_mirror(mirror, url, branch, env, stopped)
    said = ssh_log() if ran.returncode != 0 else ""
    if ran.returncode != 0 and kept and _known_failure(ran, url, branch, said) is None:
        # It is only a cache, and nothing else here writes to it (the caller holds the
        # service's caches): one a killed fetch left a lock in, or whose branch became a
        # folder of branches (feature -> feature/x), is made anew rather than fail for good.
        shutil.rmtree(mirror)
        ran = _fetch_into_mirror(mirror, url, branch, env, stopped)
        said = ssh_log() if ran.returncode != 0 else ""
    if ran.returncode != 0:
        raise GitError(fetch_failure(ran, url, branch, said))
    return (ran.stdout + ran.stderr).strip()


def _fetch_into_mirror(
    mirror: Path, url: str, branch: str, env: dict[str, str], stopped: Callable[[], bool]
) -> subprocess.CompletedProcess[str]:
    if not (mirror / "HEAD").is_file():
        ran = git(["init", "--quiet", "--bare", str(mirror)], env, LOCAL_SECONDS)
        if ran.returncode != 0:
            raise GitError(f"could not make the service's mirror: {last_line(ran)}")
    ref = f"+refs/heads/{branch}:refs/heads/{branch}"
    # Its packs are kept tidy as git sees fit, but now, not in a process left behind.
    tidy = ["-c", "gc.autoDetach=false", "-c", "maintenance.autoDetach=false"]
    # Each fetch kept as one pack, not a file per object: a workspace is cloned from the
    # mirror by hard-linking its files (clone_local), two a pack, hundreds when loose.
    fetch = [*tidy, "-c", "fetch.unpackLimit=1", "fetch", "--no-tags", "--quiet"]
    return git(["-C", str(mirror), *fetch, "--", url, ref], env, FETCH_SECONDS, stopped)


def checkout(workspace: Path, branch: str, commit: str, env: dict[str, str]) -> Commit:
    """Check out `commit` (the branch's newest when empty) and say what it is."""
    wanted = commit or f"refs/remotes/origin/{branch}"
    quiet = ["-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach"]
    ran = git(["-C", str(workspace), *quiet, wanted, "--"], env, LOCAL_SECONDS)
    if ran.returncode != 0:
        raise GitError(f"commit {commit} is not on branch {branch}: {last_line(ran)}")
    return _head(workspace, env)


def checked_out(workspace: Path, branch: str, commit: str, env: dict[str, str]) -> Commit:
    """`commit` checked out in a clone of `branch` (clone_local), and what it is: the clone
    has the branch's newest (on the branch), and checks out an older one only when asked
    for it (detached, as checkout leaves it), a process less in the usual case."""
    head = _head(workspace, env)
    return head if commit in ("", head.sha) else checkout(workspace, branch, commit, env)


def _head(workspace: Path, env: dict[str, str]) -> Commit:
    shown = git(
        ["-C", str(workspace), "log", "-1", "--format=%H%x00%an <%ae>%x00%B"], env, LOCAL_SECONDS
    )
    if shown.returncode != 0:
        raise GitError(f"could not read the commit: {last_line(shown)}")
    sha, author, message = [*shown.stdout.split("\x00"), "", ""][:3]
    return Commit(sha.strip(), author.strip(), message.strip())


def last_line(ran: subprocess.CompletedProcess[str], also: str = "") -> str:
    lines = [ln.strip() for ln in (ran.stderr or ran.stdout).splitlines() if ln.strip()]
    # git follows a failed connection with advice ("Please make sure you have the correct
    # access rights"); what went wrong is its fatal line, or what ssh said.
    fatal = [ln for ln in lines if ln.startswith("fatal:") and "Could not read from" not in ln]
    said_by_ssh = [ln.strip() for ln in also.splitlines() if ln.strip()]
    found = fatal or said_by_ssh or lines
    return found[-1][:300] if found else f"git exited with {ran.returncode}"


def fetch_failure(
    ran: subprocess.CompletedProcess[str], url: str, branch: str, ssh_said: str = ""
) -> str:
    return _known_failure(ran, url, branch, ssh_said) or (
        f"could not fetch {url}: {last_line(ran, ssh_said)}; check the address and that its "
        "server is up"
    )


def _known_failure(
    ran: subprocess.CompletedProcess[str], url: str, branch: str, ssh_said: str
) -> str | None:
    """What to do about a failure whose cause git or ssh names, or None."""
    said = ran.stderr + ran.stdout + ssh_said
    if "couldn't find remote ref" in said:
        return f"the branch {branch} does not exist in {url}; check the service's branch"
    if "Permission denied (publickey" in said:
        return (
            f"{url} refused onwatch's deploy key; add the public key shown on the service's "
            "page to the repository's deploy keys"
        )
    if "Host key verification failed" in said or "REMOTE HOST IDENTIFICATION" in said:
        return (
            f"the SSH server of {url} no longer shows the host key onwatch pinned; if its key "
            "changed on purpose, forget the pinned key on the service's page and run it again"
        )
    return None


LS_REMOTE_SECONDS = 30


def newest_commit(
    url: str, branch: str, env: dict[str, str], ssh_log: Callable[[], str] = str
) -> str:
    """The commit `branch` of `url` points at now (`git ls-remote`), without fetching."""
    ran = git(["ls-remote", "--heads", "--", url, f"refs/heads/{branch}"], env, LS_REMOTE_SECONDS)
    if ran.returncode != 0:
        raise GitError(fetch_failure(ran, url, branch, ssh_log()))
    for line in ran.stdout.splitlines():
        sha, _, ref = line.partition("\t")
        if ref.strip() == f"refs/heads/{branch}":
            return sha.strip()
    raise GitError(f"the branch {branch} does not exist in {url}; check the service's branch")


# Written into each pushed repository: tells git-serve which refs the push changed (its
# "old new ref" lines), in a file it names; without one (git run by hand) it does nothing.
POST_RECEIVE = """#!/bin/sh
# Written by onwatch: hands the pushed refs to the onwatch git-serve that runs this push.
if [ -n "$ONWATCH_PUSHED_REFS" ]; then cat >> "$ONWATCH_PUSHED_REFS"; fi
exit 0
"""


def init_bare(path: Path) -> None:
    """A bare repository at `path` (0700), made if missing, with onwatch's hook."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not (path / "HEAD").exists():
        ran = git(["init", "--quiet", "--bare", str(path)], environment(path.parent), LOCAL_SECONDS)
        if ran.returncode != 0:
            raise GitError(f"could not make the repository {path}: {last_line(ran)}")
        path.chmod(0o700)
    hook = path / "hooks" / "post-receive"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text(POST_RECEIVE)
    hook.chmod(0o700)


def serve_pack(program: str, path: Path, env: dict[str, str]) -> int:
    """`git receive-pack` or `git upload-pack` of `path` speaking git's protocol on this
    process's own stdin and stdout (the SSH connection); its exit code."""
    # A push kept as one pack, as a mirror's fetch (see _fetch_into_mirror).
    kept = ["-c", "receive.unpackLimit=1"] if program == "receive-pack" else []
    try:
        return subprocess.run(["git", *kept, program, str(path)], env=env).returncode
    except FileNotFoundError:
        raise GitError("git is not installed on the onwatch server (apt install git)") from None
