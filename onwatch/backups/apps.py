from django.apps import AppConfig


class BackupsConfig(AppConfig):
    name = "onwatch.backups"
    label = "backups"

    def ready(self) -> None:
        from onwatch.backups import rpo, tasks  # noqa: F401  (job handlers)
        from onwatch.core.scheduler import builtin_schedule, every_tick

        every_tick("backups.rpo", rpo.check_all)
        # Sundays 03:30 UTC: prune rewrites packs, so once a week rather than every run.
        builtin_schedule("Backup space reclaim", "backups.reclaim_all", "30 3 * * 0")
