"""Signing in: passwords hashed with Argon2id, failed attempts limited, sessions that end,
the Django admin behind the same door, and every step in the audit log."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import (
    SECRET_SESSION_KEY,
    TOTP,
    generate_totp_secret,
)
from django.conf import settings
from django.contrib.sessions.models import Session
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from onwatch.accounts.middleware import SIGNED_IN_AT
from onwatch.core.models import AuditEntry
from onwatch.core.roles import Role
from tests.support.fixtures import PASSWORD, make_member, make_org
from tests.support.totp import totp_now

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"


def enrolled(role: str = Role.OWNER, staff: bool = False) -> tuple[Any, str]:
    user = make_member(make_org(), role, mfa=False)
    if staff:
        user.is_staff = user.is_superuser = True
        user.save()
    secret = generate_totp_secret()
    TOTP.activate(user, secret)
    return user, secret


def sign_in(client: Client, user: Any, secret: str, next_url: str = "") -> Any:
    """Both stages, as a person does them: password, then the code from the app."""
    url = LOGIN + (f"?{urlencode({'next': next_url})}" if next_url else "")
    first = client.post(url, {"login": user.email, "password": PASSWORD})
    assert first["Location"] == reverse("mfa_authenticate")
    return client.post(reverse("mfa_authenticate"), {"code": totp_now(secret)})


def actions(action: str) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(action=action))


def test_passwords_are_hashed_with_argon2id() -> None:
    user = make_member(make_org(), Role.VIEWER, mfa=False)
    assert user.password.startswith("argon2$argon2id$")
    user.refresh_from_db()
    assert user.check_password(PASSWORD)


def test_sign_in_is_recorded_in_the_audit_log() -> None:
    user, secret = enrolled()
    client = Client()
    client.post(LOGIN, {"login": user.email, "password": PASSWORD})
    # Half-way (password only) is not a sign-in yet.
    assert actions("sign-in") == []
    sign_in_done = client.post(reverse("mfa_authenticate"), {"code": totp_now(secret)})
    assert sign_in_done["Location"] == reverse("dashboard")
    [entry] = actions("sign-in")
    assert (entry.actor, entry.target, entry.ip) == (user.email, user.email, "127.0.0.1")


def test_a_failed_sign_in_is_recorded_in_the_audit_log() -> None:
    user, _ = enrolled()
    r = Client().post(LOGIN, {"login": user.email, "password": "not the password at all"})
    assert r.status_code == 200
    assert "not correct" in r.content.decode()
    [entry] = actions("sign-in-failed")
    assert (entry.actor, entry.target) == ("anonymous", user.email)
    assert actions("sign-in") == []


def test_a_wrong_second_factor_is_recorded_in_the_audit_log() -> None:
    user, secret = enrolled()
    client = Client()
    client.post(LOGIN, {"login": user.email, "password": PASSWORD})
    wrong = f"{(int(totp_now(secret)) + 1) % 1_000_000:06d}"
    client.post(reverse("mfa_authenticate"), {"code": wrong})
    [entry] = actions("mfa-failed")
    assert (entry.target, entry.data["kind"]) == (user.email, "totp")
    assert actions("sign-in") == []


def test_adding_and_removing_a_second_factor_is_recorded(
    django_capture_on_commit_callbacks: Any,
) -> None:
    user = make_member(make_org(), Role.OWNER, mfa=False)
    client = Client()
    client.post(LOGIN, {"login": user.email, "password": PASSWORD})
    client.get(reverse("mfa_activate_totp"))
    secret = client.session[SECRET_SESSION_KEY]
    # allauth announces a new authenticator once its transaction commits.
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("mfa_activate_totp"), {"code": totp_now(secret)})
    added = {e.data["kind"] for e in actions("mfa-added")}
    assert added == {"totp", "recovery_codes"}
    Authenticator.objects.create(user=user, type=Authenticator.Type.WEBAUTHN, data={})
    assert client.post(reverse("mfa_deactivate_totp")).status_code == 302
    [removed] = actions("mfa-removed")
    assert (removed.target, removed.data["kind"]) == (user.email, "totp")


def wrong_passwords(client: Client, user: Any, times: int = 5) -> None:
    for _ in range(times):
        r = client.post(LOGIN, {"login": user.email, "password": "wrong password here"})
        assert "not correct" in r.content.decode()


def wrong_code(secret: str) -> str:
    return f"{(int(totp_now(secret)) + 1) % 1_000_000:06d}"


def test_repeated_wrong_passwords_pause_the_account_and_say_until_when() -> None:
    user, _ = enrolled()
    client = Client()
    wrong_passwords(client, user)
    # The sixth try is refused even with the right password, and says until when.
    r = client.post(LOGIN, {"login": user.email, "password": PASSWORD})
    assert r.status_code == 200
    page = r.content.decode()
    assert "Too many wrong passwords for this account" in page
    assert re.search(r"Try again after \d\d:\d\d UTC \(in [45] min\)", page), page
    assert Client().get("/")["Location"].startswith(LOGIN)
    # Another address with the same account is held back too (the limit is per account).
    other = Client(REMOTE_ADDR="192.0.2.7")
    r = other.post(LOGIN, {"login": user.email, "password": PASSWORD})
    assert "Too many wrong passwords for this account" in r.content.decode()
    paused = AuditEntry.objects.filter(action="sign-in-paused").order_by("seq")
    assert [(e.ip, e.data["per"], e.data["step"]) for e in paused] == [
        ("127.0.0.1", "account", "password"),
        ("192.0.2.7", "account", "password"),
    ]


def test_one_persons_wrong_passwords_do_not_lock_out_others_behind_the_same_address() -> None:
    typist, _ = enrolled()
    colleague = make_member(make_org("Office"), Role.VIEWER, mfa=False)
    secret = generate_totp_secret()
    TOTP.activate(colleague, secret)
    office = Client(REMOTE_ADDR="198.51.100.10")
    wrong_passwords(office, typist)
    done = sign_in(Client(REMOTE_ADDR="198.51.100.10"), colleague, secret)
    assert done["Location"] == reverse("dashboard")


def test_wrong_codes_pause_that_account_only_and_say_until_when() -> None:
    user, secret = enrolled()
    colleague, colleague_secret = enrolled(role=Role.VIEWER)
    client = Client(REMOTE_ADDR="198.51.100.20")
    client.post(LOGIN, {"login": user.email, "password": PASSWORD})
    for _ in range(5):
        r = client.post(reverse("mfa_authenticate"), {"code": wrong_code(secret)})
        assert "Incorrect code" in r.content.decode()
    r = client.post(reverse("mfa_authenticate"), {"code": totp_now(secret)})
    page = r.content.decode()
    assert "Too many wrong codes for this account" in page
    assert "Try again after" in page
    assert actions("sign-in") == []
    [paused] = actions("sign-in-paused")
    assert (paused.target, paused.data["per"], paused.data["step"]) == (
        user.email,
        "account",
        "code",
    )
    # Someone else at the same address signs in as usual.
    done = sign_in(Client(REMOTE_ADDR="198.51.100.20"), colleague, colleague_secret)
    assert done["Location"] == reverse("dashboard")


def test_the_per_address_limit_still_holds_and_says_it_may_be_shared(settings: Any) -> None:
    settings.ACCOUNT_RATE_LIMITS = {**settings.ACCOUNT_RATE_LIMITS, "login_failed": "3/15m/ip"}
    org = make_org()
    users = [make_member(org, Role.VIEWER, email=f"v{i}@acme.example") for i in range(4)]
    client = Client(REMOTE_ADDR="203.0.113.5")
    for user in users[:3]:
        wrong_passwords(client, user, times=1)
    r = client.post(LOGIN, {"login": users[3].email, "password": PASSWORD})
    page = r.content.decode()
    assert "Too many wrong passwords from your network address (which others may share)" in page
    assert "Try again after" in page


def test_the_shipped_limits_are_per_account_and_roomy_per_address() -> None:
    # Five per account as before; an office of many people shares the per-address one.
    rates = settings.ACCOUNT_RATE_LIMITS["login_failed"].split(",")
    assert "5/5m/key" in rates
    [per_address] = [r for r in rates if r.endswith("/ip")]
    assert int(per_address.split("/")[0]) >= 50


def test_a_flood_of_sign_in_attempts_gets_429() -> None:
    client = Client()
    answers = [client.post(LOGIN, {"login": "", "password": ""}).status_code for _ in range(31)]
    assert answers[:30] == [200] * 30
    assert answers[30] == 429
    # The page itself still opens for reading, and other addresses are unaffected.
    assert client.get(LOGIN).status_code == 200
    assert Client(REMOTE_ADDR="192.0.2.8").post(LOGIN, {"login": ""}).status_code == 200


def test_session_cookies_are_secure_httponly_and_samesite() -> None:
    user, secret = enrolled()
    client = Client()
    done = sign_in(client, user, secret)
    cookie = done.cookies[settings.SESSION_COOKIE_NAME]
    assert cookie["secure"] and cookie["httponly"]
    assert cookie["samesite"] == "Lax"
    csrf = client.get(LOGIN).cookies.get(settings.CSRF_COOKIE_NAME) or client.cookies.get(
        settings.CSRF_COOKIE_NAME
    )
    assert csrf is not None and csrf["secure"]


def session_row(client: Client) -> Session:
    return Session.objects.get(session_key=client.session.session_key)


def test_an_idle_session_expires_and_activity_pushes_the_end_back() -> None:
    user, secret = enrolled()
    client = Client()
    sign_in(client, user, secret)
    assert settings.SESSION_COOKIE_AGE == 120 * 60 and settings.SESSION_SAVE_EVERY_REQUEST
    # Nearly idle for too long; one request moves the end a full idle period away.
    Session.objects.filter(pk=client.session.session_key).update(
        expire_date=timezone.now() + timedelta(seconds=30)
    )
    assert client.get("/").status_code == 200
    left = session_row(client).expire_date - timezone.now()
    assert left > timedelta(seconds=settings.SESSION_COOKIE_AGE - 60)
    # Idle past the end: signed out.
    Session.objects.filter(pk=client.session.session_key).update(
        expire_date=timezone.now() - timedelta(seconds=1)
    )
    assert client.get("/")["Location"].startswith(LOGIN)


def test_a_session_ends_at_its_absolute_lifetime_however_busy() -> None:
    user, secret = enrolled()
    client = Client()
    sign_in(client, user, secret)
    started = client.session[SIGNED_IN_AT]
    assert abs(started - time.time()) < 60
    session = client.session
    session[SIGNED_IN_AT] = time.time() - settings.SESSION_MAX_LIFETIME + 60
    session.save()
    assert client.get("/").status_code == 200
    session = client.session
    session[SIGNED_IN_AT] = time.time() - settings.SESSION_MAX_LIFETIME - 1
    session.save()
    r = client.get("/")
    assert r["Location"] == LOGIN
    assert "_auth_user_id" not in client.session
    page = client.get(LOGIN)
    assert "Sessions last at most 12 hours; sign in again." in page.content.decode()
    assert client.get("/")["Location"].startswith(LOGIN)
    assert len(actions("sign-out")) == 1


def test_the_admin_sends_anonymous_people_to_the_one_sign_in() -> None:
    client = Client()
    r = client.get("/admin/auth/user/", follow=True)
    assert r.redirect_chain[-1] == (f"{LOGIN}?next=%2Fadmin%2Fauth%2Fuser%2F", 302)
    assert r.status_code == 200
    direct = client.get("/admin/login/")
    assert direct["Location"] == f"{LOGIN}?next=%2Fadmin%2F"
    # An outside address in next is not followed.
    away = client.get("/admin/login/?next=https://evil.example/")
    assert away["Location"] == f"{LOGIN}?next=%2Fadmin%2F"


def test_staff_reach_the_admin_after_password_and_second_factor() -> None:
    user, secret = enrolled(staff=True)
    client = Client()
    done = sign_in(client, user, secret, next_url="/admin/auth/user/")
    assert done["Location"] == "/admin/auth/user/"
    assert client.get("/admin/auth/user/").status_code == 200


def test_signed_in_people_who_are_not_staff_are_refused_by_the_admin_without_a_loop() -> None:
    user, secret = enrolled(role=Role.VIEWER)
    client = Client()
    sign_in(client, user, secret)
    r = client.get("/admin/", follow=True)
    assert r.status_code == 403
    assert len(r.redirect_chain) == 1
    assert "Not allowed" in r.content.decode()


def test_when_both_limits_are_reached_the_longer_pause_is_the_one_told(settings: Any) -> None:
    settings.ACCOUNT_RATE_LIMITS = {
        **settings.ACCOUNT_RATE_LIMITS,
        "login_failed": "3/15m/ip,2/5m/key",
    }
    org = make_org()
    first, second = (make_member(org, Role.VIEWER, email=f"p{i}@acme.example") for i in (1, 2))
    client = Client(REMOTE_ADDR="203.0.113.6")
    wrong_passwords(client, first, times=2)
    wrong_passwords(client, second, times=1)
    page = client.post(LOGIN, {"login": first.email, "password": PASSWORD}).content.decode()
    assert "from your network address" in page
    assert re.search(r"\(in 1[45] min\)", page), page
