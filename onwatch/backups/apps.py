from django.apps import AppConfig


class BackupsConfig(AppConfig):
    name = "onwatch.backups"
    label = "backups"

    def ready(self) -> None:
        from onwatch.backups import rpo, tasks  # noqa: F401  (job handlers)
        from onwatch.core.scheduler import every_tick

        every_tick("backups.rpo", rpo.check_all)
