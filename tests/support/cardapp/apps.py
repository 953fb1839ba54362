from __future__ import annotations

from typing import Any

from django.apps import AppConfig

from onwatch.core.models import Organization

CARDS = ("cardapp.weather", "cardapp.secret")


def weather(org: Organization) -> dict[str, Any]:
    return {"place": org.name}


class CardAppConfig(AppConfig):
    name = "tests.support.cardapp"
    label = "cardapp"

    def ready(self) -> None:
        from onwatch.core.dashboard import Card, add_card

        # Order 20: between the monitors (10) and the deliveries (30).
        add_card(Card(CARDS[0], "Weather", "cardapp/weather.html", weather, 20))
        add_card(Card(CARDS[1], "", "cardapp/secret.html", weather, 21, permission="audit.view"))
