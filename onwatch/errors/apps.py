from django.apps import AppConfig


class ErrorsConfig(AppConfig):
    name = "onwatch.errors"
    label = "errors"

    def ready(self) -> None:
        from onwatch.core import ingest
        from onwatch.core.hooks import add_router
        from onwatch.core.scheduler import every_tick
        from onwatch.errors import tasks  # job handlers, and the tick

        every_tick("errors.states", tasks.on_tick)

        add_router("/errors/projects/", "onwatch.errors.api:projects", "errors")
        add_router("/errors/issues/", "onwatch.errors.api:issues", "errors")
        ingest.register("onwatch.errors.fastroute:ROUTE")
