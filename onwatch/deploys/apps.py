from django.apps import AppConfig


class DeploysConfig(AppConfig):
    name = "onwatch.deploys"
    label = "deploys"

    def ready(self) -> None:
        from onwatch.core.dashboard import Card, add_card
        from onwatch.core.hooks import add_router, on_worker_start
        from onwatch.core.scheduler import every_tick
        from onwatch.deploys import dashboard, polling, tasks, workdir  # noqa: F401  (job handlers)

        add_router("/services/", "onwatch.deploys.api:services", "services")
        add_router("/hosts/", "onwatch.deploys.hostapi:hosts", "hosts")
        every_tick("deploys.poll", polling.queue_due)
        on_worker_start("deploys.leftover-workspaces", workdir.remove_leftovers)
        # Below the monitors: what serves, how the last deploy went, deploys' incidents.
        add_card(
            Card(
                "deploys.services",
                "Services",
                "deploys/cards/services.html",
                dashboard.summary,
                20,
                permission="services.view",
            )
        )
