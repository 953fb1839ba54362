"""The security headers people get on every page, and Django's deployment checklist."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
from django.test import Client

from onwatch.core.roles import Role
from tests.support.fixtures import PASSWORD, make_member, make_org, signed_in
from tests.support.procs import ROOT, onwatch_env

# Inline code the policy would block: a <script> with a body and no nonce, or a style="".
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\b(?:src|nonce)=)(?![^>]*application/json)[^>]*>")


def assert_strict_csp(html: str, header: str, where: str) -> None:
    assert header, where
    assert "unsafe-inline" not in header, where
    assert "unsafe-eval" not in header, where
    assert re.search(r"script-src 'self'( 'nonce-[^']+')?;", header), where
    assert "frame-ancestors 'none'" in header, where
    assert not INLINE_SCRIPT.search(html), f"{where}: {INLINE_SCRIPT.search(html)}"
    assert ' style="' not in html, where


@pytest.mark.django_db
def test_pages_carry_a_strict_csp_and_no_inline_code() -> None:
    anonymous = Client()
    page = anonymous.get("/accounts/login/")
    assert_strict_csp(page.content.decode(), page["Content-Security-Policy"], "login")

    owner = make_member(make_org(), Role.OWNER)
    client = signed_in(owner)
    for path in ["/", "/accounts/2fa/", "/channels/", "/deliveries/"]:
        r = client.get(path)
        assert r.status_code == 200, path
        assert_strict_csp(r.content.decode(), r["Content-Security-Policy"], path)

    newcomer = make_member(make_org("Other"), Role.OWNER, email="new@other.example", mfa=False)
    fresh = Client()
    fresh.post("/accounts/login/", {"login": newcomer.email, "password": PASSWORD})
    for path in ["/accounts/2fa/totp/activate/", "/accounts/2fa/webauthn/add/"]:
        r = fresh.get(path)
        assert r.status_code == 200, path
        assert_strict_csp(r.content.decode(), r["Content-Security-Policy"], path)


@pytest.mark.django_db
def test_the_admin_carries_the_same_csp() -> None:
    owner = make_member(make_org(), Role.OWNER, mfa=False)
    owner.is_staff = owner.is_superuser = True
    owner.save()
    TOTP.activate(owner, generate_totp_secret())
    r = signed_in(owner).get("/admin/")
    assert r.status_code == 200
    assert "unsafe-inline" not in r["Content-Security-Policy"]


@pytest.mark.django_db
def test_hsts_is_sent_over_https_only() -> None:
    client = Client()
    secure = client.get("/health/", secure=True)
    assert secure["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert "Strict-Transport-Security" not in client.get("/health/")


@pytest.mark.django_db
def test_other_hardening_headers() -> None:
    r = Client().get("/accounts/login/")
    assert r["X-Frame-Options"] == "DENY"
    assert r["X-Content-Type-Options"] == "nosniff"
    assert r["Referrer-Policy"] == "same-origin"
    assert r["Cross-Origin-Opener-Policy"] == "same-origin"


def test_production_settings_pass_the_deployment_checklist(tmp_path: Path) -> None:
    env = onwatch_env(
        tmp_path,
        None,
        DJANGO_SETTINGS_MODULE="onwatch.settings",
        ONWATCH_BASE_URL="https://onwatch.example.com",
        SECRET_KEY=secrets.token_urlsafe(64),
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "django", "check", "--deploy", "--fail-level", "WARNING"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout
    assert time.monotonic() - started < 120
