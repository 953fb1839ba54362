"""restic, the backup engine: the only module that runs it.

Builds command lines (the repository URL, password and the backend's credentials travel in
the environment, never in argv, where `ps` would show them; an SFTP repository's private key
sits in a private temporary file for the duration of one call), parses `--json` output into
typed results and turns failures into typed errors whose messages say what is wrong and
what to do.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from secrets import token_hex
from typing import IO, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from onwatch.config import env
from onwatch.core import ssh
from onwatch.core.network import is_loopback

Version = tuple[int, int, int]

# Flags newer than Debian's restic: used only where the installed one has them.
RETRY_LOCK = (0, 16, 0)  # waits for a lock instead of failing at once
# From 0.17 on, restic says what went wrong through its exit status as well.
EXIT_CODES = (0, 17, 0)
EXIT_NO_REPOSITORY, EXIT_LOCKED, EXIT_WRONG_PASSWORD = 10, 11, 12
# restic backup's "snapshot saved, but some files could not be read".
EXIT_INCOMPLETE = 3

# A server that refuses to delete (rest-server and `rclone serve restic` with
# --append-only) answers 403, on every one of restic's retries of the same delete.
REFUSED_DELETE = r"not removed, server response: 403"
# How long restic may take to remove its lock once interrupted, before it is killed.
INTERRUPT_GRACE = 30.0


class ResticError(Exception):
    """restic failed; the message is for people."""


class ResticMissing(ResticError):
    pass


class WrongPassword(ResticError):
    pass


class RepositoryUnreachable(ResticError):
    pass


class RepositoryLocked(ResticError):
    pass


class RepositoryDamaged(ResticError):
    pass


class SnapshotMissing(ResticError):
    """The snapshot asked for is not in the repository (any more)."""


class IncompleteBackup(ResticError):
    """The snapshot was saved but some files could not be read."""

    def __init__(self, message: str, snapshot_id: str) -> None:
        super().__init__(message)
        self.snapshot_id = snapshot_id


class ResticFailed(ResticError):
    pass


class NoSpace(ResticError):
    """A disk restic writes to (a restore target, the repository, its cache) is full."""


class AlreadyInitialised(ResticError):
    pass


class AccessDenied(ResticError):
    """The storage service or SFTP server refused onwatch's credentials."""


class SshKeyRefused(AccessDenied):
    pass


class DeletesRefused(ResticError):
    """The server refused to delete: the repository is append-only."""


class HostKeyChanged(ResticError):
    pass


class HostKeyUnknown(ResticError):
    pass


def binary() -> str:
    return env("ONWATCH_RESTIC", "restic")


def redact(url: str) -> str:
    """The URL without its password (rest:https://user:secret@host/ and the like)."""
    scheme, _, rest = url.partition(":")
    inner = rest if scheme in ("rest", "s3") else url
    if "://" not in inner:
        return url
    parts = urlsplit(inner)
    if parts.password is None:
        return url
    port = f":{parts.port}" if parts.port else ""
    hidden = urlunsplit(parts._replace(netloc=f"{parts.username}:***@{parts.hostname}{port}"))
    return f"{scheme}:{hidden}" if inner is rest else hidden


def plain_http_problem(url: str) -> str | None:
    """Why a REST or S3 URL must not be used: plain http to another machine carries the
    REST password (or the S3 traffic) unencrypted across the network. None when fine;
    loopback addresses are fine (a local rclone or MinIO)."""
    scheme, _, rest = url.partition(":")
    if scheme not in ("rest", "s3") or not rest.startswith("http://"):
        return None
    host = urlsplit(rest).hostname or ""
    if is_loopback(host):
        return None
    return (
        f"{scheme}:http:// to {host} would cross the network unencrypted; use "
        f"{scheme}:https:// (the server needs TLS: restic's REST server and rclone take "
        "--tls-cert and --tls-key, or put it behind Caddy)"
    )


# Environment variables a repository may set for its backend: the credentials restic's
# manual names, and nothing else. Not RESTIC_*/RCLONE_* (their *_COMMAND variables run
# programs), not LD_*/PATH, and not the ones that make a storage library read a local file
# or fetch a URL (AWS_SHARED_CREDENTIALS_FILE, GOOGLE_APPLICATION_CREDENTIALS, …).
BACKEND_ENV = frozenset(
    {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_DEFAULT_REGION",
        "B2_ACCOUNT_ID",
        "B2_ACCOUNT_KEY",
        "AZURE_ACCOUNT_NAME",
        "AZURE_ACCOUNT_KEY",
        "AZURE_ACCOUNT_SAS",
        "AZURE_ENDPOINT_SUFFIX",
        "GOOGLE_PROJECT_ID",
        "GOOGLE_ACCESS_TOKEN",
        *(
            f"OS_{n}"
            for n in (
                "AUTH_URL",
                "REGION_NAME",
                "USERNAME",
                "USER_ID",
                "PASSWORD",
                "TENANT_ID",
                "TENANT_NAME",
                "USER_DOMAIN_NAME",
                "USER_DOMAIN_ID",
                "PROJECT_NAME",
                "PROJECT_DOMAIN_NAME",
                "PROJECT_DOMAIN_ID",
                "TRUST_ID",
                "APPLICATION_CREDENTIAL_ID",
                "APPLICATION_CREDENTIAL_NAME",
                "APPLICATION_CREDENTIAL_SECRET",
                "STORAGE_URL",
                "AUTH_TOKEN",
            )
        ),
        "ST_AUTH",
        "ST_USER",
        "ST_KEY",
    }
)


def env_problem(extra: dict[str, str]) -> str | None:
    """Why these variables cannot be a repository's environment, or None."""
    for name, value in extra.items():
        if name not in BACKEND_ENV:
            return (
                f"{name} is not a storage credential variable onwatch passes to restic; use "
                "e.g. AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or B2_ACCOUNT_ID and "
                "B2_ACCOUNT_KEY"
            )
        if not isinstance(value, str) or "\0" in value:
            return f"{name} must be plain text"
    return None


@dataclass(frozen=True)
class SftpTarget:
    user: str
    host: str
    port: int | None
    path: str

    @property
    def endpoint(self) -> ssh.Endpoint:
        return ssh.Endpoint(self.host, self.port, self.user)


def sftp_target(url: str) -> SftpTarget | None:
    """Where an sftp: URL points, read as restic reads it (sftp:user@host:/path, or
    sftp://user@host:port//absolute/path); None for other URLs. ValueError for an sftp URL
    restic would refuse or whose parts could pass for ssh options."""
    if url.startswith("sftp://"):
        parts = urlsplit(url)
        target = SftpTarget(parts.username or "", parts.hostname or "", parts.port, parts.path[1:])
    elif url.startswith("sftp:"):
        where, colon, path = url.removeprefix("sftp:").partition(":")
        if not colon:
            raise ValueError(f"{url} names no path; write it as sftp:user@host:/path")
        user, _, host = where.rpartition("@")
        target = SftpTarget(user, host, None, path)
    else:
        return None
    if not target.host or not target.path:
        raise ValueError(f"{url} needs a host and a path, as in sftp:user@host:/srv/backups")
    ssh.endpoint(target.host, target.port, target.user)  # ValueError for option-like parts
    return target


@cache
def _version_of(path: str) -> Version:
    try:
        out = subprocess.run(
            [path, "version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except FileNotFoundError:
        raise ResticMissing(
            f"restic is not installed (looked for {path!r}); install it (apt install restic) "
            "or point ONWATCH_RESTIC at it"
        ) from None
    except subprocess.CalledProcessError as e:
        raise ResticFailed(f"`{path} version` failed: {e.stderr.strip()}") from None
    return parse_version(out)


def parse_version(text: str) -> Version:
    found = re.search(r"restic (\d+)\.(\d+)\.(\d+)", text)
    if not found:
        raise ResticFailed(f"cannot tell restic's version from {text.strip()[:80]!r}")
    major, minor, patch = (int(g) for g in found.groups())
    return major, minor, patch


def version() -> Version:
    return _version_of(binary())


# --- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupSummary:
    snapshot_id: str
    files: int
    bytes_processed: int
    bytes_added: int
    seconds: float


@dataclass(frozen=True)
class Snapshot:
    id: str
    short_id: str
    time: str
    paths: list[str]
    tags: list[str] = field(default_factory=list)

    def tag_value(self, key: str) -> str | None:
        for tag in self.tags:
            if tag.startswith(f"{key}:"):
                return tag.split(":", 1)[1]
        return None


def parse_backup(stdout: str) -> BackupSummary:
    for line in reversed(stdout.splitlines()):
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict) and msg.get("message_type") == "summary":
            return BackupSummary(
                snapshot_id=str(msg.get("snapshot_id", "")),
                files=int(msg.get("total_files_processed", 0)),
                bytes_processed=int(msg.get("total_bytes_processed", 0)),
                bytes_added=int(msg.get("data_added", 0)),
                seconds=float(msg.get("total_duration", 0.0)),
            )
    raise ResticFailed("restic backup ended without a summary; see the run log")


def parse_snapshots(stdout: str) -> list[Snapshot]:
    rows: list[dict[str, Any]] = json.loads(stdout or "[]") or []
    snaps = [
        Snapshot(
            id=r["id"],
            short_id=r.get("short_id", r["id"][:8]),
            time=r["time"],
            paths=list(r.get("paths") or []),
            tags=list(r.get("tags") or []),
        )
        for r in rows
    ]
    return sorted(snaps, key=lambda s: s.time)


# --- errors --------------------------------------------------------------------------------

_PATTERNS: list[tuple[str, type[ResticError], str]] = [
    (
        r"wrong password|no key found",
        WrongPassword,
        "the repository password is wrong for {url}; check the repository's password",
    ),
    (
        r"already locked|unable to create lock",
        RepositoryLocked,
        "{url} is locked by another restic ({detail}); wait for it to finish, or if it "
        "crashed on another machine, remove the lock with `restic unlock`",
    ),
    (
        r"ciphertext verification failed|repository contains errors|pack id does not match"
        r"|load\(<data/|there were \d+ errors|invalid data returned",
        RepositoryDamaged,
        "{url} is damaged ({detail}); run `restic check --read-data` and restore from another copy",
    ),
    (
        r"connection refused|no such host|unable to open config file|i/o timeout"
        r"|network is unreachable|is there a repository|connect:",
        RepositoryUnreachable,
        "{url} cannot be reached or holds no repository ({detail}); check the address, the "
        "network and that the repository was initialised",
    ),
    (
        REFUSED_DELETE,
        DeletesRefused,
        "{url} refused to delete ({detail}): it is append-only, so old backups there are "
        "removed by whoever runs that server, not by onwatch",
    ),
    (
        r"no matching ID found|failed to find snapshot",
        SnapshotMissing,
        "the snapshot is not in {url} any more ({detail}); someone removed it, or retention "
        "did — check the repository, then run a new backup",
    ),
    (
        r"config file already exists|already initialized",
        AlreadyInitialised,
        "{url} already holds a restic repository",
    ),
]


# The transport's own words: ssh (through its log) and the storage services. They say more
# than restic's message or exit status, so they are looked at first.
_TRANSPORT_PATTERNS: list[tuple[str, type[ResticError], str]] = [
    (
        r"remote host identification has changed|host key for .* has changed",
        HostKeyChanged,
        "the SFTP server {host} showed a different host key than the one onwatch pinned, "
        "which can mean someone is intercepting the connection; if the server was rebuilt "
        "on purpose, forget the pinned host key (on the repository's page) and connect again",
    ),
    (
        r"host key is known for|host key verification failed",
        HostKeyUnknown,
        "onwatch has not pinned the host key of the SFTP server {host} yet; connect the "
        "repository first",
    ),
    (
        r"permission denied \(publickey|too many authentication failures",
        SshKeyRefused,
        "the SFTP server {host} refused onwatch's key; add this repository's public key to "
        "~/.ssh/authorized_keys of {user} on {host}, then connect the repository again",
    ),
    (
        r"signature we calculated does not match|access key id you provided does not exist"
        r"|signaturedoesnotmatch|invalidaccesskeyid|access ?denied|bad_auth_token"
        r"|401 unauthorized|authentication ?failed",
        AccessDenied,
        "the storage service refused onwatch's credentials for {url} ({detail}); check the "
        "access key and secret in the repository's settings",
    ),
]


def classify(
    stderr: str,
    returncode: int,
    url: str,
    have: Version,
    ssh_log: str = "",
    secrets: Sequence[str] = (),
) -> ResticError:
    secret_free = _scrub(stderr, url, secrets)
    ssh_said = _scrub(ssh_log, url, secrets)
    said = [ln.strip() for ln in ssh_said.splitlines() if ln.strip()]
    # When ssh failed, restic only says the session ended; ssh's last line says why.
    detail = said[-1][:300] if said else _first_fatal(secret_free)
    shown = redact(url)
    where = _where(url)
    # Before the other patterns: a full disk also ends a restore with "There were N errors".
    if full := re.search(r"write (\S+): no space left on device", secret_free, re.IGNORECASE):
        return NoSpace(f"no space left on device writing {full.group(1)}; free space on that disk")
    for pattern, kind, text in _TRANSPORT_PATTERNS:
        if re.search(pattern, f"{ssh_said}\n{secret_free}", re.IGNORECASE):
            return kind(text.format(url=shown, detail=detail, **where))
    if have >= EXIT_CODES:
        by_code = {
            EXIT_WRONG_PASSWORD: _PATTERNS[0],
            EXIT_LOCKED: _PATTERNS[1],
            EXIT_NO_REPOSITORY: _PATTERNS[3],
        }
        if returncode in by_code:
            _, kind, text = by_code[returncode]
            return kind(text.format(url=shown, detail=detail))
    for pattern, kind, text in _PATTERNS:
        if re.search(pattern, f"{ssh_said}\n{secret_free}", re.IGNORECASE):
            return kind(text.format(url=shown, detail=detail))
    return ResticFailed(f"restic failed on {shown} (exit {returncode}): {detail}")


def _scrub(text: str, url: str, secrets: Sequence[str]) -> str:
    text = text.replace(url, redact(url))
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def _where(url: str) -> dict[str, str]:
    try:
        target = sftp_target(url)
    except ValueError:
        target = None
    if target is None:
        return {"host": urlsplit(url.partition(":")[2]).hostname or "", "user": ""}
    return {"host": target.host, "user": target.user or "the login user"}


def _first_fatal(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("Fatal:"):
            return ln.removeprefix("Fatal:").strip()[:300]
    return (lines[0] if lines else "no error output")[:300]


# --- running -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Repo:
    url: str
    password: str = field(repr=False)
    cache_dir: Path | None = None
    # The backend's credentials (AWS_ACCESS_KEY_ID, B2_ACCOUNT_KEY, …), into the environment.
    env: dict[str, str] = field(default_factory=dict, repr=False)
    # SFTP: the repository's own private key and the server's pinned host key lines.
    ssh_key: str = field(default="", repr=False)
    known_hosts: str = ""

    @property
    def secrets(self) -> list[str]:
        return [self.password, *self.env.values()]


class Connection:
    """How restic reaches one repository during one call: for SFTP with a key of its own,
    ssh with that key and the pinned host keys only (core.ssh.Session, removed by
    close())."""

    def __init__(self, repo: Repo) -> None:
        self.session: ssh.Session | None = None
        self.flags: list[str] = []
        target = sftp_target(repo.url)
        if target is None or not repo.ssh_key:
            return
        self.session = ssh.Session(repo.ssh_key, repo.known_hosts)
        try:
            args = self.session.args(target.endpoint, "sftp", subsystem=True)
            self.flags = ["-o", f"sftp.command={ssh_command(args)}"]
        except BaseException:
            self.close()
            raise

    def ssh_log(self) -> str:
        return "" if self.session is None else self.session.log_text()

    def close(self) -> None:
        if self.session is not None:
            self.session.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ssh_command(args: list[str]) -> str:
    """The ssh command line for restic's sftp.command (restic splits it as a shell would)."""
    try:
        return ssh.split_safe_join(args, through="restic")
    except ValueError as e:
        raise ResticFailed(str(e)) from None


class Running:
    """A restic process in flight (a streaming backup or dump). Output goes to temporary
    files, not pipes, so a chatty restic can never block on a full pipe."""

    def __init__(self, repo: Repo, args: list[str], stdin: Any, stdout: Any) -> None:
        self.repo = repo
        self.ssh_log = ""
        # Closed in wait() (or kill()), which every caller reaches.
        self.connection = Connection(repo)
        try:
            self.out: IO[str] = tempfile.TemporaryFile("w+")  # noqa: SIM115
            self.err: IO[str] = tempfile.TemporaryFile("w+")  # noqa: SIM115
            self.proc = subprocess.Popen(
                [binary(), *self.connection.flags, *args],
                env=restic_env(repo),
                stdin=stdin,
                stdout=self.out if stdout is None else stdout,
                stderr=self.err,
            )
        except BaseException:
            # Whatever failed, the private key written for this call does not stay behind.
            self.connection.close()
            raise

    def wait(self, timeout: float | None = None) -> tuple[int, str, str]:
        code = self.proc.wait(timeout)
        self.out.seek(0)
        self.err.seek(0)
        out, err = self.out.read(), self.err.read()
        self.out.close()
        self.err.close()
        self.ssh_log = self.connection.ssh_log()
        self.connection.close()
        return code, out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.connection.close()

    def error(self, code: int, err: str) -> ResticError:
        return classify(err, code, self.repo.url, version(), self.ssh_log, self.repo.secrets)


def restic_env(repo: Repo) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
    # Checked when the repository was added; checked again so nothing else slips in.
    base.update({k: v for k, v in repo.env.items() if env_problem({k: v}) is None})
    base.update(RESTIC_REPOSITORY=repo.url, RESTIC_PASSWORD=repo.password)
    if repo.cache_dir is not None:
        base["RESTIC_CACHE_DIR"] = str(repo.cache_dir)
    return base


def run(repo: Repo, args: Sequence[str], timeout: float | None = None) -> str:
    """Run restic to its end; its stdout, or a typed error."""
    with Connection(repo) as connection:
        try:
            done = subprocess.run(
                [binary(), *connection.flags, *args],
                env=restic_env(repo),
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except FileNotFoundError:
            version()  # raises ResticMissing with the explanation
            raise
        except subprocess.TimeoutExpired:
            raise RepositoryUnreachable(
                f"restic gave no answer from {redact(repo.url)} within {timeout:.0f} s; check "
                "the network and the repository server"
            ) from None
        if done.returncode != 0:
            raise classify(
                done.stderr,
                done.returncode,
                repo.url,
                version(),
                connection.ssh_log(),
                repo.secrets,
            )
    return done.stdout


def run_deleting(repo: Repo, args: Sequence[str]) -> str:
    """Run a restic command that deletes (forget, prune); its stdout, or a typed error.
    restic retries each refused delete for some 45 s, yet the server's answer will not
    change: at the first refusal restic is interrupted (SIGINT, so that it removes its own
    lock) and DeletesRefused is raised at once. Any other error keeps restic's retries."""
    version()  # ResticMissing, with its explanation, before any process is started
    with Connection(repo) as connection, tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(
            [binary(), *connection.flags, *args],
            env=restic_env(repo),
            stdin=subprocess.DEVNULL,
            stdout=out,  # a file, not a pipe: stderr alone is read as it comes
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",  # a file name in another encoding must not end the reading
        )
        err = _stderr_stopping_at_refusal(proc)
        if proc.returncode != 0:
            raise classify(
                err, proc.returncode, repo.url, version(), connection.ssh_log(), repo.secrets
            )
        out.seek(0)
        return out.read()


def _stderr_stopping_at_refusal(proc: subprocess.Popen[str]) -> str:
    """restic's stderr, read to its end; restic is interrupted at the first refused delete
    (and killed if it has not ended INTERRUPT_GRACE seconds later). Waits for restic."""
    assert proc.stderr is not None
    lines: list[str] = []
    killer = threading.Timer(INTERRUPT_GRACE, proc.kill)
    interrupted = False
    try:
        for line in proc.stderr:
            lines.append(line)
            if not interrupted and re.search(REFUSED_DELETE, line, re.IGNORECASE):
                proc.send_signal(signal.SIGINT)
                killer.start()
                interrupted = True
        proc.wait()
    finally:
        killer.cancel()
        if proc.poll() is None:  # an exception while reading: restic does not outlive it
            proc.kill()
            proc.wait()
    return "".join(lines)


def _lock_flags() -> list[str]:
    # Newer restic can wait for a lock briefly instead of failing at once.
    return ["--retry-lock", "30s"] if version() >= RETRY_LOCK else []


def _tag_flags(tags: Sequence[str]) -> list[str]:
    return [f"--tag={t}" for t in tags]


def init(repo: Repo) -> None:
    run(repo, ["init", "--json"])


def init_or_open(repo: Repo) -> bool:
    """Create the repository, or open the one already there with this password (WrongPassword
    if it is not that repository's). True when it was created."""
    try:
        init(repo)
    except AlreadyInitialised:
        run(repo, ["cat", "config"])
        return False
    return True


def start_backup_stdin(repo: Repo, filename: str, tags: Sequence[str], stdin: Any) -> Running:
    version()  # fail with a clear message before any process is started
    args = ["backup", "--json", "--stdin", f"--stdin-filename={filename}", *_tag_flags(tags)]
    return Running(repo, args, stdin=stdin, stdout=None)


def backup_paths(repo: Repo, paths: Sequence[str], tags: Sequence[str]) -> BackupSummary:
    version()
    running = Running(
        repo, ["backup", "--json", *_tag_flags(tags), "--", *paths], subprocess.DEVNULL, None
    )
    code, out, err = running.wait()
    if code == EXIT_INCOMPLETE:
        summary = parse_backup(out)
        raise IncompleteBackup(
            f"some files could not be read ({_first_fatal(err)}); the snapshot is incomplete",
            summary.snapshot_id,
        )
    if code != 0:
        raise running.error(code, err)
    return parse_backup(out)


def finish_backup(running: Running) -> BackupSummary:
    code, out, err = running.wait()
    if code != 0:
        raise running.error(code, err)
    return parse_backup(out)


def snapshots(repo: Repo, tags: Sequence[str] = ()) -> list[Snapshot]:
    return parse_snapshots(run(repo, ["snapshots", "--json", *_tag_flags(tags)]))


def start_dump(repo: Repo, snapshot_id: str, path: str, stdout: Any) -> Running:
    version()
    return Running(repo, ["dump", snapshot_id, path], stdin=subprocess.DEVNULL, stdout=stdout)


def finish(running: Running) -> None:
    code, _, err = running.wait()
    if code != 0:
        raise running.error(code, err)


def restore(repo: Repo, snapshot_id: str, target: Path) -> None:
    run(repo, ["restore", snapshot_id, f"--target={target}"])


def check(repo: Repo, read_data_subset: str | None = None) -> None:
    args = ["check", *_lock_flags()]
    if read_data_subset:
        args.append(f"--read-data-subset={read_data_subset}")
    run(repo, args)


def forget(repo: Repo, snapshot_ids: Sequence[str]) -> None:
    if snapshot_ids:
        run_deleting(repo, ["forget", *_lock_flags(), "--", *snapshot_ids])


@dataclass(frozen=True)
class Retention:
    daily: int
    weekly: int
    monthly: int


def forget_policy(repo: Repo, tags: Sequence[str], keep: Retention) -> list[str]:
    """Apply the retention policy to the snapshots with `tags`; the removed ids. The
    newest snapshot is always kept, whatever the policy says. Quick: only snapshot files
    go; the data they alone held stays until prune()."""
    args = [
        "forget",
        "--json",
        *_lock_flags(),
        *_tag_flags(tags),
        "--keep-last=1",
        f"--keep-daily={keep.daily}",
        f"--keep-weekly={keep.weekly}",
        f"--keep-monthly={keep.monthly}",
    ]
    out = run_deleting(repo, args)
    removed: list[str] = []
    for line in out.splitlines():
        try:
            groups = json.loads(line)
        except ValueError:
            continue
        if isinstance(groups, list):
            for group in groups:
                removed += [s["id"] for s in group.get("remove") or []]
    return removed


def deletes_refused(repo: Repo, timeout: float = 10) -> bool | None:
    """Whether a REST server is append-only, asked without restic (which retries a refused
    delete for some 45 s): DELETE a snapshot name that cannot exist. rest-server and
    `rclone serve restic` answer 403 when append-only, 404 otherwise. None where it cannot
    be told: other backends, or no clear answer."""
    if not repo.url.startswith("rest:"):
        return None
    parts = urlsplit(repo.url.removeprefix("rest:"))
    if parts.scheme not in ("http", "https"):
        return None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    path = f"{parts.path.rstrip('/')}/snapshots/{token_hex(32)}"
    address = urlunsplit(parts._replace(netloc=hostport, path=path))
    request = urllib.request.Request(address, method="DELETE")  # noqa: S310 (http(s) only)
    if userinfo:
        user, _, password = userinfo.partition(":")
        pair = f"{unquote(user)}:{unquote(password)}".encode()
        request.add_header("Authorization", f"Basic {base64.b64encode(pair).decode()}")
    try:
        with urllib.request.urlopen(request, timeout=timeout):  # noqa: S310 (http(s) only)
            return False
    except urllib.error.HTTPError as e:
        return {403: True, 404: False}.get(e.code)
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class PruneSummary:
    freed: str  # as restic writes sizes: "2.862 MiB"
    remaining: str


def prune(repo: Repo) -> PruneSummary:
    """Delete the data no snapshot refers to any more. The slow part of retention: it
    reads every index and rewrites partly used packs (downloads and uploads on remote
    storage), so it runs on a schedule of its own, not after every backup."""
    return parse_prune(run_deleting(repo, ["prune", *_lock_flags()]))


def parse_prune(out: str) -> PruneSummary:
    sizes = {}
    for line in out.splitlines():
        name, colon, rest = line.partition(":")
        if colon and name.strip() in ("total prune", "remaining"):
            sizes[name.strip()] = rest.rsplit("/", 1)[-1].strip()
    return PruneSummary(sizes.get("total prune", "0 B"), sizes.get("remaining", "unknown"))


def locks(repo: Repo) -> list[str]:
    return run(repo, ["list", "locks", "--no-lock"]).split()


def unlock(repo: Repo) -> None:
    """Remove stale locks only: those of processes that died on this host, or older than
    restic's limit (30 minutes without a refresh) elsewhere. Live locks stay."""
    run(repo, ["unlock"])
