from django.apps import AppConfig


class UptimeConfig(AppConfig):
    name = "onwatch.uptime"
    label = "uptime"

    def ready(self) -> None:
        from onwatch.core import ingest
        from onwatch.core.dashboard import Card, add_card
        from onwatch.core.hooks import add_router
        from onwatch.core.scheduler import builtin_schedule, every_tick
        from onwatch.uptime import heartbeats, services, tasks  # noqa: F401  (job handlers)

        every_tick("uptime.heartbeats", heartbeats.check_overdue)
        builtin_schedule("History roll-up", "uptime.rollup", "7 * * * *")
        add_router("/monitors/", "onwatch.uptime.api:monitors", "monitors")
        # From the monitors' state columns and the incidents: never the raw results.
        add_card(
            Card(
                "uptime.monitors",
                "Monitors",
                "uptime/cards/monitors.html",
                services.summary,
                10,
                permission="monitors.view",
            )
        )
        ingest.register("onwatch.uptime.fastping:ROUTE")
