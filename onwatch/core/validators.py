"""Validators for text, ids and JSON that every app's typed input shares, kept apart from
core/rest.py: services import these, and loading django-ninja with them cost every onwatch
process (workers, the scheduler, each command) a fifth of a second it never used."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, Field

# Database ids are 64-bit; a larger number reaching a query is an error in the driver (500),
# so anything beyond is simply "not found".
MAX_ID = 2**63 - 1


def no_nul(value: str) -> str:
    # PostgreSQL cannot store NUL in text; refuse it here rather than fail at the database.
    if "\x00" in value:
        raise ValueError("text may not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(no_nul)]
Id = Annotated[int, Field(ge=1, le=MAX_ID)]


def plain_json(value: Any) -> Any:
    """`value` if every string and number in it can be stored as JSON on any database;
    raises ValueError otherwise (NUL in text, NaN or infinity)."""
    if isinstance(value, str):
        no_nul(value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite")
    elif isinstance(value, dict):
        for key, item in value.items():
            no_nul(key)
            plain_json(item)
    elif isinstance(value, list):
        for item in value:
            plain_json(item)
    return value
