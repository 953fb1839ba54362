from django.apps import AppConfig


class DeploysConfig(AppConfig):
    name = "onwatch.deploys"
    label = "deploys"

    def ready(self) -> None:
        from onwatch.core.hooks import add_router
        from onwatch.core.scheduler import every_tick
        from onwatch.deploys import polling, tasks  # noqa: F401  (job handlers)

        add_router("/services/", "onwatch.deploys.api:services", "services")
        every_tick("deploys.poll", polling.poll_all)
