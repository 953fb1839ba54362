from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "onwatch.core"
    label = "core"
    verbose_name = "onwatch core"

    def ready(self) -> None:
        from onwatch.core import cards, checks, tasks  # noqa: F401  (system checks, job handlers)

        cards.register()
        from onwatch.core.scheduler import builtin_schedule

        # Every night: the log lines of jobs ended over ONWATCH_JOB_LOG_DAYS ago go.
        builtin_schedule("Job log clean-up", "core.age_out_logs", "17 4 * * *")
