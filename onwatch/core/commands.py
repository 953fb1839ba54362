"""The registry of `onwatch` commands that apps contribute: each app with commands has a
cli.py whose `register(add)` adds them, so onwatch/cli.py never reaches into an app."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, Protocol

Command = Callable[[argparse.Namespace], int]


class AddCommand(Protocol):
    """Adds a command (or, with `parent`, an action of one) and returns its parser."""

    def __call__(
        self, name: str, fn: Command, help: str, parent: Any = ...
    ) -> argparse.ArgumentParser: ...


RegisterCommands = Callable[[AddCommand], None]
