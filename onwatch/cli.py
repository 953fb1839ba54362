"""The `onwatch` command. Every failure people can fix ends in one line and exit code 2."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
from importlib import import_module
from pathlib import Path
from typing import Any, NoReturn

from onwatch.config import ConfigError, unreachable_elsewhere
from onwatch.core.commands import Command, RegisterCommands
from onwatch.startup import describe_database, fail, prepare

# The apps whose cli.py adds commands (`register(add)`), in the order help lists them.
APPS_WITH_COMMANDS = (
    "onwatch.uptime",
    "onwatch.alerts",
    "onwatch.backups",
    "onwatch.deploys",
    "onwatch.errors",
)


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
    for line in owner_notice() + push_keys_notice():
        print(line)
    for line in behind_caddy(settings):
        print(line)
    warn_unreachable(settings)
    print(f"onwatch: running at {settings.SITE_ROOT} — press Ctrl+C to stop", flush=True)
    become_supervisor(settings.HOST, settings.PORT)


def behind_caddy(settings: Any) -> list[str]:
    """With a domain, onwatch's route in this machine's Caddy (one clear line and exit 2
    when it cannot be); without, the route of an earlier start with one is taken away."""
    from onwatch.config import proxy_token

    if not settings.DOMAIN:
        return no_longer_behind_caddy(settings)
    from onwatch.deploys import services

    try:
        # The key may have been made by this very start: the token is derived from it now.
        token = proxy_token(settings.SECRET_KEY)
        return services.serve_onwatch_at(settings.DOMAIN, settings.HOST, settings.PORT, token)
    except services.OwnDomainError as e:
        fail(f"onwatch cannot be put behind Caddy at {settings.DOMAIN}: {e}")


def no_longer_behind_caddy(settings: Any) -> list[str]:
    """A plain start asks the deploys app (and Caddy) only when an earlier start left a
    route; a route it cannot take away is said, and onwatch starts all the same."""
    # deploys/switch.py this_machine(): the Caddy folder of the data directory.
    if not (Path(settings.DATA_DIR) / "deploys" / "caddy" / "onwatch.json").exists():
        return []
    from onwatch.deploys import services

    try:
        services.stop_serving_onwatch()
    except services.OwnDomainError as e:
        return [f"onwatch: warning: Caddy still sends onwatch's old domain here: {e}"]
    return []


def become_supervisor(host: str, port: int) -> NoReturn:
    """Replace this process (same pid, so signals and service managers still reach it)
    with the supervisor alone: Django stays loaded only in the children that use it,
    which keeps some 65 MiB out of the process that idles all day."""
    from django.db import connections

    connections.close_all()
    sys.stdout.flush()
    sys.stderr.flush()
    argv = [sys.executable, "-m", "onwatch.supervisor", host, str(port)]
    os.execv(sys.executable, argv)  # noqa: S606  (our own argv)


def owner_notice() -> list[str]:
    """Until there is an owner, every start prints a fresh one-time link to create one."""
    from onwatch.accounts.services import first_run

    if not first_run():
        return []
    return [
        "onwatch: no owner yet. Open this one-time link to create the owner account:",
        f"  {owner_link()}",
    ]


def push_keys_notice() -> list[str]:
    """People's keys and git-serve's settings, written again at each start: a changed
    setting (another database) or a moved onwatch reaches `git push` to onwatch too."""
    from onwatch.core import pushkeys
    from onwatch.core.models import SshKey

    if not SshKey.objects.exists():
        return []  # nobody pushes: the user's authorized_keys stays untouched
    try:
        pushkeys.sync()
    except pushkeys.KeyFileError as e:
        return [f"onwatch: warning: git push to onwatch cannot work until this is fixed: {e}"]
    return []


def owner_link(hours: int = 24) -> str:
    from django.conf import settings
    from django.urls import reverse

    from onwatch.core.models import Invite
    from onwatch.core.roles import Role

    # One live link at a time: a new start makes the previous unused ones useless.
    Invite.objects.filter(org=None, role=Role.OWNER, used_at=None).delete()
    _, token = Invite.issue(Role.OWNER, None, hours=hours)
    # The accounts URLs sit at the root of onwatch/urls.py, so this is the same path; the
    # whole URLconf would import every view and the API's schemas (~1 s of a start) in a
    # process that is about to become the supervisor.
    return settings.SITE_ROOT + reverse("invite", args=[token], urlconf="onwatch.accounts.urls")


def warn_unreachable(settings: Any) -> None:
    for line in (unreachable_elsewhere(settings.HOST, settings.SITE), proxy_unnamed(settings)):
        if line:
            print(line, flush=True)


def proxy_unnamed(settings: Any) -> str:
    """Reached over https without onwatch's own Caddy, a proxy of one's own sends people
    here; its forwarded scheme and addresses count only once it is named (a warning line,
    or "")."""
    if settings.DOMAIN or not settings.SITE.https or settings.TRUSTED_PROXIES.strip():
        return ""
    return (
        f"onwatch: ONWATCH_BASE_URL is {settings.SITE.origin}, but no proxy is named in "
        "ONWATCH_TRUSTED_PROXIES: its requests do not count as HTTPS (its pages answer only "
        "with a line saying so) and sign-ins, lock-outs and the audit log record its "
        "address, not each person's; name it (127.0.0.1 for one on this machine)"
    )


def cmd_web(args: argparse.Namespace) -> int:
    import uvicorn

    settings = _settings()
    warn_unreachable(settings)
    prepare(listen=(settings.HOST, settings.PORT))
    config = uvicorn.Config(
        "onwatch.asgi:application",
        host=settings.HOST,
        port=settings.PORT,
        lifespan="off",
        # With a domain, only requests with Caddy's token may name their client and
        # scheme: onwatch/asgi.py's ProxyGate reads the headers then. Without, only the
        # proxies named on purpose: uvicorn's default (loopback) would believe any program
        # on this machine.
        proxy_headers=not settings.DOMAIN and bool(settings.TRUSTED_PROXIES.strip()),
        forwarded_allow_ips=settings.TRUSTED_PROXIES,
        timeout_graceful_shutdown=5,
        workers=settings.WEB_WORKERS,
        log_level="warning",
        server_header=False,
        # Access lines are INFO, never shown at this level, yet uvicorn formats one per
        # request while a handler exists; off, that work goes too (it shows at ping rates).
        access_log=False,
    )
    if settings.WEB_WORKERS > 1:
        from onwatch.prefork import serve

        return serve(config, settings.WEB_WORKERS)
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1  # it could not listen: uvicorn logged why


def cmd_worker(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.core.loops import run_worker, run_worker_and_scheduler

    if args.with_scheduler:
        run_worker_and_scheduler()
    else:
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

    found = audit.verify()
    if found.first_bad is None and found.unchecked and found.unchecked == audit.unmarked_problem():
        # A key file without its keyed mark is no restore to accept.
        fail(f"there is nothing to accept, but {found.unchecked}")
    if found.ok:
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


def cmd_ssh_keys_add(args: argparse.Namespace) -> int:
    prepare()
    from django.contrib.auth import get_user_model

    from onwatch.core.audit import CLI
    from onwatch.core.pushkeys import KeyFileError
    from onwatch.core.services import KeyRefused, add_ssh_key

    user = get_user_model().objects.filter(email__iexact=args.email).first()
    if user is None:
        fail(f"there is no account {args.email!r}")
    try:
        key = add_ssh_key(user, sys.stdin.read(), args.name or "", CLI)
    except KeyRefused as e:
        fail(str(e))
    except KeyFileError as e:
        fail(f"the key is saved, but {e}")
    print(f"onwatch: added key #{key.pk} {key.fingerprint} of {args.email}; it can git push now")
    return 0


def cmd_ssh_keys_list(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.core.models import SshKey

    for key in SshKey.objects.select_related("user"):
        print(f"{key.pk}\t{key.user.get_username()}\t{key.fingerprint}\t{key.name}")
    return 0


def cmd_ssh_keys_remove(args: argparse.Namespace) -> int:
    prepare()
    from onwatch.core.audit import CLI
    from onwatch.core.models import SshKey
    from onwatch.core.pushkeys import KeyFileError
    from onwatch.core.services import remove_ssh_key

    key = SshKey.objects.select_related("user").filter(pk=args.id).first()
    if key is None:
        fail(f"there is no SSH key #{args.id}; onwatch ssh-keys list shows them")
    assert key is not None
    try:
        remove_ssh_key(key, CLI)
    except KeyFileError as e:
        fail(f"the key is removed from onwatch, but {e}")
    print(f"onwatch: removed key #{args.id} {key.fingerprint}")
    return 0


def _settings() -> Any:
    from onwatch.startup import load_settings

    return load_settings()


def port_number(raw: str) -> str:
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a port; use a number between 1 and 65535")
    return raw


# Each option stands for its environment variable, so the children of `onwatch up` and
# the settings module see one value whichever way it was given.
PLACE_OPTIONS = {
    "host": "ONWATCH_HOST",
    "port": "ONWATCH_PORT",
    "data_dir": "ONWATCH_DATA_DIR",
    "domain": "ONWATCH_DOMAIN",
}


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
        # A command run by other programs only (git-serve, by sshd) is left out of --help.
        shown = {} if help == argparse.SUPPRESS else {"help": help, "description": help}
        p: argparse.ArgumentParser = parent.add_parser(name, **shown)
        p.set_defaults(func=fn)
        return p

    up = add("up", cmd_up, "Start everything: web, worker, scheduler and prober (the usual way).")
    add_place_options(up)
    up.add_argument(
        "--domain",
        help="serve onwatch at this name through this machine's Caddy, with automatic HTTPS "
        "(ONWATCH_DOMAIN)",
        metavar="NAME",
    )
    add_place_options(add("web", cmd_web, "Run only the web server (UI, API, ingest)."))
    worker = add("worker", cmd_worker, "Run only a worker that takes background jobs.")
    worker.add_argument(
        "--with-scheduler",
        action="store_true",
        help="also run the scheduler in this process, as `onwatch up` does",
    )
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

    jobs = add("jobs", lambda a: 0, "Background jobs.")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    cancel = add("cancel", cmd_jobs_cancel, "Cancel a queued or running job.", jobs_sub)
    cancel.add_argument("id", type=int, metavar="ID", help="the job's number (#ID on its page)")
    cancel.add_argument(
        "--alerts-too", action="store_true", help="also cancel a job that sends an alert"
    )

    keys = add("ssh-keys", lambda a: 0, "People's SSH keys, for git push to onwatch.")
    keys_sub = keys.add_subparsers(dest="ssh_keys_command", required=True, metavar="ACTION")
    adding = add("add", cmd_ssh_keys_add, "Add a person's public key (read from stdin).", keys_sub)
    adding.add_argument("email", help="the person's account (their email)")
    adding.add_argument("--name", help="a name for the key (default: its comment)")
    add("list", cmd_ssh_keys_list, "List the SSH keys and whose they are.", keys_sub)
    removing = add("remove", cmd_ssh_keys_remove, "Remove an SSH key.", keys_sub)
    removing.add_argument("id", type=int, metavar="ID", help="the key's number (from list)")

    for register in app_commands():
        register(add)
    return parser


def app_commands() -> list[RegisterCommands]:
    """Each app's own commands, from its cli.py; imported before Django is set up, so those
    modules import Django and their app inside each command."""
    return [import_module(f"{name}.cli").register for name in APPS_WITH_COMMANDS]


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
