"""restic, the backup engine: the only module that runs it.

Builds command lines (the repository URL and password travel in the environment, never
in argv, where `ps` would show them), parses `--json` output into typed results and turns
failures into typed errors whose messages say what is wrong and what to do.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

from onwatch.config import env

Version = tuple[int, int, int]

# Flags newer than Debian's restic: used only where the installed one has them.
RETRY_LOCK = (0, 16, 0)  # waits for a lock instead of failing at once
# From 0.17 on, restic says what went wrong through its exit status as well.
EXIT_CODES = (0, 17, 0)
EXIT_NO_REPOSITORY, EXIT_LOCKED, EXIT_WRONG_PASSWORD = 10, 11, 12
# restic backup's "snapshot saved, but some files could not be read".
EXIT_INCOMPLETE = 3


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


class IncompleteBackup(ResticError):
    """The snapshot was saved but some files could not be read."""

    def __init__(self, message: str, snapshot_id: str) -> None:
        super().__init__(message)
        self.snapshot_id = snapshot_id


class ResticFailed(ResticError):
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
]


def classify(stderr: str, returncode: int, url: str, have: Version) -> ResticError:
    secret_free = stderr.replace(url, redact(url))
    detail = _first_fatal(secret_free)
    shown = redact(url)
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
        if re.search(pattern, secret_free, re.IGNORECASE):
            return kind(text.format(url=shown, detail=detail))
    return ResticFailed(f"restic failed on {shown} (exit {returncode}): {detail}")


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
    password: str
    cache_dir: Path | None = None


class Running:
    """A restic process in flight (a streaming backup or dump). Output goes to temporary
    files, not pipes, so a chatty restic can never block on a full pipe."""

    def __init__(self, repo: Repo, args: list[str], stdin: Any, stdout: Any) -> None:
        self.repo = repo
        # Closed in wait(), which every caller reaches.
        self.out: IO[str] = tempfile.TemporaryFile("w+")  # noqa: SIM115
        self.err: IO[str] = tempfile.TemporaryFile("w+")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [binary(), *args],
            env=restic_env(repo),
            stdin=stdin,
            stdout=self.out if stdout is None else stdout,
            stderr=self.err,
        )

    def wait(self, timeout: float | None = None) -> tuple[int, str, str]:
        code = self.proc.wait(timeout)
        self.out.seek(0)
        self.err.seek(0)
        out, err = self.out.read(), self.err.read()
        self.out.close()
        self.err.close()
        return code, out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def error(self, code: int, err: str) -> ResticError:
        return classify(err, code, self.repo.url, version())


def restic_env(repo: Repo) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
    base.update(RESTIC_REPOSITORY=repo.url, RESTIC_PASSWORD=repo.password)
    if repo.cache_dir is not None:
        base["RESTIC_CACHE_DIR"] = str(repo.cache_dir)
    return base


def run(repo: Repo, args: Sequence[str], timeout: float | None = None) -> str:
    """Run restic to its end; its stdout, or a typed error."""
    try:
        done = subprocess.run(
            [binary(), *args],
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
            f"restic gave no answer from {redact(repo.url)} within {timeout:.0f} s; check the "
            "network and the repository server"
        ) from None
    if done.returncode != 0:
        raise classify(done.stderr, done.returncode, repo.url, version())
    return done.stdout


def _lock_flags() -> list[str]:
    # Newer restic can wait for a lock briefly instead of failing at once.
    return ["--retry-lock", "30s"] if version() >= RETRY_LOCK else []


def _tag_flags(tags: Sequence[str]) -> list[str]:
    return [f"--tag={t}" for t in tags]


def init(repo: Repo) -> None:
    run(repo, ["init", "--json"])


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
        run(repo, ["forget", *_lock_flags(), "--", *snapshot_ids])


@dataclass(frozen=True)
class Retention:
    daily: int
    weekly: int
    monthly: int


def forget_policy(repo: Repo, tags: Sequence[str], keep: Retention) -> list[str]:
    """Apply the retention policy to the snapshots with `tags` and prune; the removed ids.
    The newest snapshot is always kept, whatever the policy says."""
    args = [
        "forget",
        "--json",
        "--prune",
        *_lock_flags(),
        *_tag_flags(tags),
        "--keep-last=1",
        f"--keep-daily={keep.daily}",
        f"--keep-weekly={keep.weekly}",
        f"--keep-monthly={keep.monthly}",
    ]
    out = run(repo, args)
    removed: list[str] = []
    # With --prune, prune's progress text follows the JSON line.
    for line in out.splitlines():
        try:
            groups = json.loads(line)
        except ValueError:
            continue
        if isinstance(groups, list):
            for group in groups:
                removed += [s["id"] for s in group.get("remove") or []]
    return removed


def locks(repo: Repo) -> list[str]:
    return run(repo, ["list", "locks", "--no-lock"]).split()


def unlock(repo: Repo) -> None:
    """Remove stale locks only: those of processes that died on this host, or older than
    restic's limit (30 minutes without a refresh) elsewhere. Live locks stay."""
    run(repo, ["unlock"])
