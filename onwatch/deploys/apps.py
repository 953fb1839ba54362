from django.apps import AppConfig


class DeploysConfig(AppConfig):
    name = "onwatch.deploys"
    label = "deploys"

    def ready(self) -> None:
        from onwatch.core.hooks import add_router
        from onwatch.deploys import tasks  # noqa: F401  (job handlers)

        add_router("/services/", "onwatch.deploys.api:services", "services")
