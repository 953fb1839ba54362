from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "onwatch.alerts"
    label = "alerts"

    def ready(self) -> None:
        from onwatch.alerts import tasks
        from onwatch.core.scheduler import every_tick

        every_tick("alerts.escalate", tasks.on_tick)
