from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "onwatch.alerts"
    label = "alerts"

    def ready(self) -> None:
        from onwatch.alerts import tasks  # noqa: F401  (registers job handlers)
