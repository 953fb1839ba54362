from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "onwatch.core"
    label = "core"
    verbose_name = "onwatch core"

    def ready(self) -> None:
        from onwatch.core import cards, checks, tasks  # noqa: F401  (system checks, job handlers)

        cards.register()
