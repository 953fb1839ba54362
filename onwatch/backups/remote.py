"""Repositories on other machines: reaching one for the first time (an SFTP server's host
key is pinned then and verified on every later connection) and keeping runs away from
those that were never reached."""

from __future__ import annotations

from onwatch.backups import restic
from onwatch.backups.models import Repository
from onwatch.backups.services import repo_of
from onwatch.core import ssh


class NotConnected(restic.ResticError):
    """The repository has not been reached once yet."""


class HostKeysUnavailable(restic.RepositoryUnreachable):
    """The SFTP server could not be asked for its host keys."""


def connect_repository(repository: Repository) -> None:
    """Reach the repository and mark it ready. For SFTP, the server's host key is pinned
    on the first connection (and checked on every one after, this one too when already
    pinned). restic then creates the repository, or opens the one already there with the
    stored password. Raises restic.ResticError (SshKeyRefused, HostKeyChanged,
    WrongPassword, RepositoryUnreachable, …) whose message says what to do."""
    target = restic.sftp_target(repository.url)
    if target is not None and not repository.known_hosts.strip():
        # Trust on first use: pinned before anything else, so later attempts (the key may
        # not be authorized yet) are checked against this key rather than scanned again.
        repository.known_hosts = _scan_host_keys(target)
        repository.save(update_fields=["known_hosts"])
    restic.init_or_open(repo_of(repository))
    repository.ready = True
    repository.save(update_fields=["ready"])


def _scan_host_keys(target: restic.SftpTarget) -> str:
    try:
        return ssh.scan_host_keys(target.host, target.port, what="SFTP server")
    except ssh.HostKeysUnavailable as e:
        # Callers handle restic.ResticError: an unreachable server is one of them.
        raise HostKeysUnavailable(str(e)) from e


def forget_host_key(repository: Repository) -> None:
    """For a server rebuilt on purpose: the next connect_repository() pins its new key.
    Runs skip the repository until then."""
    repository.known_hosts = ""
    repository.ready = False
    repository.save(update_fields=["known_hosts", "ready"])


def require_ready(repository: Repository) -> None:
    """NotConnected, saying what to do, for a repository restic has never reached."""
    if repository.ready:
        return
    target = restic.sftp_target(repository.url)
    if target is not None:
        user = target.user or "the login user"
        raise NotConnected(
            f"{repository.shown_url} is not connected yet; add its public key to "
            f"~/.ssh/authorized_keys of {user} on {target.host}, then connect the repository"
        )
    raise NotConnected(
        f"{repository.shown_url} is not connected yet; connect the repository so onwatch can "
        "reach it once"
    )
