"""How a release's name is shown: a commit id in its short form, as git and the deploy
pages show it, so lists stay readable; any other name (a version) as it is."""

from __future__ import annotations

import re

from django import template

register = template.Library()

COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
SHORT = 12  # as `git log --abbrev=12`: unique in any repository a small team has


@register.filter
def release(name: object) -> str:
    text = "" if name is None else str(name)
    return text[:SHORT] if COMMIT.fullmatch(text) else text
