"""The registry of `onwatch` commands that apps contribute: each app with commands has a
cli.py whose `register(add)` adds them, so onwatch/cli.py never reaches into an app."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

if TYPE_CHECKING:
    from onwatch.core.models import Organization

Command = Callable[[argparse.Namespace], int]


class AddCommand(Protocol):
    """Adds a command (or, with `parent`, an action of one) and returns its parser."""

    def __call__(
        self, name: str, fn: Command, help: str, parent: Any = ...
    ) -> argparse.ArgumentParser: ...


RegisterCommands = Callable[[AddCommand], None]


def organization(name: str | None) -> Organization:
    """The organization a command's `--org NAME` means: the one named, or the only one.
    Anything else stops the command with one line (exit code 2) saying what there is."""
    from onwatch.core.models import Organization

    orgs = list(Organization.objects.order_by("id"))
    names = ", ".join(o.name for o in orgs) or "none yet"
    if name is not None:
        found = [o for o in orgs if o.name == name]
        if not found:
            refuse(f"there is no organization {name!r} (there are: {names})")
        return found[0]
    if not orgs:
        refuse("there is no organization yet; create the owner with onwatch createowner")
    if len(orgs) > 1:
        refuse(f"there are several organizations ({names}); say which with --org NAME")
    return orgs[0]


def refuse(message: str) -> NoReturn:
    """Stop a command with one line on stderr and exit code 2 (bad input)."""
    print(f"onwatch: {message}", file=sys.stderr)
    raise SystemExit(2)
