"""Where pipelines work on this machine (ONWATCH_WORK_DIR): each run's workspace, each
service's dependency caches, and the tools onwatch lends the steps (its own uv). Outside
the data directory, in folders the step user may pass through (as root, steps run as
another user, who must reach them and nothing else of onwatch's)."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from functools import cache
from pathlib import Path

from django.conf import settings

from onwatch.deploys import sandbox, svcusers
from onwatch.deploys.models import Pipeline, Service, State

log = logging.getLogger("onwatch.workdir")

# Folders of the work directory the step user passes through but cannot list.
PASS_THROUGH = 0o711
# A service's own folders, where it runs as a user of its own: onwatch's, passed through by
# that user's group only.
SERVICE_ONLY = 0o710
CACHES = {"uv": "UV_CACHE_DIR", "pip": "PIP_CACHE_DIR", "npm": "npm_config_cache"}
SYSTEM_CERTIFICATES = "/etc/ssl/certs/ca-certificates.crt"
CERTIFICATE_VARIABLES = ("SSL_CERT_FILE", "PIP_CERT", "NODE_EXTRA_CA_CERTS")
# In a service's bytecode cache: a folder of each pipeline's own, by its workspace's name.
PIPELINES_BYTECODE = ".pipelines"
VENV = ".venv"  # where uv makes a project's virtualenv, and `uv run` finds it
NO_FOLLOW = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def work_folder(*parts: str) -> Path:
    """A folder of ONWATCH_WORK_DIR, made on first use: outside the data directory, and
    open to the step user to pass through (as root, steps run as another user)."""
    root = Path(settings.WORK_DIR)
    path = root.joinpath(*parts)
    for folder in [root, *(root.joinpath(*parts[: i + 1]) for i in range(len(parts)))]:
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(PASS_THROUGH)
    return path


def workspace_of(pipeline: Pipeline) -> Path:
    return service_folder(pipeline.service_id) / str(pipeline.pk)


def service_folder(service_id: int) -> Path:
    """The service's pipelines' workspaces and its dependency caches, side by side: a
    sandbox that binds it whole lets uv hard-link from its cache into a workspace (a
    mount between them would make it copy every file, a second or more per build)."""
    return Path(settings.WORK_DIR) / "workspaces" / str(service_id)


def mirror_of(service_id: int) -> Path:
    """The service's mirror of its remote repository (git.update_mirror): onwatch's alone,
    in a folder no step user may pass through, and bound into no sandbox."""
    mirrors = work_folder("mirrors")
    if stat.S_IMODE(mirrors.stat().st_mode) != stat.S_IRWXU:
        mirrors.chmod(stat.S_IRWXU)
    return mirrors / f"{service_id}.git"


def release_folder(service_id: int, release_id: int) -> Path:
    """A release's own folder: its checkout, built once, then never changed by onwatch."""
    return work_folder("releases", str(service_id)) / str(release_id)


def service_user(service_id: int) -> str:
    """The user the service's steps and processes run as (svcusers.ensure), its
    workspaces and caches closed to every other: "" where services share one user."""
    try:
        user = svcusers.ensure(service_id)
    except svcusers.UserError as e:
        raise sandbox.SandboxError(str(e)) from None
    if user:
        close_to(work_folder("workspaces", str(service_id)), user)
    return user


def close_to(folder: Path, user: str) -> None:
    """Only onwatch and `user` may pass through `folder`, which stays onwatch's: the
    service's processes cannot replace what it holds."""
    gid = pwd.getpwnam(user).pw_gid
    st = folder.stat()
    if (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) != (0, gid, SERVICE_ONLY):
        os.chown(folder, 0, gid)
        folder.chmod(SERVICE_ONLY)


def kept_for(release: Path) -> str:
    """The user a live release's processes run as, as its files show (make_live hands them
    to that user), when the folder of the service's releases is closed to every other
    (own_releases); else "": another service's processes could still read them."""
    try:
        st, top = release.lstat(), release.parent.stat()
        name = pwd.getpwuid(st.st_uid).pw_name
    except (OSError, KeyError):
        return ""
    closed = (top.st_uid, top.st_gid, stat.S_IMODE(top.st_mode)) == (0, st.st_gid, SERVICE_ONLY)
    return name if closed else ""


def hand_to(folder: Path, user: str) -> None:
    """Make `folder` and all it holds `user`'s: a release built when every service ran as
    one step user becomes its service's own. Links are changed, never followed."""
    entry = pwd.getpwnam(user)
    owner = (entry.pw_uid, entry.pw_gid)
    st = folder.lstat()
    if (st.st_uid, st.st_gid) == owner or not stat.S_ISDIR(st.st_mode):
        return  # built as its user: all it holds is that user's already
    os.chown(folder, *owner, follow_symlinks=False)
    # dir_fd: a folder swapped for a link mid-walk cannot lead the chown elsewhere.
    for _root, dirs, files, root_fd in os.fwalk(folder, follow_symlinks=False):
        for name in dirs + files:
            os.chown(name, *owner, dir_fd=root_fd, follow_symlinks=False)


def caches_of(service: Service) -> dict[str, Path]:
    """The service's dependency caches, shared by its runs one at a time (Run.caches_held)."""
    return {name: work_folder("workspaces", str(service.pk), "caches", name) for name in CACHES}


def bytecode_cache(service: Service) -> Path:
    """Python's compiled files of the service's pipelines (PYTHONPYCACHEPREFIX): kept
    between its runs, never seen by another service's steps (it is in its folder)."""
    return work_folder("workspaces", str(service.pk), "caches", "bytecode")


def share_bytecode(cache: Path, workspace: Path, uv_python: Path) -> Path:
    """Where a pipeline's Python keeps what it compiles (PYTHONPYCACHEPREFIX): a fresh
    folder in the service's cache, the bytecode of each file at the file's own path,
    removed with the workspace. Only folders whose files stay as they were are shared with
    the service's next pipelines, by links to the cache's own mirror of them: the system's
    (read-only in the sandbox), uv's Python and the workspace's virtualenv, whose files are
    hard links from uv's cache with the times they were unpacked (Python checks time and
    size). Not the checkout or /tmp: another commit's file of the same size written within
    the same second would pass for the last one. Made without following links: the step
    user owns the cache and may have left some."""
    fd = _inside(cache, Path("/", PIPELINES_BYTECODE))
    try:
        with contextlib.suppress(FileNotFoundError):
            _unlink(workspace.name, fd)
        os.mkdir(workspace.name, dir_fd=fd)
    finally:
        os.close(fd)
    prefix = Path("/", PIPELINES_BYTECODE, workspace.name)
    shared = {Path(d): Path(d) for d in (*sandbox.SYSTEM_DIRS, uv_python)}
    # One for every workspace: its path differs from one pipeline to the next.
    shared[workspace / VENV] = Path("/", VENV)
    for folder, kept in shared.items():
        os.close(_inside(cache, kept))
        fd = _inside(cache, prefix / folder.parent.relative_to("/"))
        try:
            os.symlink(cache / kept.relative_to("/"), folder.name, dir_fd=fd)
        finally:
            os.close(fd)
    return pipeline_bytecode(cache, workspace)


def pipeline_bytecode(cache: Path, workspace: Path) -> Path:
    """The folder share_bytecode makes for the pipeline of `workspace` (known before)."""
    return cache / PIPELINES_BYTECODE / workspace.name


def unshare_bytecode(cache: Path, workspace: Path) -> None:
    """The pipeline's own bytecode, gone with its workspace (what is shared stays)."""
    try:
        fd = _inside(cache, Path("/", PIPELINES_BYTECODE), make=False)
    except OSError:
        return  # never made, or not a way of folders: nothing of onwatch's to remove
    try:
        with contextlib.suppress(FileNotFoundError):
            _unlink(workspace.name, fd)
    finally:
        os.close(fd)


def _inside(cache: Path, folder: Path, make: bool = True) -> int:
    """An open descriptor of `folder`'s mirror in `cache`, each folder on the way opened
    (and made) without following a link; anything else in the way is removed."""
    fd = os.open(cache, NO_FOLLOW)
    for part in folder.relative_to(folder.anchor).parts:
        try:
            below = _folder_in(fd, part, make)
        finally:
            os.close(fd)
        fd = below
    return fd


def _folder_in(fd: int, name: str, make: bool) -> int:
    try:
        return os.open(name, NO_FOLLOW, dir_fd=fd)
    except OSError as e:
        # Missing, or a link or a file where a folder should be.
        if not make or e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            raise
    with contextlib.suppress(FileNotFoundError):
        _unlink(name, fd)
    os.mkdir(name, dir_fd=fd)
    return os.open(name, NO_FOLLOW, dir_fd=fd)


def _unlink(name: str, dir_fd: int) -> None:
    """A link or file, or a folder the step made there (with all it holds)."""
    if stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def uv_python(caches: dict[str, Path]) -> Path:
    return caches["uv"] / "python"


def tool_env(caches: dict[str, Path], linked: bool = False) -> dict[str, str]:
    """linked: the cache and the workspace are on one mount in the sandbox (sandbox.Step's
    shared_root), so uv may hard-link its files rather than copy them."""
    env = {variable: str(caches[name]) for name, variable in CACHES.items()}
    # A Python uv fetches for the project is kept with the cache, not in a per-run HOME.
    env["UV_PYTHON_INSTALL_DIR"] = str(uv_python(caches))
    # Else they are separate mounts, where hard links cannot cross: uv would try, fail
    # and say so in every build's log before copying. A release's build copies anyway:
    # its folder outlives the run, and must not change with the cache.
    env["UV_LINK_MODE"] = "hardlink" if linked else "copy"
    if Path(SYSTEM_CERTIFICATES).is_file():
        # The machine's trusted certificates (the sandbox shows /etc/ssl/certs), not the
        # list each tool carries: behind a company's TLS proxy, only these reach PyPI/npm.
        env |= {name: SYSTEM_CERTIFICATES for name in CERTIFICATE_VARIABLES}
        env[uv_certificates_variable()] = "true"
    return env


def step_problem() -> str | None:
    """Why no step can run here, in one line (the service page shows it, the pipeline's
    first step fails with it), or None."""
    try:
        workspaces = work_folder("workspaces")
    except OSError as e:
        if e.errno == errno.ENOSPC:
            return disk_full(FULL_BYTES + 1)
        return (
            f"onwatch cannot make its work folder {settings.WORK_DIR} ({e.strerror}); set "
            "ONWATCH_WORK_DIR to a folder it can write"
        )
    floor = settings.WORK_MIN_FREE_MB * 1024**2
    if disk_full(floor, needed=True):
        removals_done()  # the space of a workspace still being removed is about to be free
    return (
        disk_full(floor, needed=True)
        or sandbox.problem()
        or sandbox.out_of_reach("folder", workspaces)
    )


# Less than this left after a step failed: the disk filled up, whatever the step printed.
FULL_BYTES = 1024**2


def disk_full(floor: int = FULL_BYTES, needed: bool = False) -> str | None:
    """The one line for a work folder whose disk has less than `floor` bytes free (with
    `needed`, naming the floor a pipeline needs to start), or None."""
    try:
        st = os.statvfs(settings.WORK_DIR)
    except OSError:
        return None
    # What an unprivileged user may still write: the step user's share, not root's.
    free = st.f_bavail * st.f_frsize
    if free >= floor:
        return None
    least = f", less than the {sandbox.size(floor)} a pipeline needs to start" if needed else ""
    return (
        f"the disk holding onwatch's work folder is full: {settings.WORK_DIR} has "
        f"{sandbox.size(free)} free{least}; free space and run again"
    )


@cache
def uv_certificates_variable() -> str:
    """How onwatch's uv is told to trust the machine's certificates: newer ones call it
    UV_SYSTEM_CERTS and print a warning into every build's log for the older name."""
    uv = onwatch_uv()
    if uv is None:
        return "UV_NATIVE_TLS"
    asked = subprocess.run(
        [str(uv), "help", "sync"], capture_output=True, text=True, env=sandbox.LAUNCH_ENV
    )
    return "UV_SYSTEM_CERTS" if "UV_SYSTEM_CERTS" in asked.stdout else "UV_NATIVE_TLS"


@cache
def onwatch_uv() -> Path | None:
    """The uv onwatch itself runs with: on its PATH, the `uv` package of its Python, that
    of the Python its virtualenv was made from, or the one scripts/python-env.sh installed
    beside the checkout when the machine had none (the same order it looks in)."""
    if found := shutil.which("uv"):
        return Path(found).resolve()
    beside = Path(__file__).resolve().parents[2] / ".uv" / "bin" / "uv"
    for python in dict.fromkeys([sys.executable, getattr(sys, "_base_executable", "")]):
        if not python:
            continue
        asked = subprocess.run(
            [python, "-c", "import uv; print(uv.find_uv_bin())"],
            capture_output=True,
            text=True,
            env=sandbox.LAUNCH_ENV,
        )
        if asked.returncode == 0 and asked.stdout.strip():
            return Path(asked.stdout.strip()).resolve()
    return beside.resolve() if os.access(beside, os.X_OK) else None


def tools_folder() -> Path | None:
    """A read-only folder for the steps with onwatch's own uv in its bin/: the uv projects
    onwatch recognises need it, and the one onwatch runs with may sit where the step user
    cannot reach (root's home) or outside the sandbox's system folders."""
    uv = onwatch_uv()
    if uv is None:
        return None
    copy = work_folder("tools", "bin") / "uv"
    if not copy.exists() or _version_of(copy) != _version_of(uv):
        fd, temporary = tempfile.mkstemp(dir=copy.parent, prefix=".uv-")
        os.close(fd)
        shutil.copy2(uv, temporary)  # with its modification time, which says its version
        Path(temporary).chmod(0o755)
        os.replace(temporary, copy)  # whole or not at all, for a step starting meanwhile
    return copy.parent.parent


def _version_of(binary: Path) -> tuple[int, int]:
    st = binary.stat()
    return st.st_size, st.st_mtime_ns


def remove_workspace(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path, onexc=_make_removable)


# Where discard() moves what it removes: onwatch's alone, outside every service's folder.
TRASH = "trash"


def discard(path: Path) -> None:
    """Remove `path` (a workspace) from where it was at once, by moving it into the work
    folder's trash, and then for good in a thread of its own: a large checkout takes its
    time, which the worker would otherwise spend before its next job. The next pipeline
    of the service finds it gone; what a worker that stopped left in the trash goes when
    the next one starts (remove_leftovers)."""
    if not path.exists():
        return
    trash = work_folder(TRASH)
    trash.chmod(stat.S_IRWXU)
    # Named after this process: a worker starting beside it removes only what a worker
    # that is gone left (remove_leftovers).
    moved = trash / f"{os.getpid()}-{path.parent.name}-{path.name}-{time.monotonic_ns()}"
    try:
        os.rename(path, moved)
    except OSError:
        remove_workspace(path)  # not on the trash's disk (a folder mounted there): here
        return
    removal = threading.Thread(target=_remove_quietly, args=(moved,), name="workspace-removal")
    with _removals_lock:
        _removals.add(removal)
    removal.start()


_removals: set[threading.Thread] = set()
_removals_lock = threading.Lock()


# rm, at the lowest priority: the workspace's virtualenv alone is thousands of files, and
# removed by Python's rmtree in this process it took a third of the worker's processor
# time and its interpreter lock, beside the next pipeline and the cores its steps need.
REMOVE = ["nice", "-n", "19", "rm", "-rf", "--one-file-system", "--"]


def _remove_quietly(path: Path) -> None:
    try:
        if not _removed_by_rm(path):
            remove_workspace(path)  # a folder rm may not open (not root): opened first
    except OSError:
        # Nobody waits for it: said in onwatch's log, and tried again by the next worker.
        log.exception("could not remove %s; remove it by hand if it stays", path)
    finally:
        with _removals_lock:
            _removals.discard(threading.current_thread())


def _removed_by_rm(path: Path) -> bool:
    try:
        done = subprocess.run([*REMOVE, str(path)], env=sandbox.LAUNCH_ENV, capture_output=True)
    except OSError:
        return False  # no nice or rm here
    return done.returncode == 0 and not path.exists()


def removals_done(seconds: float = 60) -> bool:
    """Wait (at most `seconds`) for what discard() is still removing in this process; whether
    there was any."""
    with _removals_lock:
        pending = list(_removals)
    deadline = time.monotonic() + seconds
    for removal in pending:
        removal.join(max(0.0, deadline - time.monotonic()))
    return bool(pending)


def _make_removable(fn: object, p: str, exc: BaseException) -> None:
    """Tools leave read-only files and folders (Go's module cache, git's objects): open the
    folder holding `p` (and `p`, a folder) to onwatch, then remove it. Links are never
    followed: the step made them, and one could lead to onwatch's own files."""
    parent = os.path.dirname(p)
    if not stat.S_ISDIR(os.lstat(parent).st_mode):
        raise exc
    os.chmod(parent, stat.S_IRWXU)
    try:
        mode = os.lstat(p).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        os.chmod(p, stat.S_IRWXU)
        shutil.rmtree(p, onexc=_make_removable)
    else:
        os.unlink(p)  # a link itself, not what it leads to


def remove_leftovers() -> list[Path]:
    """Workspaces a worker of this machine that died could not remove (a killed worker
    runs no clean-up, and the reaper that marks its pipeline interrupted may run on
    another machine): those of pipelines that ended or are gone, and of pipelines whose
    worker was a process of this machine that no longer exists. Those of pipelines still
    running in another worker here stay; so do the caches of services that still exist.
    Returns what was removed."""
    top = Path(settings.WORK_DIR) / "workspaces"
    found = {int(p.name): p for p in top.glob("*/*") if p.is_dir() and p.name.isdigit()}
    running = Pipeline.objects.filter(pk__in=found, state__in=(State.QUEUED, State.RUNNING))
    alive = {p.pk for p in running.select_related("job") if not _worker_died(p)}
    workspaces = [path for pk, path in found.items() if pk not in alive]
    removed = list(workspaces)  # a copy: what follows adds folders that are not workspaces
    folders = {int(p.name): p for p in top.glob("*") if p.is_dir() and p.name.isdigit()}
    kept = set(Service.objects.filter(pk__in=folders).values_list("pk", flat=True))
    removed += [path for pk, path in folders.items() if pk not in kept]  # deleted services'
    # Caches where onwatch kept them before they moved beside the workspaces.
    removed += [p for p in (Path(settings.WORK_DIR) / "caches").glob("*") if p.is_dir()]
    # Mirrors of deleted services' repositories.
    found_mirrors = (Path(settings.WORK_DIR) / "mirrors").glob("*.git")
    mirrors = {int(p.stem): p for p in found_mirrors if p.stem.isdigit()}
    kept_mirrors = set(Service.objects.filter(pk__in=mirrors).values_list("pk", flat=True))
    removed += [path for pk, path in mirrors.items() if pk not in kept_mirrors]
    # What discard() moved away but a worker that stopped did not remove.
    trash = (Path(settings.WORK_DIR) / TRASH).glob("*")
    removed += [p for p in trash if p.is_dir() and _owner_gone(p.name)]
    for path in removed:
        log.info("removing the workspace %s left by a worker that stopped", path)
        with contextlib.suppress(FileNotFoundError):
            remove_workspace(path)
    for path in workspaces:  # their pipelines' own bytecode, if their service is kept
        unshare_bytecode(path.parent / "caches" / "bytecode", path)
    return removed


def _worker_died(pipeline: Pipeline) -> bool:
    """Whether its job's worker was a process of this machine that is gone (a worker's
    name is host:pid:thread)."""
    host, _, rest = (pipeline.job.worker if pipeline.job else "").partition(":")
    pid = rest.partition(":")[0]
    return host == socket.gethostname() and pid.isdigit() and _pid_gone(pid)


def _owner_gone(trashed: str) -> bool:
    """Whether the process that moved `trashed` into the trash (<pid>-<service>-<pipeline>-
    <ns>) is gone; one named before it carried its owner is old enough to be."""
    pid, *rest = trashed.split("-")
    return len(rest) != 3 or not pid.isdigit() or _pid_gone(pid)


def _pid_gone(pid: str) -> bool:
    """Whether no process of this machine has the id `pid`."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def remove_service_folders(service_id: int) -> None:
    """A deleted service's workspaces, dependency caches and releases on this machine (those on
    other machines go when a worker starts there, see remove_leftovers)."""
    top = Path(settings.WORK_DIR)
    for kind in ("workspaces", "caches", "releases"):
        remove_workspace(top / kind / str(service_id))
    remove_workspace(top / "mirrors" / f"{service_id}.git")
    (top / "caches" / f"{service_id}.lock").unlink(missing_ok=True)
