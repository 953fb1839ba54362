"""Remote repositories against real servers: SFTP through OpenSSH's sshd (a key pair per
repository, the server's host key pinned on first connect) and S3 through `rclone serve
s3` (credentials from the repository's env). Runs and drills go through the durable jobs."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.urls import reverse

from onwatch.backups import kit, restic, services
from onwatch.backups.models import Repository, RunCopy, SourceKind
from onwatch.core import ssh
from onwatch.core.models import AuditEntry, JobState, Organization
from tests.support.backups import (
    assert_failed_with_alert,
    backup,
    channel,
    directory,
    drill,
    plan_for,
    sqlite_file,
)
from tests.support.fixtures import signed_in
from tests.support.procs import argv_of
from tests.support.remote_servers import S3Server, SshServer, s3_server, sshd

# Its subject lies outside onwatch's own database (processes, a browser, outside tools):
# scripts/test runs it in one of its two passes.
pytestmark = [pytest.mark.once, pytest.mark.django_db, pytest.mark.usefixtures("channel")]
__all__ = ["channel", "s3_server", "sshd"]


def stored_columns(repository: Repository) -> str:
    """The repository's row as the database holds it (encrypted columns still encrypted)."""
    with connection.cursor() as c:
        c.execute(
            "SELECT url, password, env, ssh_key FROM backups_repository WHERE id = %s",
            [repository.pk],
        )
        return " ".join(str(v) for v in c.fetchone())


def connected_sftp(org: Organization, sshd: SshServer, tmp_path: Path) -> Repository:
    repository = services.add_repository(
        org, "storagebox", sshd.url(tmp_path / "sftp-repo"), provider="hetzner-storage"
    )
    sshd.authorize(repository.ssh_public_key)
    services.connect_repository(repository)
    return repository


# --- SFTP --------------------------------------------------------------------------------------


def test_an_sftp_repository_waits_for_its_key_then_backs_up_and_drills(
    org: Organization, sshd: SshServer, tmp_path: Path
) -> None:
    repository = services.add_repository(
        org, "storagebox", sshd.url(tmp_path / "sftp-repo"), provider="hetzner-storage"
    )
    assert repository.ssh_public_key.startswith("ssh-ed25519 ")
    assert "OPENSSH PRIVATE KEY" in repository.ssh_key
    assert "PRIVATE KEY" not in stored_columns(repository), "the private key is stored in clear"
    assert not repository.ready and repository.known_hosts == ""
    assert repository.host == ""  # 127.0.0.1: this machine

    source = services.add_source(
        org, "app", SourceKind.SQLITE, path=str(sqlite_file(tmp_path / "app.sqlite3"))
    )
    plan = plan_for(source, [repository])
    job, run = backup(plan)
    assert_failed_with_alert(job, "storagebox: sftp://")
    assert "is not connected yet; add its public key to ~/.ssh/authorized_keys of" in job.error
    [copy] = run.copies.all()
    assert not copy.good and "not connected yet" in copy.error

    # The key is not on the server yet: refused, but the host key is pinned already.
    with pytest.raises(restic.SshKeyRefused) as refused:
        services.connect_repository(repository)
    assert str(refused.value) == (
        "the SFTP server 127.0.0.1 refused onwatch's key; add this repository's public key "
        f"to ~/.ssh/authorized_keys of {sshd.user} on 127.0.0.1, then connect the repository "
        "again"
    )
    repository.refresh_from_db()
    assert not repository.ready
    assert repository.known_hosts.startswith(f"[127.0.0.1]:{sshd.port} ssh-ed25519 ")
    assert ssh.fingerprints(repository.known_hosts) == [f"ssh-ed25519 {sshd.fingerprint()}"]

    sshd.authorize(repository.ssh_public_key)
    services.connect_repository(repository)
    repository.refresh_from_db()
    assert repository.ready
    assert (tmp_path / "sftp-repo" / "config").is_file(), "restic init did not reach the server"

    job, run = backup(plan)
    assert job.state == JobState.SUCCEEDED, job.error + job.log
    [copy] = run.copies.all()
    assert copy.good and copy.snapshot_id
    job, d = drill(plan)
    assert job.state == JobState.SUCCEEDED, job.error + job.log
    assert d.verified and d.repository == repository
    assert {"check": "PRAGMA integrity_check", "ok": True, "detail": "ok"} in d.checks

    # Connecting again opens the repository that is there (the password checked), no init.
    services.connect_repository(repository)


def test_the_private_key_is_a_0600_file_only_while_restic_runs(
    org: Organization, sshd: SshServer, tmp_path: Path
) -> None:
    repository = connected_sftp(org, sshd, tmp_path)
    r, w = os.pipe()
    running = restic.start_backup_stdin(services.repo_of(repository), "x", [], stdin=r)
    os.close(r)
    session = running.connection.session
    assert session is not None
    key = session.key
    assert key.stat().st_mode & 0o777 == 0o600 and key.read_text() == repository.ssh_key
    cmdline = argv_of(running.proc.pid, "restic")
    os.write(w, b"over sftp")
    os.close(w)
    summary = restic.finish_backup(running)
    assert summary.files == 1
    assert "StrictHostKeyChecking=yes" in cmdline and f"-i {key}" in cmdline
    assert repository.password not in cmdline and "PRIVATE KEY" not in cmdline
    assert not session.dir.exists(), "the key outlived the call"


def test_the_recovery_kits_sftp_command_reaches_the_server_by_hand(
    org: Organization, sshd: SshServer, tmp_path: Path
) -> None:
    """The kit's `restic -r … -o sftp.command=…` line, run by a shell in a directory holding
    the key and host key files the kit tells people to save, as on a fresh machine."""
    repository = connected_sftp(org, sshd, tmp_path)
    fresh = tmp_path / "fresh-machine"
    fresh.mkdir()
    (fresh / kit.KEY_FILE).write_text(repository.ssh_key.strip() + "\n")
    (fresh / kit.KEY_FILE).chmod(0o600)
    (fresh / kit.KNOWN_HOSTS_FILE).write_text(repository.known_hosts)
    line = f"{kit.restic_command(repository)} snapshots --json"
    assert "StrictHostKeyChecking=yes" in line
    done = subprocess.run(
        ["sh", "-c", line],
        cwd=fresh,
        env={"PATH": os.environ["PATH"], "RESTIC_PASSWORD": repository.password},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
    # The server's host key changed since it was pinned: the same line refuses it.
    sshd.stop()
    sshd.new_host_key()
    sshd.start()
    refused = subprocess.run(
        ["sh", "-c", line],
        cwd=fresh,
        env={"PATH": os.environ["PATH"], "RESTIC_PASSWORD": repository.password},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0
    assert "unable to open repository" in refused.stderr
    # restic relays ssh's first line only when it arrives before the session ends, so the
    # reason is read from the kit's own ssh command, run the same way.
    words = shlex.split(line)
    command = words[words.index("-o") + 1].removeprefix("sftp.command=")
    reason = subprocess.run(
        ["sh", "-c", command],
        cwd=fresh,
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert reason.returncode != 0
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in reason.stderr, reason.stderr


def test_a_changed_host_key_a_removed_key_and_a_stopped_server_fail_the_run(
    org: Organization, members: dict[str, Any], sshd: SshServer, tmp_path: Path
) -> None:
    repository = connected_sftp(org, sshd, tmp_path)
    source = services.add_source(
        org, "uploads", SourceKind.DIRECTORY, path=str(directory(tmp_path / "uploads"))
    )
    plan = plan_for(source, [repository])
    pinned = repository.known_hosts

    sshd.restart_with_new_host_key()
    job, _ = backup(plan)
    assert_failed_with_alert(job, "showed a different host key than the one onwatch pinned")
    with pytest.raises(restic.HostKeyChanged, match="forget the pinned host key"):
        services.connect_repository(repository)
    repository.refresh_from_db()
    assert repository.known_hosts == pinned, "a changed host key must not be pinned silently"

    # Rebuilt on purpose: an admin forgets the old key on the repository's page (audited);
    # the next connect pins the new one.
    page = signed_in(members["admin"]).get(f"/backups/repositories/{repository.pk}/")
    assert "Forget it (server rebuilt)" in page.content.decode()
    forget = reverse("backup_repository_forget_host_key", args=[repository.pk])
    assert signed_in(members["viewer"]).post(forget).status_code == 403
    assert signed_in(members["admin"]).post(forget).status_code == 302
    repository.refresh_from_db()
    assert repository.known_hosts == "" and not repository.ready
    assert AuditEntry.objects.filter(action="backup-repository-host-key-forgotten").exists()
    services.connect_repository(repository)
    assert ssh.fingerprints(repository.known_hosts) == [f"ssh-ed25519 {sshd.fingerprint()}"]
    assert backup(plan)[0].state == JobState.SUCCEEDED

    sshd.authorize("")  # the key was removed from the server
    job, _ = backup(plan)
    assert_failed_with_alert(job, "refused onwatch's key; add this repository's public key")

    sshd.stop()
    job, run = backup(plan)
    assert_failed_with_alert(job, "cannot be reached")
    assert "Connection refused" in job.error
    assert not run.copies.get().good


# --- S3 ----------------------------------------------------------------------------------------


def test_an_s3_repository_uses_the_credentials_of_its_env_and_never_shows_them(
    org: Organization, s3_server: S3Server, tmp_path: Path
) -> None:
    repository = services.add_repository(
        org, "bucket", s3_server.url, provider="wasabi", env=s3_server.env
    )
    assert repository.ready and json.loads(repository.env) == s3_server.env
    assert (tmp_path / "s3-root" / "backups" / "config").is_file()
    assert s3_server.secret_key not in stored_columns(repository)
    assert s3_server.access_key not in stored_columns(repository)

    source = services.add_source(
        org, "uploads", SourceKind.DIRECTORY, path=str(directory(tmp_path / "uploads"))
    )
    plan = plan_for(source, [repository])
    backup_job, run = backup(plan)
    assert backup_job.state == JobState.SUCCEEDED, backup_job.error + backup_job.log
    assert run.copies.get().good
    job, d = drill(plan)
    assert job.state == JobState.SUCCEEDED, job.error + job.log
    assert d.verified and sum(c["check"].startswith("sha256") for c in d.checks) == 13

    # argv of a running restic: no credential, no password.
    r, w = os.pipe()
    running = restic.start_backup_stdin(services.repo_of(repository), "x", [], stdin=r)
    os.close(r)
    cmdline = argv_of(running.proc.pid, "restic")
    os.write(w, b"over s3")
    os.close(w)
    assert restic.finish_backup(running).files == 1
    assert "backup" in cmdline
    for secret in (s3_server.secret_key, s3_server.access_key, repository.password):
        assert secret not in cmdline
        assert secret not in backup_job.log + job.log


def test_a_wrong_s3_secret_or_a_stopped_server_fails_the_run_with_an_alert(
    org: Organization, s3_server: S3Server, tmp_path: Path
) -> None:
    with pytest.raises(restic.AccessDenied, match="refused onwatch's credentials"):
        services.add_repository(
            org,
            "bucket",
            s3_server.url,
            provider="wasabi",
            env={**s3_server.env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"},
        )
    assert not Repository.objects.exists()

    repository = services.add_repository(
        org, "bucket", s3_server.url, provider="wasabi", env=s3_server.env
    )
    plan = plan_for(
        services.add_source(
            org, "app", SourceKind.SQLITE, path=str(sqlite_file(tmp_path / "app.sqlite3"))
        ),
        [repository],
    )
    repository.env = json.dumps({**s3_server.env, "AWS_SECRET_ACCESS_KEY": "wrong-secret-1234"})
    repository.save()
    job, run = backup(plan)
    assert_failed_with_alert(job, "the storage service refused onwatch's credentials for s3:")
    assert "wrong-secret-1234" not in job.error + job.log + run.error
    assert not RunCopy.objects.filter(good=True).exists()

    repository.env = json.dumps(s3_server.env)
    repository.save()
    s3_server.stop()
    job, _ = backup(plan)
    assert_failed_with_alert(job, "bucket: s3:http://127.0.0.1")
    assert "cannot be reached" in job.error


# --- what add_repository accepts ----------------------------------------------------------------


def test_env_and_sftp_urls_that_could_run_programs_are_refused(org: Organization) -> None:
    for env in (
        {"LD_PRELOAD": "/tmp/x.so"},
        {"RESTIC_PASSWORD_COMMAND": "sh -c id"},
        # Credentials read from a file or fetched from a URL: not a repository's business.
        {"AWS_SHARED_CREDENTIALS_FILE": "/root/.aws/credentials"},
        {"AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.2/x"},
        {"GOOGLE_APPLICATION_CREDENTIALS": "/etc/onwatch/keyring.json"},
    ):
        with pytest.raises(services.InvalidRepository, match="not a storage credential"):
            services.add_repository(org, "r", "s3:s3.amazonaws.com/b", "aws", env=env)
    with pytest.raises(services.InvalidRepository, match="is not a host name"):
        services.add_repository(org, "r", "sftp:u@-oProxyCommand=id:/r", "x")
    with pytest.raises(services.InvalidRepository, match="names no path"):
        services.add_repository(org, "r", "sftp:u@host", "x")
    assert not Repository.objects.exists()


def test_plain_http_is_refused_beyond_this_machine(org: Organization) -> None:
    """The REST password (and S3 traffic) must not cross the network unencrypted."""
    for url in ("rest:http://u:pw@backup.example:8000/", "s3:http://[2001:db8::1]:9000/b"):
        with pytest.raises(services.InvalidRepository, match="https://"):
            services.add_repository(org, "r", url, "x", initialise=False)
    assert not Repository.objects.exists()
    for url in (
        "rest:https://u:pw@backup.example:8000/",
        "rest:http://127.0.0.1:8000/",
        "s3:http://localhost:9000/b",
        "s3:http://[::1]:9000/b",
        "s3:s3.amazonaws.com/b",
    ):
        assert restic.plain_http_problem(url) is None, url


def test_host_of_url_reads_sftp_ports_and_s3_endpoints() -> None:
    assert services.host_of_url("sftp://me@Backup.example:2222//srv/r") == "backup.example"
    assert services.host_of_url("sftp:me@box.example:/srv/r") == "box.example"
    assert services.host_of_url("sftp://me@127.0.0.1:2222//srv/r") == ""
    assert services.host_of_url("s3:http://127.0.0.1:9000/bucket") == ""
    assert services.host_of_url("s3:https://s3.eu.example:9000/bucket") == "s3.eu.example"
    assert services.host_of_url("s3:s3.amazonaws.com/bucket") == "s3.amazonaws.com"
