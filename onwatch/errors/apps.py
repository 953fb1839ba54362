from django.apps import AppConfig


class ErrorsConfig(AppConfig):
    name = "onwatch.errors"
    label = "errors"

    def ready(self) -> None:
        from onwatch.core import ingest
        from onwatch.core.hooks import add_router

        add_router("/errors/projects/", "onwatch.errors.api:projects", "errors")
        ingest.register("onwatch.errors.fastroute:ROUTE")
