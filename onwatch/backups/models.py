from __future__ import annotations

from datetime import timedelta

from django.db import models
from django.utils import timezone

from onwatch.backups.restic import plain_http_problem
from onwatch.core.fields import EncryptedTextField
from onwatch.core.models import Job, Organization, Schedule


class Repository(models.Model):
    """A restic repository: any URL restic takes, a password onwatch generated, and where
    it is (provider and location), which decides whether a copy counts as offsite."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="repositories")
    name = models.CharField(max_length=100)
    # Encrypted: REST and S3 URLs often carry credentials. `shown_url` is the redacted one.
    url = EncryptedTextField()
    shown_url = models.CharField(max_length=500)
    # The machine the data sits on ("" for this machine): copies on the source's host
    # are not offsite, whatever the provider says.
    host = models.CharField(max_length=200, blank=True)
    password = EncryptedTextField()
    provider = models.CharField(max_length=60)
    location = models.CharField(max_length=100, blank=True)
    # Extra environment restic needs for this backend, as JSON ({"AWS_ACCESS_KEY_ID": …,
    # "AWS_SECRET_ACCESS_KEY": …} for S3, B2_ACCOUNT_ID/B2_ACCOUNT_KEY for B2, …).
    env = EncryptedTextField(blank=True)
    # SFTP: the private key onwatch generated for this repository (its public half goes
    # into the server's authorized_keys) and the server's pinned host key line(s).
    ssh_key = EncryptedTextField(blank=True)
    ssh_public_key = models.TextField(blank=True)
    known_hosts = models.TextField(blank=True)
    # False until restic has reached the repository once (an SFTP repository waits for its
    # public key to be added on the server); runs skip copies that are not ready.
    ready = models.BooleanField(default=True)
    # The server keeps what it is given and refuses to delete (rest-server --append-only,
    # an S3 bucket with object lock, a B2 key without delete): the usual defence against
    # ransomware. onwatch never forgets or prunes here; `pruned_by` says who does.
    append_only = models.BooleanField(default=False)
    pruned_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "id"]
        verbose_name_plural = "repositories"

    @property
    def crosses_network_unencrypted(self) -> bool:
        """Saved before plain http beyond loopback was refused (restic.plain_http_problem)."""
        return plain_http_problem(self.shown_url) is not None

    @property
    def pruner(self) -> str:
        """Who removes old backups from an append-only copy, in words."""
        return self.pruned_by or "whoever runs its server (not named yet)"

    def __str__(self) -> str:
        return self.name


class SourceKind(models.TextChoices):
    POSTGRESQL = "postgresql", "PostgreSQL"
    MARIADB = "mariadb", "MariaDB / MySQL"
    SQLITE = "sqlite", "SQLite file"
    DIRECTORY = "directory", "Directory"


class Source(models.Model):
    """What gets backed up. For PostgreSQL and MariaDB: host, port, database, username and
    password; for SQLite and directories, `path` on this machine."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="sources")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=20, choices=SourceKind.choices)
    host = models.CharField(max_length=200, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True)
    database = models.CharField(max_length=200, blank=True)
    username = models.CharField(max_length=100, blank=True)
    password = EncryptedTextField(blank=True)
    path = models.CharField(max_length=1000, blank=True)
    # Where the source runs: a copy with the same provider is not offsite.
    provider = models.CharField(max_length=60, blank=True)
    # A connection URL (postgresql://… or mariadb://…) for drills' throwaway databases;
    # blank uses the source's own server (a new database there, never the source database).
    scratch_url = EncryptedTextField(blank=True)
    # [{"sql": "select count(*) from orders where paid", "expect": [[42]]}]: run against
    # each restored copy; a different answer fails the drill.
    smoke_queries = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class Plan(models.Model):
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="backup_plans")
    name = models.CharField(max_length=100)
    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="plans")
    copies = models.ManyToManyField(Repository, related_name="plans")
    schedule = models.ForeignKey(
        Schedule, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    drill_schedule = models.ForeignKey(
        Schedule, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # The copy drills restore from; blank picks the first offsite copy, else the first.
    drill_from = models.ForeignKey(
        Repository, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    keep_daily = models.PositiveIntegerField(default=7)
    keep_weekly = models.PositiveIntegerField(default=4)
    keep_monthly = models.PositiveIntegerField(default=6)
    rpo_minutes = models.PositiveIntegerField(default=26 * 60)
    rto_minutes = models.PositiveIntegerField(default=60)
    # Set when the RPO alert went out, cleared by the next good offsite copy: one alert
    # per breach, not one per scheduler tick.
    rpo_alerted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name

    @property
    def rpo(self) -> timedelta:
        return timedelta(minutes=self.rpo_minutes)

    @property
    def tag(self) -> str:
        return f"plan:{self.pk}"


class Outcome(models.TextChoices):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # Stopped by someone: neither a failure (no alert, no lost proof) nor a success.
    CANCELLED = "cancelled"
    # Its worker died before it ended (the job was reaped): it proved nothing either way,
    # and nothing it made is used. Its job's alert says so.
    INTERRUPTED = "interrupted"


class BackupRun(models.Model):
    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="runs")
    job = models.ForeignKey(Job, on_delete=models.SET_NULL, null=True, blank=True)
    state = models.CharField(max_length=12, choices=Outcome.choices, default=Outcome.RUNNING)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    seconds = models.FloatField(null=True, blank=True)
    bytes_processed = models.PositiveBigIntegerField(default=0)
    # What was in it, for drills to compare against: {"tables": {"public.t": 3}} for
    # databases, {"files": n, "bytes": b, "sample": {path: sha256}} for directories.
    contents = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]


class RunCopy(models.Model):
    """One run's snapshot in one repository. Only `good` ones are ever restored from."""

    run = models.ForeignKey(BackupRun, on_delete=models.CASCADE, related_name="copies")
    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="+")
    snapshot_id = models.CharField(max_length=64, blank=True)
    good = models.BooleanField(default=False)
    # A snapshot of a failed dump that was then removed (forgotten) from the repository.
    removed = models.BooleanField(default=False)
    bytes_added = models.PositiveBigIntegerField(default=0)
    files = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    finished_at = models.DateTimeField(default=timezone.now)


class Drill(models.Model):
    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="drills")
    job = models.ForeignKey(Job, on_delete=models.SET_NULL, null=True, blank=True)
    repository = models.ForeignKey(
        Repository, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    run = models.ForeignKey(
        BackupRun, on_delete=models.SET_NULL, null=True, blank=True, related_name="drills"
    )
    snapshot_id = models.CharField(max_length=64, blank=True)
    state = models.CharField(max_length=12, choices=Outcome.choices, default=Outcome.RUNNING)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    fetch_seconds = models.FloatField(null=True, blank=True)
    restore_seconds = models.FloatField(null=True, blank=True)
    verify_seconds = models.FloatField(null=True, blank=True)
    # fetch + restore + verify: the measured RTO.
    rto_seconds = models.FloatField(null=True, blank=True)
    # Every check passed: the data came back whole. A drill can be verified and still fail
    # (over its RTO target); "last proven restorable" counts verified drills.
    verified = models.BooleanField(default=False)
    # [{"check": "rows in public.t", "ok": true, "detail": "3 rows, as at backup"}]
    checks = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]

    @property
    def rto_met(self) -> bool | None:
        if self.rto_seconds is None:
            return None
        return self.rto_seconds <= self.plan.rto_minutes * 60


class Restore(models.Model):
    """A real restore asked for from the UI or the CLI: a chosen snapshot into a chosen
    target that did not exist before (a new database, a new path). Runs as a job, whose
    log is its progress."""

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="restores")
    job = models.ForeignKey(Job, on_delete=models.SET_NULL, null=True, blank=True)
    repository = models.ForeignKey(
        Repository, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    snapshot_id = models.CharField(max_length=64, blank=True)
    # The target as people may see it (no password): a database name or a path.
    target = models.CharField(max_length=1000)
    requested_by = models.CharField(max_length=200, blank=True)
    state = models.CharField(max_length=12, choices=Outcome.choices, default=Outcome.RUNNING)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    seconds = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)
    # A failed or cancelled restore whose half-built target onwatch could not remove: the
    # error says what is left and how to remove it, and a cancel of it still alerts.
    left_behind = models.BooleanField(default=False)

    class Meta:
        ordering = ["-started_at", "-id"]
