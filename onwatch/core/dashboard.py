"""The dashboard's cards, which apps contribute (in their AppConfig.ready) so the dashboard
names no app: each card is a template and a function that reads what it shows for one
organization. A card a member's role may not see is neither read nor shown."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from django.template.loader import get_template
from django.utils.safestring import SafeString

from onwatch.core.models import Organization
from onwatch.core.roles import Role, has_permission

# "top": a count in the row of cards at the head of the page; "section": a block below,
# under its title.
Place = Literal["top", "section"]


@dataclass(frozen=True)
class Card:
    name: str
    title: str  # the section's heading; none for a count at the top or a bare hint
    template: str
    context: Callable[[Organization], Mapping[str, Any]]
    order: int  # smaller first, within its place
    place: Place = "section"
    permission: str = ""  # the member's role needs it to see the card; "" for everyone


@dataclass(frozen=True)
class Shown:
    title: str
    html: SafeString


CARDS: dict[str, Card] = {}


def add_card(card: Card) -> None:
    """Register a card; a name registered twice keeps the last one."""
    CARDS[card.name] = card


def remove_card(name: str) -> None:
    CARDS.pop(name, None)


def cards_for(org: Organization, role: Role, place: Place) -> list[Shown]:
    """The cards of one place that the role may see, in order, rendered. The context goes
    to its own template only: no request, so no context processors run once per card."""
    chosen = sorted(
        (c for c in CARDS.values() if c.place == place),
        key=lambda c: (c.order, c.name),
    )
    return [
        Shown(c.title, SafeString(get_template(c.template).render(dict(c.context(org)))))
        for c in chosen
        if not c.permission or has_permission(role, c.permission)
    ]
