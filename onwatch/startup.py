"""Everything `onwatch` checks and prepares before a server starts.

Order matters: every check that can fail runs before anything is created on disk, so a
bad setting leaves no half-made data directory behind.
"""

from __future__ import annotations

import errno
import os
import secrets
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from onwatch.config import ConfigError, redact
from onwatch.core.commands import refuse


@dataclass
class Prepared:
    data_dir: Path
    created: list[str] = field(default_factory=list)


def load_settings() -> Any:
    """Import the settings module; malformed knobs surface here as ConfigError."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "onwatch.settings")
    from django.conf import settings

    settings._setup()  # type: ignore[misc]
    return settings


def check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"Port {port} on {host} is in use by another program; stop it or start "
                    f"onwatch on another port with ONWATCH_PORT={port + 1}"
                ) from None
            raise ConfigError(
                f"Cannot listen on {host}:{port} ({e.strerror}); "
                "check ONWATCH_HOST and ONWATCH_PORT"
            ) from None


def check_data_dir(
    path: Path, what: str = "data directory", setting: str = "ONWATCH_DATA_DIR"
) -> None:
    """Writable if it exists, or creatable if it does not; leaves nothing behind."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(
            f"The {what} {path} cannot be made: {probe} is a file; set {setting} to a folder"
        )
    # A real write, not os.access(): root passes every permission check yet still cannot
    # write to /proc or a read-only mount. The probe folder is removed straight away.
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".onwatch-probe-", dir=probe))
    except OSError as e:
        raise ConfigError(
            f"The {what} {path} is not writable ({probe}: {e.strerror}); "
            f"set {setting} to a folder you can write, or fix its permissions"
        ) from None


def check_database(settings: Any) -> None:
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("postgresql"):
        import psycopg

        try:
            psycopg.connect(
                dbname=db["NAME"],
                user=db["USER"] or None,
                password=db["PASSWORD"] or None,
                host=db["HOST"] or None,
                port=db["PORT"] or None,
                connect_timeout=5,
            ).close()
        except psycopg.Error as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(
                f"Cannot reach the PostgreSQL database in DATABASE_URL "
                f"({reason}); check the address, user and password, and that the server runs"
            ) from None
    else:
        check_data_dir(Path(db["NAME"]).parent, "database folder", "DATABASE_URL")


def check_sqlite_exists(settings: Any) -> None:
    """Commands that do not migrate refuse a missing SQLite file before creating anything
    (connecting would otherwise leave an empty database and a data directory behind)."""
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3") and not Path(db["NAME"]).is_file():
        raise ConfigError(
            f"There is no onwatch database at {db['NAME']} yet; "
            "run `onwatch up` or `onwatch migrate` first"
        )


def ensure_secret_key(settings: Any, data_dir: Path, created: list[str]) -> None:
    # Read around Django's guard, which raises on an empty key before we can fill it in.
    if getattr(settings._wrapped, "SECRET_KEY", ""):
        return
    path = data_dir / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(50))
        created.append(f"secret key {path}")
    settings.SECRET_KEY = path.read_text().strip()


def prepare(listen: tuple[str, int] | None = None, migrate: bool = False) -> Prepared:
    """Check, then create, then start Django. Raises ConfigError for people to read."""
    settings = load_settings()
    data_dir = Path(settings.DATA_DIR)
    if listen:
        check_port_free(*listen)
    check_data_dir(data_dir)
    check_key_file(Path(settings.KEY_FILE))
    # Written with every audit entry: a folder it cannot be written to would fail later.
    check_data_dir(
        Path(settings.AUDIT_HEAD_FILE).parent, "audit head file's folder", "ONWATCH_AUDIT_HEAD_FILE"
    )
    check_work_dir(settings)
    check_database(settings)
    if not migrate:
        check_sqlite_exists(settings)

    import django

    django.setup()
    if not migrate:
        # Before anything is created: a worker pointed at an empty database says so and
        # leaves no data directory or secret key behind.
        require_migrated()
    else:
        verify_key_file_before_migrating(settings)

    prepared = Prepared(data_dir)
    if not data_dir.exists():
        data_dir.mkdir(parents=True, mode=0o700)
        prepared.created.append(f"data directory {data_dir}")
    ensure_secret_key(settings, data_dir, prepared.created)
    if migrate:
        run_migrations()

    from onwatch.core.keyring import KeyringError, key_file_exists
    from onwatch.core.keys import ensure_keyring

    try:
        key_existed = key_file_exists(Path(settings.KEY_FILE))
        ensure_keyring()
    except KeyringError as e:
        raise ConfigError(str(e)) from None
    if not key_existed:
        prepared.created.append(f"key file {settings.KEY_FILE}")
    if migrate:
        seal_earlier_audit_entries(prepared)
    return prepared


def check_work_dir(settings: Any) -> None:
    """Pipelines' workspaces and caches are handed to the steps (and, as root, to the step
    user): a work folder holding the data directory or the key file would hand those over
    too, and one inside the data directory is out of the step user's reach. Compared as
    resolved paths: a link or a `..` on the way must not hide that they overlap."""
    work, data = Path(settings.WORK_DIR), Path(settings.DATA_DIR)
    real_work, real_data = work.resolve(), data.resolve()
    for what, other in (("data directory", data), ("key file", Path(settings.KEY_FILE))):
        real = other.resolve()
        if real == real_work or real_work in real.parents:
            raise ConfigError(
                f"ONWATCH_WORK_DIR={work} holds onwatch's {what} {other}, which pipeline steps "
                f"must never see; set it to a folder of its own, e.g. {data}-work"
            )
    if real_data == real_work or real_data in real_work.parents:
        raise ConfigError(
            f"ONWATCH_WORK_DIR={work} is inside the data directory {data}, which pipeline "
            f"steps must never reach; set it to a folder outside it, e.g. {data}-work"
        )
    # Only pipelines need it, and each of them fails its first step saying why (so does the
    # service page): a folder that cannot be made, e.g. /var/lib/onwatch-work next to an
    # onwatch-owned data directory in a root-owned /var/lib, must not stop every command.
    try:
        check_data_dir(work, "pipelines' work folder", "ONWATCH_WORK_DIR")
    except ConfigError as e:
        print(f"onwatch: warning: {e} (pipelines cannot run until then)", file=sys.stderr)


def check_key_file(path: Path) -> None:
    """An existing key file must be readable and whole before anything is created or
    migrated; whether it fits the database is proved once Django is up."""
    from onwatch.core.keyring import Keyring, KeyringError, key_file_exists

    try:
        if key_file_exists(path):
            Keyring.load(path)
            return
    except KeyringError as e:
        raise ConfigError(str(e)) from None
    check_data_dir(path.parent, "key file's folder", "ONWATCH_KEY_FILE")


def seal_earlier_audit_entries(prepared: Prepared) -> None:
    """Entries from before the audit chain was keyed get sealed with the key, once."""
    from onwatch.core.audit import seal_legacy, unmarked_problem

    sealed = seal_legacy()
    if sealed:
        prepared.created.append(f"key seals for the {sealed} earlier audit log entries")
    # A key file that cannot take the keyed mark (a read-only folder, say) does not stop
    # onwatch: it says so here, on the audit page and in `onwatch audit verify`.
    if problem := unmarked_problem():
        print(
            f"onwatch: warning: the audit log cannot be fully checked: {problem}", file=sys.stderr
        )


def verify_key_file_before_migrating(settings: Any) -> None:
    """An existing database must fit the key file before migrations alter it (after an
    upgrade, say); a wrong or missing key file then leaves it exactly as it was."""
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3") and not Path(db["NAME"]).is_file():
        return  # nothing to protect yet, and connecting would create the file
    from onwatch.core.keyring import KeyringError
    from onwatch.core.keys import verify_before_migrating

    try:
        verify_before_migrating()
    except KeyringError as e:
        raise ConfigError(str(e)) from None


def run_migrations() -> None:
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    call_command("createcachetable", verbosity=0)


def require_migrated() -> None:
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    if executor.migration_plan(executor.loader.graph.leaf_nodes()):
        raise ConfigError("The database is not up to date; run `onwatch migrate` first")


def describe_database(settings: Any) -> str:
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"SQLite at {db['NAME']}"
    return f"PostgreSQL {redact(os.environ.get('DATABASE_URL', ''))}"


def fail(message: str) -> NoReturn:
    refuse(message)
