"""The alerts app's dashboard cards: its channels, and the latest deliveries."""

from __future__ import annotations

from typing import Any

from onwatch.alerts.services import channel_count, recent_deliveries
from onwatch.core.dashboard import Card, add_card
from onwatch.core.models import Organization


def channels(org: Organization) -> dict[str, Any]:
    return {"channels": channel_count(org)}


def deliveries(org: Organization) -> dict[str, Any]:
    return {"deliveries": recent_deliveries(org, 5)}


def register() -> None:
    add_card(Card("alerts.channels", "", "alerts/cards/channels.html", channels, 10, "top"))
    # Below the monitors, above the deliveries: whoever sees the dashboard is told.
    add_card(Card("alerts.no_channels", "", "alerts/cards/no_channels.html", channels, 15))
    add_card(
        Card(
            "alerts.deliveries",
            "Recent deliveries",
            "alerts/cards/deliveries.html",
            deliveries,
            30,
        )
    )
