"""The `onwatch` command. Every failure people can fix ends in one line and exit code 2."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from onwatch.config import ConfigError, unreachable_elsewhere
from onwatch.startup import describe_database, fail, prepare

Command = Callable[[argparse.Namespace], int]


def cmd_up(args: argparse.Namespace) -> int:
    settings = _settings()
    p = prepare(listen=(settings.HOST, settings.PORT), migrate=True)
    print(f"onwatch: data directory {p.data_dir}")
    print(f"onwatch: database {describe_database(settings)}")
    for thing in p.created:
        print(f"onwatch: created {thing}")
    if any(c.startswith("key file") for c in p.created):
        print(
            "onwatch: keep a copy of the key file somewhere safe and apart from this "
            "machine's backups; without it the stored secrets cannot be read"
        )
    for line in owner_notice():
        print(line)
    warn_unreachable(settings)
    print(f"onwatch: running at {settings.SITE_ROOT} — press Ctrl+C to stop", flush=True)
    become_supervisor()


def become_supervisor() -> NoReturn:
    """Replace this process (same pid, so signals and service managers still reach it)
    with the supervisor alone: Django stays loaded only in the children that use it,
    which keeps some 65 MiB out of the process that idles all day."""
    from django.db import connections

    connections.close_all()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "onwatch.supervisor"])  # noqa: S606  (fixed argv)


def owner_notice() -> list[str]:
    """Until there is an owner, every start prints a fresh one-time link to create one."""
    from onwatch.accounts.services import first_run

    if not first_run():
        return []
    return [
        "onwatch: no owner yet. Open this one-time link to create the owner account:",
        f"  {owner_link()}",
    ]


def owner_link(hours: int = 24) -> str:
    from django.conf import settings
    from django.urls import reverse

    from onwatch.core.models import Invite
    from onwatch.core.roles import Role

    # One live link at a time: a new start makes the previous unused ones useless.
    Invite.objects.filter(org=None, role=Role.OWNER, used_at=None).delete()
    _, token = Invite.issue(Role.OWNER, None, hours=hours)
    return settings.SITE_ROOT + reverse("invite", args=[token])


def warn_unreachable(settings: Any) -> None:
    line = unreachable_elsewhere(settings.HOST, settings.SITE)
    if line:
        print(line, flush=True)


def cmd_web(args: argparse.Namespace) -> int:
    import uvicorn

    settings = _settings()
    warn_unreachable(settings)
    listen = (settings.HOST, settings.PORT)
    if settings.WEB_WORKERS > 1:
        prepare_apart(listen)
    else:
        prepare(listen=listen)
    uvicorn.run(
        "onwatch.asgi:application",
        host=settings.HOST,
        port=settings.PORT,
        lifespan="off",
        proxy_headers=True,
        forwarded_allow_ips=settings.TRUSTED_PROXIES,
        timeout_graceful_shutdown=5,
        workers=settings.WEB_WORKERS,
        log_level="warning",
        server_header=False,
        # Access lines are INFO, never shown at this level, yet uvicorn formats one per
        # request while a handler exists; off, that work goes too (it shows at ping rates).
        access_log=False,
    )
    return 0


def prepare_apart(listen: tuple[str, int]) -> None:
    """The start-up checks in a child that ends after them: with several web workers this
    process only manages them, and without Django's apps loaded it stays some 70 MB
    smaller. The child's failure is this command's, in the same words and exit code."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            prepare(listen=listen)
        except ConfigError as e:
            print(f"onwatch: {e}", file=sys.stderr)
            code = 2
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise SystemExit(code)


def cmd_worker(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.core.loops import run_worker

    run_worker()
    return 0


def cmd_scheduler(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.core.loops import run_scheduler

    run_scheduler()
    return 0


def cmd_prober(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.uptime.prober import run_prober

    run_prober()
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    prepare(migrate=True)
    print("onwatch: database is up to date")
    return 0


def cmd_createowner(args: argparse.Namespace) -> int:
    prepare(migrate=True)
    from onwatch.accounts.services import first_run

    if args.link:
        if not first_run():
            fail("an owner exists already; owners invite people from the Members page")
        print(owner_link(hours=args.hours))
        return 0
    from django.core.exceptions import ValidationError
    from django.core.validators import validate_email

    from onwatch.accounts.forms import AcceptInviteForm
    from onwatch.accounts.services import create_account
    from onwatch.core.models import Organization
    from onwatch.core.roles import Role

    email = args.email or input("Email: ").strip()
    password = os.environ.get("ONWATCH_OWNER_PASSWORD") or getpass.getpass("Password: ")
    if not os.environ.get("ONWATCH_OWNER_PASSWORD") and getpass.getpass("Again: ") != password:
        fail("the two passwords differ; nothing was created")
    try:
        validate_email(email)
    except ValidationError:
        fail(f"{email!r} is not an email address; nothing was created")
    form = AcceptInviteForm(
        {"email": email, "password": password, "password_again": password, "org_name": args.org},
        needs_org=True,
    )
    if not form.is_valid():
        # Each of Django's messages is a sentence of its own.
        errors = " ".join(str(m) for msgs in form.errors.values() for m in msgs)
        fail(f"{errors} Nothing was created.")
    # The form's email is normalised (lower case), as the invite page stores it.
    email = form.cleaned_data["email"]
    # With owners already there this is the way back in for someone locked out: the new
    # owner joins the existing organization (and the audit log says so).
    org = None if first_run() else Organization.objects.order_by("id").first()
    create_account(email=email, password=password, role=Role.OWNER, org=org, org_name=args.org)
    where = f" in {org.name}" if org else ""
    print(f"onwatch: owner {email} created{where}; sign in and enrol a second factor")
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.core import audit
    from onwatch.core.keys import rotate

    r = rotate()
    audit.record("keys-rotated", actor="cli", old_key=r.old_key, new_key=r.new_key, values=r.values)
    print(f"onwatch: key {r.new_key} is now current; {r.values} secrets re-encrypted")
    print("onwatch: the key file changed — replace your safe copy of it")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.core import audit

    verdict = audit.verify()
    if verdict.ok:
        print(f"onwatch: audit log intact ({verdict.checked} entries)")
        return 0
    if verdict.first_bad is None:
        print(f"onwatch: audit log cannot be fully checked: {verdict.unchecked}", file=sys.stderr)
        return 1
    print(f"onwatch: audit log tampered: {verdict.reason}", file=sys.stderr)
    return 1


def cmd_audit_accept_restore(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.core import audit

    if audit.verify().ok:
        print("onwatch: the audit log is intact; there is nothing to accept")
        return 0
    try:
        old, entry = audit.accept_restored(actor="cli")
    except ValueError as e:
        fail(str(e))
    was = f"entry {old.seq}" if old else "nothing"
    print(
        f"onwatch: audit log accepted as it now is, up to entry {entry.seq}, which records "
        f"that the newest entry onwatch had written before was {was}"
    )
    return 0


def cmd_notify_test(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.alerts.models import Channel, DeliveryState
    from onwatch.alerts.services import send_test
    from onwatch.core import audit
    from onwatch.core.jobs import run_pending

    channels = Channel.objects.select_related("org")
    if args.channel:
        key = args.channel
        channels = channels.filter(pk=int(key)) if key.isdigit() else channels.filter(name=key)
    chosen = list(channels)
    if not chosen and args.channel:
        fail(f"there is no channel {args.channel!r}; see the names under Alert channels")
    if not chosen:
        fail("there are no channels yet; add one in the web console under Alert channels")
    sent = []
    for ch in chosen:
        sent.append(send_test(ch))
        audit.record("channel-tested", actor="cli", org=ch.org, target=ch.name)
    # Delivered right here rather than by the worker, so the answer is immediate; the rows
    # are the same durable deliveries the worker makes, so a failed one is still retried.
    run_pending(kinds=["alerts.deliver"])
    failed = 0
    for d in sent:
        d.refresh_from_db()
        if d.state == DeliveryState.DELIVERED:
            print(f"{d.channel_name}: delivered")
            continue
        failed += 1
        retry = " (the worker will try again)" if d.state == DeliveryState.RETRYING else ""
        print(f"{d.channel_name}: {d.state}: {d.error}{retry}")
    return 1 if failed else 0


def cmd_jobs_cancel(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.core import jobs
    from onwatch.core.models import Job, JobState

    job = Job.objects.filter(pk=args.id).first()
    if job is None:
        fail(f"there is no job #{args.id}; see the Jobs page for their numbers")
        return 2
    try:
        done = jobs.cancel(job, "cli", may_stop_alerts=args.alerts_too)
    except jobs.NotCancellable as e:
        fail(str(e))
        return 2
    except jobs.CancelForbidden as e:
        # Whoever runs the CLI may do anything, but silencing an alert must be meant.
        fail(f"{e}; add --alerts-too if you mean to stop it")
        return 2
    if done.state == JobState.CANCELLED:
        print(f"onwatch: job #{done.pk} ({done.kind}) cancelled; it will not run")
    else:
        print(f"onwatch: stopping job #{done.pk} ({done.kind}); its worker ends it within seconds")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.backups import restic
    from onwatch.backups.models import Plan
    from onwatch.backups.restores import RestoreRefused, choose, restore, shown_target
    from onwatch.backups.targets import RestoreFailed

    plan = Plan.objects.select_related("source", "org").filter(name=args.plan).first()
    if plan is None:
        fail(f"there is no backup plan {args.plan!r}; see the names under Backups")
        return 2
    repository = None
    if args.repository:
        repository = plan.copies.filter(name=args.repository).first()
        if repository is None:
            fail(f"{plan.name} has no copy named {args.repository!r}")
    try:
        chosen = choose(plan, args.snapshot, repository)
        print(
            f"onwatch: snapshot {chosen.snapshot.short_id} of {chosen.snapshot.time[:19]} "
            f"(verified backup #{chosen.run_id}) from {chosen.repository.name} into "
            f"{shown_target(args.to)}",
            flush=True,
        )
        if not args.yes and not confirmed():
            fail("nothing was restored (answer yes, or pass --yes)")
        print("onwatch: restoring…", flush=True)
        done = restore(plan, chosen, args.to)
    except (RestoreRefused, RestoreFailed, restic.ResticError) as e:
        fail(f"{e}")
    print(f"onwatch: restored {done.snapshot_id[:8]} in {done.seconds:.1f} s")
    return 0


def confirmed() -> bool:
    try:
        return input("Restore? [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def cmd_monitors_export(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.uptime import configio

    try:
        org = configio.organization(args.org)
    except configio.Refusal as e:
        fail(str(e))
    sys.stdout.write(configio.export(org))
    return 0


def cmd_monitors_import(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.uptime import configio

    source = "<stdin>" if args.file == "-" else args.file
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        org = configio.organization(args.org)
    except OSError as e:
        fail(f"cannot read {source}: {e.strerror or e}")
    except UnicodeDecodeError:
        fail(f"{source} is not UTF-8 text; save it as UTF-8 and try again")
    except configio.Refusal as e:
        fail(str(e))
    report = configio.import_text(org, text, dry_run=args.dry_run)
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


def _settings() -> Any:
    from onwatch.startup import load_settings

    return load_settings()


def port_number(raw: str) -> str:
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a port; use a number between 1 and 65535")
    return raw


# Each option stands for its environment variable, so the children of `onwatch up` and
# the settings module see one value whichever way it was given.
PLACE_OPTIONS = {"host": "ONWATCH_HOST", "port": "ONWATCH_PORT", "data_dir": "ONWATCH_DATA_DIR"}


def add_place_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="the address to listen on (ONWATCH_HOST; default 127.0.0.1)")
    p.add_argument("--port", type=port_number, help="the port (ONWATCH_PORT; default 8000)")
    p.add_argument(
        "--data-dir", help="database, secret key and key file (ONWATCH_DATA_DIR)", metavar="DIR"
    )


def apply_place_options(args: argparse.Namespace) -> None:
    for option, variable in PLACE_OPTIONS.items():
        value = getattr(args, option, None)
        if value is not None:
            os.environ[variable] = value
            os.environ.pop(f"{variable}_FILE", None)  # the option wins over both


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onwatch",
        description="onwatch keeps your software running while nobody is looking.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Command, help: str, parent: Any = sub) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help, description=help)
        p.set_defaults(func=fn)
        return p

    up = add("up", cmd_up, "Start everything: web, worker, scheduler and prober (the usual way).")
    add_place_options(up)
    add_place_options(add("web", cmd_web, "Run only the web server (UI, API, ingest)."))
    add("worker", cmd_worker, "Run only a worker that takes background jobs.")
    add("scheduler", cmd_scheduler, "Run only the scheduler that turns schedules into jobs.")
    add("prober", cmd_prober, "Run only a prober that makes the uptime checks.")
    add("migrate", cmd_migrate, "Create or update the database tables.")
    owner = add("createowner", cmd_createowner, "Create the owner account.")
    owner.add_argument("--email", help="the owner's email (asked for if missing)")
    owner.add_argument("--org", default="My company", help="the organization's name")
    owner.add_argument("--link", action="store_true", help="print a one-time sign-up link instead")
    owner.add_argument("--hours", type=int, default=24, help="how long the link works")

    keys = add("keys", lambda a: 0, "Manage the encryption keys.")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    add("rotate", cmd_keys_rotate, "Make a new key and re-encrypt every secret.", keys_sub)

    audit = add("audit", lambda a: 0, "Check the audit log.")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    add("verify", cmd_audit_verify, "Report the first tampered audit entry, if any.", audit_sub)
    add(
        "accept-restore",
        cmd_audit_accept_restore,
        "After putting back an older copy of the database: accept the audit log as it is now.",
        audit_sub,
    )

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

    notify = add("notify", lambda a: 0, "Alert channels.")
    notify_sub = notify.add_subparsers(dest="notify_command", required=True, metavar="ACTION")
    test = add("test", cmd_notify_test, "Send a test notification to channels.", notify_sub)
    test.add_argument("--channel", help="a channel's name or number (default: all)")

    jobs = add("jobs", lambda a: 0, "Background jobs.")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    cancel = add("cancel", cmd_jobs_cancel, "Cancel a queued or running job.", jobs_sub)
    cancel.add_argument("id", type=int, metavar="ID", help="the job's number (#ID on its page)")
    cancel.add_argument(
        "--alerts-too", action="store_true", help="also cancel a job that sends an alert"
    )

    restore = add("restore", cmd_restore, "Restore a backup snapshot into a new target.")
    restore.add_argument("plan", help="the backup plan's name")
    restore.add_argument(
        "--to",
        required=True,
        help="a new PostgreSQL URL (postgresql://user@host/new_db), SQLite file or directory",
    )
    restore.add_argument(
        "--snapshot", default="", help="a verified snapshot's id or prefix (default: the newest)"
    )
    restore.add_argument("--repository", help="the copy to restore from (default: offsite one)")
    restore.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    return parser


def main(argv: list[str] | None = None) -> None:
    from onwatch.supervisor import follow_parent

    follow_parent()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    apply_place_options(args)
    try:
        code = args.func(args)
    except ConfigError as e:
        fail(str(e))
    except KeyboardInterrupt:
        code = 130
    raise SystemExit(code)
