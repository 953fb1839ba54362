from django.apps import AppConfig


class ErrorsConfig(AppConfig):
    name = "onwatch.errors"
    label = "errors"

    def ready(self) -> None:
        from onwatch.core import ingest

        ingest.register("onwatch.errors.fastroute:ROUTE")
