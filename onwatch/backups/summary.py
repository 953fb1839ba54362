"""What the Backups page shows per plan: the two numbers nobody has to guess."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from onwatch.backups.models import BackupRun, Drill, Plan
from onwatch.backups.rpo import rpo_now
from onwatch.backups.services import not_offsite


@dataclass(frozen=True)
class PlanRow:
    plan: Plan
    last_run: BackupRun | None
    last_proven: Drill | None  # the newest drill that verified the restored data
    last_drill: Drill | None
    rpo_now: timedelta
    not_offsite: bool

    @property
    def rpo_over(self) -> bool:
        return self.rpo_now > self.plan.rpo

    @property
    def rpo_hours(self) -> float:
        return self.rpo_now.total_seconds() / 3600

    @property
    def rpo_target_hours(self) -> float:
        return self.plan.rpo_minutes / 60


def row(plan: Plan, now: datetime | None = None) -> PlanRow:
    return PlanRow(
        plan=plan,
        last_run=plan.runs.first(),
        last_proven=plan.drills.filter(verified=True).first(),
        last_drill=plan.drills.first(),
        rpo_now=rpo_now(plan, now or timezone.now()),
        not_offsite=not_offsite(plan),
    )
