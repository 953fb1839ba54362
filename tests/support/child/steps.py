"""A process that runs a pipeline step, for the sandbox tests: stands for an onwatch worker
that dies mid-step. It needs onwatch's settings, not its database, so it runs on its own:

    python -m tests.support.child.steps WORKSPACE WORD
"""

from __future__ import annotations

import sys
from pathlib import Path


def sleep_in_sandbox(workspace: str, word: str) -> None:
    """A step that says "running" (passed on to stdout) and sleeps a minute."""
    from onwatch.deploys import sandbox

    script = f"echo running; sleep 60 # {word}"
    step = sandbox.Step(["bash", "-c", script], Path(workspace), {"PATH": "/usr/bin:/bin"})
    sandbox.run(step, lambda chunk: print(chunk.decode(), end="", flush=True))


if __name__ == "__main__":
    import django

    django.setup()
    sleep_in_sandbox(*sys.argv[1:])
