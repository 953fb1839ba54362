from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "onwatch.alerts"
    label = "alerts"

    def ready(self) -> None:
        from onwatch.alerts import services, tasks
        from onwatch.core.hooks import on_alert
        from onwatch.core.scheduler import every_tick

        every_tick("alerts.escalate", tasks.on_tick)
        # Core's own trouble (failed jobs, switched-off schedules) reaches the channels.
        on_alert("alerts.channels", services.raise_alert)
