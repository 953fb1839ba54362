"""Named users and organizations, built by plain functions (healthchecks' hc/test.py style)."""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from allauth.mfa.models import Authenticator
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.test import Client
from django.utils import timezone

from onwatch.core.ingest.writer import Writer
from onwatch.core.models import Membership, Organization
from onwatch.core.roles import Role
from tests.support import template

PASSWORD = "correct horse battery staple"


def make_org(name: str = "Acme") -> Organization:
    return Organization.objects.create(name=name)


@functools.cache
def _password_hash(hashers: tuple[str, ...]) -> str:
    return make_password(PASSWORD)


def password_hash() -> str:
    """PASSWORD hashed as set_password would with the hashers in force: made once per
    process and shared by every member, as Argon2 is slow on purpose (a quarter of a CPU
    second each, four per `members`), and its salt is no subject of these tests. Sign-in
    still checks it with the real hasher."""
    from django.conf import settings

    return _password_hash(tuple(settings.PASSWORD_HASHERS))


def make_member(org: Organization, role: str, email: str | None = None, mfa: bool = True) -> Any:
    email = email or f"{role}@{org.name.lower()}.example"
    user = get_user_model().objects.create(username=email, email=email, password=password_hash())
    Membership.objects.create(org=org, user=user, role=role)
    if mfa:
        # A real TOTP authenticator row, as allauth stores it after enrolment.
        from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret

        TOTP.activate(user, generate_totp_secret())
    return user


def signed_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture(scope="session")
def django_db_modify_db_settings(
    django_db_modify_db_settings_parallel_suffix: None,
) -> Iterator[None]:
    """On SQLite, the test database is a file in WAL mode as onwatch's own, not
    pytest-django's shared-cache database in memory: there, a thread that touches a table
    while another (a worker thread beside the test) writes it gets "database table is
    locked" at once, as no busy timeout applies; with a file it waits its turn. In memory
    still (tmpfs) where there is one: on disk, the syncs made the database tests 2.5x slower.
    On both, a copy of the run's migrated test database (tests.support.template)."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    if not db["ENGINE"].endswith("sqlite3"):
        url = os.environ["DATABASE_URL"]
        name = db.get("TEST", {}).get("NAME") or f"test_{db['NAME']}"
        template.copy_test_db(url, name)
        yield
        template.drop_test_db(url, name)
        return
    shm = Path("/dev/shm")  # a folder of our own is made inside it
    folder = Path(tempfile.mkdtemp(prefix="onwatch-testdb-", dir=shm if shm.is_dir() else None))
    db.setdefault("TEST", {})["NAME"] = str(folder / "test.sqlite3")
    template.copy_test_db_file(folder / "test.sqlite3")
    yield
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def django_db_keepdb(django_db_modify_db_settings: None) -> bool:
    """Always: the test database is a migrated copy of the run's (above), which Django's
    create_test_db keeps (it still applies a migration the copy lacks); that fixture
    removes it at the end."""
    return True


@pytest.fixture(autouse=True, scope="session")
def writers_leave_the_wal_to_sqlite() -> Iterator[None]:
    """The test database is one file for the session: a checkpoint thread started on it
    by one test's writer would live on through the others (tests of it use files of their
    own)."""
    Writer.checkpoints = False
    yield
    Writer.checkpoints = True


@pytest.fixture
def midday(monkeypatch: pytest.MonkeyPatch) -> datetime:
    """Noon today (UTC) is "now", for tests that make only daily rollups: in a day's first
    hour, the day before is read from its hourly rollups and raw results (rollups.fresh_from
    leaves the last hour to the raw ones), which such a test does not make."""
    noon = timezone.now().replace(hour=12, minute=0, second=0, microsecond=0)
    monkeypatch.setattr(timezone, "now", lambda: noon)
    return noon


@pytest.fixture
def fast_passwords(settings: Any) -> None:
    """For tests not about passwords: Argon2 is slow on purpose (about half a second per
    account on a busy runner), which adds up over a matrix of members."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def org(db: None) -> Organization:
    return make_org()


@pytest.fixture
def members(org: Organization) -> dict[str, Any]:
    return {role.value: make_member(org, role.value) for role in Role}


__all__ = ["PASSWORD", "Authenticator", "make_member", "make_org", "signed_in"]


class TokenApi:
    """A test client holding one bearer token of `member` with `scopes`."""

    def __init__(self, member: Any, org: Organization, scopes: list[str]) -> None:
        from onwatch.core.services import issue_token

        raw = issue_token(member, org, "test", scopes, 1).raw
        self.client, self.auth = Client(), {"authorization": f"Bearer {raw}"}

    def call(self, method: str, url: str, body: Any = None) -> Any:
        data = json.dumps(body) if body is not None else ""
        return self.client.generic(
            method, url, data=data, content_type="application/json", headers=self.auth
        )
