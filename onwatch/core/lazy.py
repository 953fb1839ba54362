from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class _LazyModule:
    """Imports the module on first attribute access."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)


def lazy_module(name: str) -> Any:
    return _LazyModule(name)
