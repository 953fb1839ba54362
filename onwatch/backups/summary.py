"""What the Backups page shows per plan: the two numbers nobody has to guess, and in plain
words what is wrong, so "is my data safe?" is answered at a glance."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Exists, OuterRef
from django.utils import timezone

from onwatch.backups.models import BackupRun, Drill, Outcome, Plan
from onwatch.backups.rpo import newest_good
from onwatch.backups.services import not_offsite


@dataclass(frozen=True)
class PlanRow:
    plan: Plan
    last_run: BackupRun | None
    last_proven: Drill | None  # the newest drill that verified the restored data
    last_drill: Drill | None  # the newest drill that ended with a verdict
    # The newest drill when its worker died, newer than last_drill: shown, never counted.
    drill_interrupted: Drill | None
    # None: no good copy yet, so a disaster now would lose everything.
    rpo_now: timedelta | None
    not_offsite: bool

    @property
    def never_backed_up(self) -> bool:
        return self.rpo_now is None

    @property
    def rpo_over(self) -> bool:
        return self.rpo_now is None or self.rpo_now > self.plan.rpo

    @property
    def rpo_hours(self) -> float | None:
        return None if self.rpo_now is None else self.rpo_now.total_seconds() / 3600

    @property
    def rpo_target_hours(self) -> float:
        return self.plan.rpo_minutes / 60

    @property
    def drill_failed(self) -> bool:
        return self.last_drill is not None and self.last_drill.state == Outcome.FAILED

    @property
    def problems(self) -> list[str]:
        """What stands between this plan and "your data is safe", worst first; empty when
        nothing does."""
        found = []
        if self.never_backed_up:
            found.append("no good backup yet")
        elif self.rpo_over:
            found.append("newest backup older than the target")
        if self.last_run is not None and self.last_run.state == Outcome.FAILED:
            found.append("last backup failed")
        elif self.last_run is not None and self.last_run.state == Outcome.INTERRUPTED:
            found.append("last backup did not finish")
        if self.drill_failed:
            found.append("last restore drill failed")
        if self.last_proven is None:
            found.append("not proven restorable")
        if self.not_offsite:
            found.append("no offsite copy")
        return found


def last_proven(plan: Plan) -> Drill | None:
    """The newest drill that restored and verified its snapshot, unless a later drill of
    that same snapshot failed: a proof the snapshot no longer lives up to proves nothing."""
    failed_later = Drill.objects.filter(
        plan=plan,
        state=Outcome.FAILED,
        verified=False,
        snapshot_id=OuterRef("snapshot_id"),
        started_at__gt=OuterRef("started_at"),
    )
    found: Drill | None = plan.drills.filter(verified=True).exclude(Exists(failed_later)).first()
    return found


# Drills that say nothing about the data: under way, stopped by someone, or cut short
# when their worker died.
NO_VERDICT = [Outcome.RUNNING, Outcome.CANCELLED, Outcome.INTERRUPTED]


def interrupted_drill(plan: Plan) -> Drill | None:
    newest = plan.drills.exclude(state__in=[Outcome.RUNNING, Outcome.CANCELLED]).first()
    return newest if newest is not None and newest.state == Outcome.INTERRUPTED else None


def rpo_age(plan: Plan, now: datetime) -> timedelta | None:
    good = newest_good(plan)
    return None if good is None else now - good


def row(plan: Plan, now: datetime | None = None) -> PlanRow:
    return PlanRow(
        plan=plan,
        # A cancelled run or drill says nothing about the data: it neither fails nor proves.
        # An interrupted run does count: the plan's newest backup did not happen.
        last_run=plan.runs.exclude(state=Outcome.CANCELLED).first(),
        last_proven=last_proven(plan),
        last_drill=plan.drills.exclude(state__in=NO_VERDICT).first(),
        drill_interrupted=interrupted_drill(plan),
        rpo_now=rpo_age(plan, now or timezone.now()),
        not_offsite=not_offsite(plan),
    )
