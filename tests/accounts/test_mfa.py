"""MFA for everyone: enrolment is forced, second factors are encrypted with the keyring and
survive a key rotation, and sign-in asks for the second factor."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from allauth.mfa.models import Authenticator
from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes
from allauth.mfa.totp.internal.auth import (
    SECRET_SESSION_KEY,
    TOTP,
    generate_totp_secret,
)
from django.conf import settings
from django.db import connection
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from pytest_django import Settings

from onwatch.accounts.middleware import BROWSER_OWN_PATHS, ENROL_PATHS
from onwatch.core.keyring import KeyringError, get_keyring
from onwatch.core.keys import rotate
from onwatch.core.models import Organization
from onwatch.core.roles import Role
from tests.support.fixtures import PASSWORD, make_member, make_org
from tests.support.totp import totp_now

pytestmark = pytest.mark.django_db

ENROL = "/accounts/2fa/totp/activate/"


def wrong_code(secret: str) -> str:
    return f"{(int(totp_now(secret)) + 1) % 1_000_000:06d}"


def password_sign_in(client: Client, email: str, next_url: str = "") -> Any:
    url = reverse("account_login") + (f"?next={next_url}" if next_url else "")
    return client.post(url, {"login": email, "password": PASSWORD})


def enrol_totp(client: Client) -> str:
    """The real enrolment: open the page, read the offered secret, answer with a code."""
    page = client.get(ENROL)
    assert page.status_code == 200
    secret: str = client.session[SECRET_SESSION_KEY]
    assert secret in page.content.decode()  # shown for typing into an app by hand
    done = client.post(ENROL, {"code": totp_now(secret)})
    assert done.status_code == 302, done.content.decode()
    assert done["Location"] == reverse("mfa_view_recovery_codes")
    return secret


def raw_authenticator_data(user_id: int, kind: str) -> str:
    with connection.cursor() as cur:
        cur.execute(
            "SELECT data FROM mfa_authenticator WHERE user_id = %s AND type = %s", [user_id, kind]
        )
        row = cur.fetchone()
    assert row is not None
    return str(row[0])


def fillable_paths() -> list[str]:
    """Every route in the project, with sample values for its parameters."""
    found: list[str] = []

    def walk(patterns: list[URLPattern | URLResolver], prefix: str) -> None:
        for p in patterns:
            route = getattr(p.pattern, "_route", None)
            if route is None:  # a regex pattern (some admin pages): listed by hand below
                continue
            path = prefix + re.sub(r"<int:\w+>", "1", re.sub(r"<(?!int:)[^>]+>", "x", route))
            if isinstance(p, URLResolver):
                walk(p.url_patterns, path)
            else:
                found.append("/" + path)

    walk(get_resolver().url_patterns, "")
    return sorted(set(found))


@pytest.fixture
def newcomer(db: None) -> Any:
    return make_member(make_org(), Role.OWNER, mfa=False)


def test_every_page_sends_an_account_without_a_second_factor_to_enrolment(newcomer: Any) -> None:
    client = Client()
    assert password_sign_in(client, newcomer.email).status_code == 302
    paths = [p for p in fillable_paths() if not p.startswith(ENROL_PATHS)]
    paths += ["/admin/", "/admin/auth/user/", "/admin/auth/user/1/change/", "/no-such-page/"]
    assert "/" in paths and "/admin/" in paths and "/channels/" in paths
    for path in paths:
        r = client.get(path)
        if path.startswith("/api/"):
            assert r.status_code == 403, path
        elif path.startswith(BROWSER_OWN_PATHS):
            # What a browser asks for by itself is answered (never enrolment, where it
            # would make a new secret behind the QR code on screen).
            assert r.status_code == 200, path
        else:
            assert (r.status_code, r.get("Location")) == (302, ENROL), path
    # Writes are held back the same way.
    assert client.post("/channels/", {"name": "x"})["Location"] == ENROL


def test_after_totp_enrolment_everything_opens(newcomer: Any) -> None:
    newcomer.is_staff = newcomer.is_superuser = True
    newcomer.save()
    client = Client()
    password_sign_in(client, newcomer.email)
    assert client.get("/")["Location"] == ENROL
    enrol_totp(client)
    assert client.get("/").status_code == 200
    assert client.get("/admin/").status_code == 200
    assert Authenticator.objects.filter(user=newcomer, type="totp").count() == 1
    # Recovery codes came with it, shown once right after enrolment.
    codes = client.get(reverse("mfa_view_recovery_codes"))
    assert codes.status_code == 200
    rc = Authenticator.objects.get(user=newcomer, type="recovery_codes")
    assert RecoveryCodes(rc).get_unused_codes()[0] in codes.content.decode()


def test_a_wrong_code_does_not_enrol(newcomer: Any) -> None:
    client = Client()
    password_sign_in(client, newcomer.email)
    client.get(ENROL)
    secret = client.session[SECRET_SESSION_KEY]
    r = client.post(ENROL, {"code": wrong_code(secret)})
    assert r.status_code == 200
    assert "Incorrect code" in r.content.decode()
    assert not Authenticator.objects.filter(user=newcomer).exists()
    assert client.get("/")["Location"] == ENROL


def test_passkeys_can_be_the_first_factor_and_their_pages_answer(newcomer: Any) -> None:
    client = Client()
    password_sign_in(client, newcomer.email)
    add = client.get(reverse("mfa_add_webauthn"))
    assert add.status_code == 200
    assert 'name="credential"' in add.content.decode()
    enrol_totp(client)
    assert client.get(reverse("mfa_list_webauthn")).status_code == 200
    assert client.get(reverse("mfa_index")).status_code == 200
    assert client.get(reverse("mfa_generate_recovery_codes")).status_code == 200


def test_the_totp_secret_and_recovery_seed_are_encrypted_in_the_database(newcomer: Any) -> None:
    client = Client()
    password_sign_in(client, newcomer.email)
    secret = enrol_totp(client)
    raw = raw_authenticator_data(newcomer.pk, "totp")
    assert secret not in raw
    assert "ow1:" in raw
    raw_rc = raw_authenticator_data(newcomer.pk, "recovery_codes")
    stored_seed = Authenticator.objects.get(user=newcomer, type="recovery_codes").data["seed"]
    assert stored_seed.startswith("ow1:")
    seed = get_keyring().decrypt(stored_seed, "mfa.authenticator")
    assert len(seed) == 80  # allauth's 40 random bytes, hex
    assert seed not in raw_rc
    # Bound to its column: the same ciphertext elsewhere does not decrypt.
    with pytest.raises(KeyringError):
        get_keyring().decrypt(stored_seed, "alerts.channel.url")


@pytest.fixture
def own_key_file(settings: Settings, tmp_path: Path) -> Path:
    # Rotation adds a key to the key file: give this test a copy of the session's.
    path = tmp_path / "keyring.json"
    shutil.copy(settings.KEY_FILE, path)
    settings.KEY_FILE = path
    return path


def test_totp_and_recovery_codes_still_work_after_a_key_rotation(
    newcomer: Any, own_key_file: Path
) -> None:
    client = Client()
    password_sign_in(client, newcomer.email)
    secret = enrol_totp(client)
    rc = Authenticator.objects.get(user=newcomer, type="recovery_codes")
    codes = RecoveryCodes(rc).get_unused_codes()
    before = get_keyring().current

    result = rotate()

    assert result.new_key == before + 1
    assert result.values >= 2  # the TOTP secret and the recovery seed at least
    totp = Authenticator.objects.get(user=newcomer, type="totp")
    rc = Authenticator.objects.get(user=newcomer, type="recovery_codes")
    assert totp.data["secret"].startswith(f"ow1:{result.new_key}:")
    assert rc.data["seed"].startswith(f"ow1:{result.new_key}:")
    assert secret not in raw_authenticator_data(newcomer.pk, "totp")
    assert RecoveryCodes(rc).get_unused_codes() == codes
    # The real sign-in still takes a code from the same authenticator app.
    client.post(reverse("account_logout"))
    assert password_sign_in(client, newcomer.email)["Location"] == reverse("mfa_authenticate")
    done = client.post(reverse("mfa_authenticate"), {"code": totp_now(secret)})
    assert done["Location"] == reverse("dashboard")
    assert client.get("/").status_code == 200


def test_an_unreadable_mfa_secret_stops_the_rotation_unchanged(
    newcomer: Any, own_key_file: Path
) -> None:
    Authenticator.objects.create(
        user=newcomer, type=Authenticator.Type.TOTP, data={"secret": generate_totp_secret()}
    )
    key_file_before = own_key_file.read_text()
    with pytest.raises(KeyringError, match="not in onwatch's format"):
        rotate()
    assert own_key_file.read_text() == key_file_before


def test_sign_in_asks_for_the_totp_code(newcomer: Any) -> None:
    secret = generate_totp_secret()
    TOTP.activate(newcomer, secret)
    client = Client()
    first = password_sign_in(client, newcomer.email)
    assert first["Location"] == reverse("mfa_authenticate")
    # The password alone signs nobody in.
    assert client.get("/")["Location"].startswith(reverse("account_login"))
    bad = client.post(reverse("mfa_authenticate"), {"code": wrong_code(secret)})
    assert "Incorrect code" in bad.content.decode()
    done = client.post(reverse("mfa_authenticate"), {"code": totp_now(secret)})
    assert done["Location"] == reverse("dashboard")
    assert client.get("/").status_code == 200


def test_a_recovery_code_signs_in_once(newcomer: Any) -> None:
    TOTP.activate(newcomer, generate_totp_secret())
    code = RecoveryCodes(RecoveryCodes.activate(newcomer).instance).get_unused_codes()[0]
    client = Client()
    password_sign_in(client, newcomer.email)
    done = client.post(reverse("mfa_authenticate"), {"code": code})
    assert done["Location"] == reverse("dashboard")
    again = Client()
    password_sign_in(again, newcomer.email)
    refused = again.post(reverse("mfa_authenticate"), {"code": code})
    assert refused.status_code == 200
    assert again.get("/")["Location"].startswith(reverse("account_login"))


def test_the_last_second_factor_cannot_be_removed(newcomer: Any) -> None:
    client = Client()
    password_sign_in(client, newcomer.email)
    enrol_totp(client)
    r = client.post(reverse("mfa_deactivate_totp"))
    assert r.status_code == 200
    assert "cannot deactivate" in r.content.decode()
    assert Authenticator.objects.filter(user=newcomer, type="totp").exists()


def test_totp_can_go_once_a_passkey_stands_in(newcomer: Any) -> None:
    client = Client()
    password_sign_in(client, newcomer.email)
    enrol_totp(client)
    # A passkey row as allauth stores it (its contents matter only when signing in).
    Authenticator.objects.create(
        user=newcomer, type=Authenticator.Type.WEBAUTHN, data={"name": "laptop"}
    )
    r = client.post(reverse("mfa_deactivate_totp"))
    assert r["Location"] == reverse("mfa_index")
    assert not Authenticator.objects.filter(user=newcomer, type="totp").exists()
    assert client.get("/").status_code == 200


def test_fixture_members_have_an_encrypted_second_factor(org: Organization) -> None:
    member = make_member(org, Role.VIEWER)
    raw = raw_authenticator_data(member.pk, "totp")
    assert "ow1:" in raw
    assert settings.MFA_ADAPTER == "onwatch.accounts.adapter.MFAAdapter"


def test_the_enrolment_secret_stays_until_a_new_one_is_asked_for(newcomer: Any) -> None:
    client = Client()
    password_sign_in(client, newcomer.email)
    client.get(ENROL)
    shown = client.session[SECRET_SESSION_KEY]
    # The page again (a second tab, a reload): the same secret, so the QR code scanned
    # first still enrols.
    assert shown in client.get(ENROL).content.decode()
    assert client.get("/favicon.ico").status_code == 200
    assert client.session[SECRET_SESSION_KEY] == shown
    # Asking for a new one replaces it; the old one no longer enrols.
    assert client.post(reverse("new_totp_secret"))["Location"] == ENROL
    page = client.get(ENROL).content.decode()
    fresh = client.session[SECRET_SESSION_KEY]
    assert fresh != shown and fresh in page and shown not in page
    assert "Incorrect code" in client.post(ENROL, {"code": totp_now(shown)}).content.decode()
    enrolled = client.post(ENROL, {"code": totp_now(fresh)})
    assert enrolled["Location"] == reverse("mfa_view_recovery_codes")
