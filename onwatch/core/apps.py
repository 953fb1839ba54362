from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "onwatch.core"
    label = "core"
    verbose_name = "onwatch core"

    def ready(self) -> None:
        from onwatch.core import checks  # noqa: F401  (registers system checks)
