"""Repositories on other machines: reaching one for the first time (an SFTP server's host
key is pinned then and verified on every later connection) and keeping runs away from
those that were never reached."""

from __future__ import annotations

from onwatch.backups import restic
from onwatch.backups.models import Repository
from onwatch.core import ssh


class NotConnected(restic.ResticError):
    """The repository has not been reached once yet."""


class HostKeysUnavailable(restic.RepositoryUnreachable):
    """The SFTP server could not be asked for its host keys."""


def host_keys_to_pin(repository: Repository) -> str:
    """The SFTP server's host key line(s) to pin when none are pinned yet, else "":
    services.connect_repository() pins them before restic first reaches the server.
    Raises HostKeysUnavailable."""
    target = restic.sftp_target(repository.url)
    if target is None or repository.known_hosts.strip():
        return ""
    return _scan_host_keys(target)


def _scan_host_keys(target: restic.SftpTarget) -> str:
    try:
        return ssh.scan_host_keys(target.host, target.port, what="SFTP server")
    except ssh.HostKeysUnavailable as e:
        # Callers handle restic.ResticError: an unreachable server is one of them.
        raise HostKeysUnavailable(str(e)) from e


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
