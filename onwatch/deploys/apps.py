from django.apps import AppConfig


class DeploysConfig(AppConfig):
    name = "onwatch.deploys"
    label = "deploys"

    def ready(self) -> None:
        from onwatch.core.hooks import add_router, on_worker_start
        from onwatch.core.scheduler import every_tick
        from onwatch.deploys import polling, tasks, workdir  # noqa: F401  (job handlers)

        add_router("/services/", "onwatch.deploys.api:services", "services")
        add_router("/hosts/", "onwatch.deploys.hostapi:hosts", "hosts")
        every_tick("deploys.poll", polling.queue_due)
        on_worker_start("deploys.leftover-workspaces", workdir.remove_leftovers)
