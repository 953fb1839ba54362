from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "onwatch.core"
    label = "core"
    verbose_name = "onwatch core"
