from django.apps import AppConfig


class ErrorsConfig(AppConfig):
    name = "onwatch.errors"
    label = "errors"

    def ready(self) -> None:
        from onwatch.core import ingest
        from onwatch.core.hooks import add_router
        from onwatch.errors import tasks  # noqa: F401  (job handlers)

        add_router("/errors/projects/", "onwatch.errors.api:projects", "errors")
        add_router("/errors/issues/", "onwatch.errors.api:issues", "errors")
        ingest.register("onwatch.errors.fastroute:ROUTE")
