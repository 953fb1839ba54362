"""Services (the team's apps: a git repository and a branch) and the pipelines that test
them. services.py is the only code that writes these rows."""

from __future__ import annotations

from datetime import UTC

from django.conf import settings
from django.db import models
from django.utils import timezone

from onwatch.core.fields import EncryptedJSONField, EncryptedTextField
from onwatch.core.models import Job, Organization


class Service(models.Model):
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="services")
    name = models.CharField(max_length=100)
    # Any URL git can fetch: a path, file://, https://, ssh:// or user@host:path.
    git_url = models.CharField(max_length=500)
    branch = models.CharField(max_length=200, default="main")
    # The deploy key onwatch made: its public half goes to the repository's deploy keys.
    deploy_key = EncryptedTextField()
    deploy_public_key = models.TextField()
    # The SSH server's host keys, pinned the first time a pipeline reaches it.
    known_hosts = models.TextField(blank=True)
    # name -> value, given to the steps as environment variables; never shown again.
    secrets = EncryptedJSONField(default=dict, blank=True)
    # Signs the forge's webhooks (GitLab sends it as is); made by onwatch, shown to admins.
    webhook_secret = EncryptedTextField(blank=True)
    # A newer pipeline of the same branch cancels the older one still queued or running.
    supersede = models.BooleanField(default=True)
    # Ask the repository for the branch's newest commit every so many minutes; None: never.
    poll_minutes = models.PositiveIntegerField(null=True, blank=True)
    polled_at = models.DateTimeField(null=True, blank=True)
    polled_sha = models.CharField(max_length=64, blank=True)
    # Failed polls in a row, since when, the last one's reason, and whether it was alerted.
    poll_failures = models.PositiveIntegerField(default=0)
    poll_failing_since = models.DateTimeField(null=True, blank=True)
    poll_error = models.TextField(blank=True)
    poll_alerted = models.BooleanField(default=False)
    # Which of the organization's channels hear about its pipelines: every one (also those
    # added later) unless the service names some.
    all_channels = models.BooleanField(default=True)
    channels = models.ManyToManyField("alerts.Channel", blank=True, related_name="+")
    # Where the service answers, through onwatch's Caddy; empty: it is not deployed.
    domain = models.CharField(max_length=253, blank=True)
    # Deploy each green pipeline of the service's branch by itself (once it has a domain).
    auto_deploy = models.BooleanField(default=True)
    # The two loopback ports its releases take turns on (caddy.Site), chosen with the domain.
    slot_ports = models.JSONField(default=list, blank=True)
    # After each deploy, its release is watched this long (0: not at all) and rolled back
    # by onwatch when, with at least watch_min_requests answered, more than
    # watch_error_percent of them are 5xx and over watch_error_factor times the share of
    # the release before it (watch.py); or when their mean latency is over watch_latency_ms
    # and over watch_latency_factor (0: latency never counts) times the one before it.
    watch_seconds = models.PositiveIntegerField(default=300)
    watch_min_requests = models.PositiveIntegerField(default=20)
    watch_error_percent = models.FloatField(default=5.0)
    watch_error_factor = models.FloatField(default=3.0)
    watch_latency_factor = models.FloatField(default=3.0)
    watch_latency_ms = models.PositiveIntegerField(default=500)
    # The backup plan a deploy runs first when its release has migrations (a release
    # command). A string reference: deploys imports nothing of backups but its services.
    backup_plan = models.ForeignKey(
        "backups.Plan", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "id"]
        constraints = [models.UniqueConstraint(fields=["org", "name"], name="service_name_unique")]

    def __str__(self) -> str:
        return self.name

    @property
    def secret_names(self) -> list[str]:
        return sorted(self.secrets or {})


class State(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    # A step that never ran because one before it failed or the pipeline was stopped.
    SKIPPED = "skipped"


ENDED = (State.SUCCEEDED, State.FAILED, State.CANCELLED, State.INTERRUPTED, State.SKIPPED)


class Trigger(models.TextChoices):
    UI = "ui", "run now (page)"
    API = "api", "run now (API)"
    CLI = "cli", "run now (command line)"
    WEBHOOK = "webhook", "push (webhook)"
    POLL = "poll", "push (found by polling)"
    PUSH = "push", "git push"


class Pipeline(models.Model):
    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="pipelines")
    branch = models.CharField(max_length=200)
    # Filled by the checkout step: the exact commit tested, and who made it.
    commit = models.CharField(max_length=64, blank=True)
    author = models.CharField(max_length=300, blank=True)
    message = models.TextField(blank=True)
    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    triggered_by = models.CharField(max_length=200, blank=True)
    # Who pushed: the member who ran it or whose key pushed, or the member whose e-mail the
    # webhook names; pusher_email is the e-mail a webhook named (kept when no member has it).
    pusher = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    pusher_email = models.CharField(max_length=254, blank=True)
    state = models.CharField(max_length=12, choices=State.choices, default=State.QUEUED)
    # One line: why it did not succeed.
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    job = models.ForeignKey(Job, on_delete=models.SET_NULL, null=True, blank=True)
    # From the test step's JUnit report; tests_total is None when none was read.
    tests_total = models.IntegerField(null=True, blank=True)
    tests_failed = models.IntegerField(default=0)
    tests_errors = models.IntegerField(default=0)
    tests_skipped = models.IntegerField(default=0)
    # [{"name", "classname", "message"}] of the tests that failed or errored, masked.
    failing_tests = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["service", "branch", "-id"], name="pipeline_branch")]

    def __str__(self) -> str:
        return f"pipeline #{self.pk} of {self.service.name}"

    @property
    def pushed_by(self) -> str:
        """Who pushed, in words: a member by name and e-mail, else the e-mail a webhook
        named (not a member's), else empty (a command, polling, onwatch itself)."""
        if self.pusher is not None:
            name = self.pusher.get_full_name().strip()
            email = self.pusher.email
            return f"{name} <{email}>" if name and email else name or email
        if self.pusher_email:
            return f"{self.pusher_email} (not a member)"
        return ""

    @property
    def seconds(self) -> float | None:
        if self.started_at and self.ended_at:
            return (self.ended_at - self.started_at).total_seconds()
        return None


class PipelineStep(models.Model):
    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveIntegerField()
    name = models.CharField(max_length=60)
    command = models.TextField(blank=True)
    state = models.CharField(max_length=12, choices=State.choices, default=State.QUEUED)
    exit_code = models.IntegerField(null=True, blank=True)
    reason = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    seconds = models.FloatField(null=True, blank=True)
    # The step's last lines of output (the whole output is in the job's log).
    tail = models.TextField(blank=True)

    class Meta:
        ordering = ["position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["pipeline", "position"], name="step_position_unique")
        ]

    def __str__(self) -> str:
        return f"{self.name} of pipeline #{self.pipeline_id}"


class WebhookDelivery(models.Model):
    """One webhook request to a service, whatever became of it: the service's page lists
    them, so a refused or ignored delivery is seen, never silently dropped."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="deliveries")
    received_at = models.DateTimeField(default=timezone.now)
    source = models.CharField(max_length=20, blank=True)
    event = models.CharField(max_length=60, blank=True)
    delivery_id = models.CharField(max_length=200, blank=True)
    # Set only on the delivery that was let in: unique, so the same id again is a replay.
    claimed_id = models.CharField(max_length=200, null=True, blank=True)
    # The sha256 of the body, set likewise: forges sign the body but not the id header, so a
    # captured push re-sent with a new id is a replay too.
    body_sha256 = models.CharField(max_length=64, null=True, blank=True)
    status = models.PositiveSmallIntegerField()
    outcome = models.TextField()
    pipeline = models.ForeignKey(Pipeline, on_delete=models.SET_NULL, null=True, blank=True)
    # Signed with the service's secret: unsigned ones anyone can send, so few are kept.
    signed = models.BooleanField(default=False)

    class Meta:
        ordering = ["-received_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["service", "claimed_id"], name="delivery_id_unique"),
            models.UniqueConstraint(fields=["service", "body_sha256"], name="delivery_body_unique"),
        ]

    def __str__(self) -> str:
        return f"delivery {self.delivery_id or '(no id)'} to {self.service.name}"


class HostKey(models.Model):
    """The key pair onwatch signs in to the organization's SSH hosts with: one per
    organization, made on first use; its public half goes in each host's authorized_keys."""

    org = models.OneToOneField(Organization, on_delete=models.CASCADE, related_name="host_key")
    private_key = EncryptedTextField()
    public_key = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"host key of {self.org}"


THIS_MACHINE = "this machine"


class Host(models.Model):
    """Where a service's releases run: this machine (always there) or an SSH host that
    onwatch signs in to with the organization's key, its host key pinned on first use."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="hosts")
    # "this machine", or user@address[:port] as people typed it (the port only when not 22).
    name = models.CharField(max_length=300)
    local = models.BooleanField(default=False)
    user = models.CharField(max_length=100, blank=True)
    address = models.CharField(max_length=255, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True)
    known_hosts = models.TextField(blank=True)
    # Where it runs, and what it costs a month: shown beside its incidents (readiness board).
    provider = models.CharField(max_length=100, blank=True)
    monthly_cost = models.DecimalField(max_digits=10, decimal_places=2, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    # An admin allowed the deploy user to be root or use sudo without a password.
    allow_sudo = models.BooleanField(default=False)
    # Its Caddy's ports (an SSH host's; this machine's come from the ONWATCH_CADDY_* settings):
    # below 1024 they need a right the deploy user may lack (the host's check says so).
    caddy_https = models.BooleanField(default=True)
    http_port = models.PositiveIntegerField(default=80)
    https_port = models.PositiveIntegerField(default=443)
    health_port = models.PositiveIntegerField(default=2020)
    # The last check: when, whether all was there (None: never checked), one line per thing.
    checked_at = models.DateTimeField(null=True, blank=True)
    ready = models.BooleanField(null=True, blank=True)
    findings = models.JSONField(default=list, blank=True)
    # Why the last check could not connect (empty when it could).
    check_error = models.TextField(blank=True)
    # How far its clock was ahead of onwatch's when a check last read it, and when (seconds;
    # behind: below 0; None: never read). Its logs and its deploys' steps are timed by it.
    clock_skew = models.FloatField(null=True, blank=True)
    clock_read_at = models.DateTimeField(null=True, blank=True)
    # A failed check alerts once; the next good one says so and clears this.
    alerted = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-local", "name", "id"]
        constraints = [models.UniqueConstraint(fields=["org", "name"], name="host_name_unique")]

    def __str__(self) -> str:
        return self.name

    @property
    def cost_text(self) -> str:
        if self.monthly_cost is None:
            return ""
        return f"{self.monthly_cost} {self.currency} a month".strip()


class ServiceHost(models.Model):
    """One of the hosts a service runs on, in the order its deploys go through them. A
    service with none runs on this machine only, on its own slot_ports; an SSH host's two
    slot ports are asked of the host on its first deploy there and kept."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="placements")
    # A host a service runs on is never removed from under it (its releases run there).
    host = models.ForeignKey(Host, on_delete=models.PROTECT, related_name="placements")
    position = models.PositiveIntegerField()
    slot_ports = models.JSONField(default=list, blank=True)
    # What served the service there when onwatch last looked (each deploy's end), and when:
    # the service page shows it without reaching every host.
    serving = models.CharField(max_length=300, blank=True)
    serving_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["service", "host"], name="service_host_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.service.name} on {self.host.name}"


class ReleaseState(models.TextChoices):
    BUILDING = "building"
    READY = "ready"  # built, its release command ran: it can be made live
    FAILED = "failed"
    PRUNED = "pruned"  # its directory was removed to make room; it cannot come back


class Release(models.Model):
    """One commit of a service built into a directory of its own that never changes
    afterwards, so making it live again (a rollback) needs no rebuild."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="releases")
    pipeline = models.ForeignKey(Pipeline, on_delete=models.SET_NULL, null=True, blank=True)
    commit = models.CharField(max_length=64, blank=True)
    message = models.TextField(blank=True)
    state = models.CharField(
        max_length=10, choices=ReleaseState.choices, default=ReleaseState.BUILDING
    )
    reason = models.TextField(blank=True)
    directory = models.CharField(max_length=1000, blank=True)
    # Its release command changed the data so that an older release cannot run on it.
    no_rollback_past = models.BooleanField(default=False)
    no_rollback_why = models.TextField(blank=True)
    # The web command and health path read from its onwatch.toml when it was built.
    web_command = models.TextField(blank=True)
    health_path = models.CharField(max_length=500, blank=True)
    # The snapshot of the backup taken just before its release command ran, and when that
    # backup ended: what to restore should its migrations go wrong.
    backup_snapshot = models.CharField(max_length=64, blank=True)
    backed_up_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Its answers as counted while it served: in its own watch after its switch, and just
    # before each later switch away from it (watch.py). The baseline a release deployed
    # after it is judged against; None: never counted (never watched). `tally_seconds`: the
    # time all those answers took; `tally_span`: the seconds of serving they cover.
    tally_requests = models.PositiveBigIntegerField(null=True, blank=True)
    tally_errors = models.PositiveBigIntegerField(null=True, blank=True)
    tally_seconds = models.FloatField(null=True, blank=True)
    tally_span = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return self.label

    @property
    def backup_text(self) -> str:
        """'backed up before its migrations: snapshot abc123 at 14:02', or ''."""
        if not self.backup_snapshot or self.backed_up_at is None:
            return ""
        at = self.backed_up_at.astimezone(UTC)
        snapshot = self.backup_snapshot[:8]
        return f"backed up before its migrations: snapshot {snapshot} at {at:%H:%M} UTC"

    @property
    def label(self) -> str:
        """How Caddy's slot file and people name it (releases.live_release reads it back)."""
        return f"release {self.pk} ({self.commit[:7] or 'no commit'})"


class DeployKind(models.TextChoices):
    DEPLOY = "deploy"
    ROLLBACK = "rollback"


class Deploy(models.Model):
    """One attempt to make a release live: its timeline (steps) and how it ended."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="deploys")
    kind = models.CharField(max_length=10, choices=DeployKind.choices, default=DeployKind.DEPLOY)
    release = models.ForeignKey(Release, on_delete=models.SET_NULL, null=True, blank=True)
    # The pipeline it waits for (an automatic deploy), and the commit asked for.
    pipeline = models.ForeignKey(Pipeline, on_delete=models.SET_NULL, null=True, blank=True)
    commit = models.CharField(max_length=64, blank=True)
    # How it was asked for: ui, api, cli, or "pipeline" (after a green one, by itself).
    trigger = models.CharField(max_length=10)
    triggered_by = models.CharField(max_length=200, blank=True)
    # Asked to deploy without the backup before migrations, on purpose (audited).
    skip_backup = models.BooleanField(default=False)
    state = models.CharField(max_length=12, choices=State.choices, default=State.QUEUED)
    reason = models.TextField(blank=True)
    # What serves the domain once it ended, in words ("release 4 (1a2b3c4)").
    live_after = models.CharField(max_length=300, blank=True)
    # [{"name", "started", "ended", "seconds", "ok", "detail"}], in order.
    steps = models.JSONField(default=list, blank=True)
    job = models.ForeignKey(Job, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    # When Caddy could first send its release requests (the switch step turned its slot
    # on): when it went live. ended_at comes seconds later, after the old one drained.
    switched_at = models.DateTimeField(null=True, blank=True)
    # On several hosts, switched in turn: when its release went live on the last one
    # switched (switched_at is the first's); users got it everywhere only from then on.
    all_live_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    # What users felt during the switch, as Caddy counted it (switch.Felt): requests
    # answered, those Caddy answered itself because no release did, 5xx the app sent,
    # answers of the old release after the switch, and the old release's drain. None when
    # not counted: felt_unmeasured says why (empty too: the deploy never reached a switch).
    switch_served = models.PositiveIntegerField(null=True, blank=True)
    switch_failed = models.PositiveIntegerField(null=True, blank=True)
    switch_app_errors = models.PositiveIntegerField(null=True, blank=True)
    switch_mixed = models.PositiveIntegerField(null=True, blank=True)
    drain_seconds = models.FloatField(null=True, blank=True)
    felt_unmeasured = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk} of {self.service.name}"

    @property
    def felt_text(self) -> str:
        """What users felt during the switch, in one sentence ("0 failed requests during
        the switch, of 1,204 served; drained in 4.2 s"); empty when no switch happened."""
        if self.switch_served is None:
            reached = any(s.get("name") == "switch" for s in self.steps)
            if not (self.felt_unmeasured or reached):
                return ""
            why = f" ({self.felt_unmeasured})" if self.felt_unmeasured else ""
            return f"Requests during the switch: not measured{why}"
        return "; ".join(self._felt_parts())

    @property
    def felt_bad(self) -> bool:
        """Users saw an error or the old version after the switch."""
        counts = (self.switch_failed, self.switch_app_errors, self.switch_mixed)
        return any(n for n in counts)

    def _felt_parts(self) -> list[str]:
        failed = self.switch_failed or 0
        parts = [
            f"{_count(failed, 'failed request')} during the switch "
            f"(no release answered them), of {self.switch_served:,} served"
            if failed
            else f"0 failed requests during the switch, of {self.switch_served:,} served"
        ]
        if self.switch_app_errors:
            parts.append(f"{_count(self.switch_app_errors, 'error')} sent by the app itself")
        if self.switch_mixed:
            parts.append(
                f"{_count(self.switch_mixed, 'answer')} from the old release after the switch"
            )
        # None: nothing served before, or the old release could not be stopped (the
        # deploy's warning says so); either way nothing drained.
        if self.drain_seconds is not None:
            parts.append(f"drained in {self.drain_seconds:.1f} s")
        return parts

    @property
    def seconds(self) -> float | None:
        if self.started_at and self.ended_at:
            return (self.ended_at - self.started_at).total_seconds()
        return None


def _count(n: int, what: str) -> str:
    return f"{n:,} {what}{'' if n == 1 else 's'}"


class WatchState(models.TextChoices):
    WATCHING = "watching"
    PASSED = "passed"
    # Too few requests, or the count stopped: nothing could be said either way.
    NOT_JUDGED = "not judged"
    ROLLING_BACK = "rolling back"
    ROLLED_BACK = "rolled back"
    # Clearly worse, but not rolled back (no rollback past it, the rollback failed).
    FAILING = "failing"
    # A newer deploy or a rollback began before the watch ended.
    REPLACED = "replaced"


class Watch(models.Model):
    """The watch of a deploy's release once it went live: its answers against those of the
    release before it, as Caddy logged them (watch.py). Kept on the row, counts and how far
    the log was read, so a watch goes on after onwatch restarts."""

    deploy = models.OneToOneField(Deploy, on_delete=models.CASCADE, related_name="watch")
    # The release live before the switch: the baseline, and what a rollback makes live.
    previous = models.ForeignKey(Release, on_delete=models.SET_NULL, null=True, related_name="+")
    state = models.CharField(max_length=12, choices=WatchState.choices, default=WatchState.WATCHING)
    started_at = models.DateTimeField(default=timezone.now)
    until = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    # The slot the release answers from ("127.0.0.1:port"), and how far its log was read.
    upstream = models.CharField(max_length=100)
    offset = models.BigIntegerField(default=0)
    # When the watch started Caddy's count again, after a deploy that began after its own
    # ended without a switch (None: its count is the one its own deploy started).
    counting_since = models.DateTimeField(null=True, blank=True)
    requests = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    # Seconds all its answers took together (their mean is the latency compared).
    seconds = models.FloatField(default=0.0)
    # Its answers of the last RECENT_SECONDS (watch.py), by the second they started:
    # [[unix second, requests, errors, seconds], …], so a release that fails after serving
    # well for minutes is found as soon as it does.
    recent = models.JSONField(default=list, blank=True)
    # When it last read Caddy's log: its counts cover the serving until then.
    looked_at = models.DateTimeField(null=True, blank=True)
    # The seconds of serving since its switch it never read: from its last read before it
    # started Caddy's count again (a newer deploy had taken it over) until it did.
    unread_seconds = models.FloatField(default=0.0)
    # A service on SSH hosts: each host's count, read on its own (watch.py): [{"host": id,
    # "name", "upstream", "offset", "requests", "errors", "seconds", "unread": why its
    # last read failed, "unread_since": when reads began failing}]; the sums above are
    # theirs. Empty: this machine alone, through `upstream` and `offset`.
    hosts = models.JSONField(default=list, blank=True)
    # The release before it, its baseline: what its tally held (Release.tally_*) with
    # what was counted from just before the switch until it; None: neither was counted.
    base_requests = models.PositiveBigIntegerField(null=True, blank=True)
    base_errors = models.PositiveBigIntegerField(null=True, blank=True)
    base_seconds = models.FloatField(null=True, blank=True)
    # The seconds of serving the baseline covers, and the part of it (requests, seconds)
    # kept in the release's tally from before this deploy; None: it had no tally.
    base_span = models.FloatField(null=True, blank=True)
    base_kept_requests = models.PositiveBigIntegerField(null=True, blank=True)
    base_kept_span = models.FloatField(null=True, blank=True)
    # When it was found clearly worse, and the rollback onwatch asked for then.
    detected_at = models.DateTimeField(null=True, blank=True)
    rollback = models.ForeignKey(
        Deploy, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    verdict = models.TextField(blank=True)

    def __str__(self) -> str:
        return f"watch of deploy #{self.deploy_id}"
