"""python -m tests.support.child MODULE:FUNCTION JSON_ARGS [--migrate] (see `call`)."""

from __future__ import annotations

import importlib
import json
import sys


def main(argv: list[str]) -> None:
    target, args, *flags = argv
    # Start-up first: the function's module may import models.
    from onwatch.startup import prepare

    prepare(migrate="--migrate" in flags)
    module, name = target.split(":")
    getattr(importlib.import_module(module), name)(*json.loads(args))


if __name__ == "__main__":
    main(sys.argv[1:])
