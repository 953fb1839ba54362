from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "onwatch.alerts"
    label = "alerts"

    def ready(self) -> None:
        from onwatch.alerts import cards, services, tasks
        from onwatch.core.hooks import add_router, on_alert
        from onwatch.core.scheduler import every_tick

        every_tick("alerts.escalate", tasks.on_tick)
        # Core's own trouble (failed jobs, switched-off schedules) reaches the channels.
        on_alert("alerts.channels", services.raise_alert)
        add_router("/policies/", "onwatch.alerts.api:policies", "escalation policies")
        add_router("/incidents/", "onwatch.alerts.api:incidents", "incidents")
        add_router("/maintenance/", "onwatch.alerts.api:maintenance", "maintenance windows")
        cards.register()
