"""`onwatch monitors export|import`: monitors as code (YAML)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from onwatch.core.commands import AddCommand, organization
from onwatch.startup import fail, prepare


def register(add: AddCommand) -> None:
    monitors = add("monitors", lambda a: 0, "Monitors as code (YAML).")
    monitors_sub = monitors.add_subparsers(dest="monitors_command", required=True, metavar="ACTION")
    export = add(
        "export", cmd_monitors_export, "Print an organization's monitors as YAML.", monitors_sub
    )
    export.add_argument("--org", help="the organization's name (needed when there are several)")
    imp = add(
        "import", cmd_monitors_import, "Create or change monitors from a YAML file.", monitors_sub
    )
    imp.add_argument("file", metavar="FILE", help="the YAML file, or - for standard input")
    imp.add_argument("--org", help="the organization's name (needed when there are several)")
    imp.add_argument(
        "--dry-run", action="store_true", help="report what would change, change nothing"
    )


def cmd_monitors_export(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.uptime import configio

    org = organization(args.org)
    sys.stdout.write(configio.export(org))
    return 0


def cmd_monitors_import(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.core.audit import CLI
    from onwatch.uptime import configio

    source = "<stdin>" if args.file == "-" else args.file
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    except OSError as e:
        fail(f"cannot read {source}: {e.strerror or e}")
    except UnicodeDecodeError:
        fail(f"{source} is not UTF-8 text; save it as UTF-8 and try again")
    org = organization(args.org)
    report = configio.import_text(org, text, CLI, dry_run=args.dry_run)
    if report.problems:
        for problem in report.problems:
            print(problem.show(source), file=sys.stderr)
        count = len(report.problems)
        fail(f"{count} problem{'s' if count > 1 else ''} in {source}; nothing was changed")
    print(import_summary(report, args.dry_run))
    return 0


def import_summary(report: Any, dry_run: bool) -> str:
    parts = []
    if report.created:
        parts.append(f"created {', '.join(report.created)}")
    if report.changed:
        parts.append(
            "changed " + ", ".join(f"{n} ({', '.join(f)})" for n, f in report.changed.items())
        )
    parts.append(f"{len(report.unchanged)} unchanged")
    tail = " (dry run: nothing was written)" if dry_run else ""
    return f"onwatch: monitors: {'; '.join(parts)}{tail}"
