"""`onwatch createowner`, run as a real process against its own data dir and database."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from pathlib import Path
from typing import Any

import psycopg

from tests.support.procs import isolated, run

GOOD_PASSWORD = "plum kettle orbit 58"


def query(env: dict[str, str], sql: str) -> list[tuple[Any, ...]]:
    """Read the process's own database directly, as an operator would."""
    url = env.get("DATABASE_URL")
    if url:
        with psycopg.connect(url) as conn:
            return conn.execute(sql).fetchall()
    with sqlite3.connect(Path(env["ONWATCH_DATA_DIR"]) / "onwatch.sqlite3") as conn:
        return conn.execute(sql).fetchall()


def test_it_creates_the_owner_and_the_organization(tmp_path: Path) -> None:
    with isolated(tmp_path, migrated=True) as env:
        done = run(
            ["createowner", "--email", "Ada@Pelican.example", "--org", "Pelican Bakery"],
            env | {"ONWATCH_OWNER_PASSWORD": GOOD_PASSWORD},
        )
        assert done.returncode == 0, done.stderr
        assert "owner ada@pelican.example created" in done.stdout
        users = query(env, "SELECT email, is_staff, is_superuser, password FROM auth_user")
        assert len(users) == 1
        email, staff, superuser, hashed = users[0]
        assert (email, bool(staff), bool(superuser)) == ("ada@pelican.example", True, True)
        assert hashed.startswith("argon2$argon2id$")
        assert GOOD_PASSWORD not in hashed
        rows = query(
            env,
            "SELECT o.name, m.role FROM core_membership m "
            "JOIN core_organization o ON o.id = m.org_id",
        )
        assert rows == [("Pelican Bakery", "owner")]


def test_a_weak_password_exits_2_with_one_line_and_creates_nothing(tmp_path: Path) -> None:
    with isolated(tmp_path, migrated=True) as env:
        done = run(
            ["createowner", "--email", "ada@pelican.example"],
            env | {"ONWATCH_OWNER_PASSWORD": "password1234"},
        )
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("onwatch: This password is too common.")
        assert lines[0].endswith("Nothing was created.")
        assert query(env, "SELECT COUNT(*) FROM auth_user") == [(0,)]
        assert query(env, "SELECT COUNT(*) FROM core_organization") == [(0,)]


def test_a_bad_email_exits_2_and_creates_nothing(tmp_path: Path) -> None:
    with isolated(tmp_path, migrated=True) as env:
        done = run(
            ["createowner", "--email", "not-an-address"],
            env | {"ONWATCH_OWNER_PASSWORD": GOOD_PASSWORD},
        )
        assert done.returncode == 2
        assert done.stderr.strip() == (
            "onwatch: 'not-an-address' is not an email address; nothing was created"
        )
        assert query(env, "SELECT COUNT(*) FROM auth_user") == [(0,)]


def test_link_prints_a_one_time_owner_link(tmp_path: Path) -> None:
    with isolated(tmp_path, migrated=True) as env:
        done = run(["createowner", "--link", "--hours", "2"], env)
        assert done.returncode == 0, done.stderr
        port = env["ONWATCH_PORT"]
        m = re.fullmatch(rf"http://localhost:{port}/invite/([\w-]+)/", done.stdout.strip())
        assert m, done.stdout
        token_hash = hashlib.sha256(m.group(1).encode()).hexdigest()
        rows = query(env, "SELECT token_hash, role, org_id, used_at FROM core_invite")
        assert rows == [(token_hash, "owner", None, None)]
        assert query(env, "SELECT COUNT(*) FROM auth_user") == [(0,)]


def test_with_an_owner_already_it_adds_one_to_the_same_organization(tmp_path: Path) -> None:
    with isolated(tmp_path, migrated=True) as env:
        secret = env | {"ONWATCH_OWNER_PASSWORD": GOOD_PASSWORD}
        assert run(["createowner", "--email", "ada@pelican.example"], secret).returncode == 0
        again = run(["createowner", "--email", "bo@pelican.example", "--org", "Other"], secret)
        assert again.returncode == 0, again.stderr
        assert "in My company" in again.stdout
        rows = query(
            env,
            "SELECT o.name, m.role FROM core_membership m "
            "JOIN core_organization o ON o.id = m.org_id ORDER BY m.id",
        )
        assert rows == [("My company", "owner"), ("My company", "owner")]
        link = run(["createowner", "--link"], env)
        assert link.returncode == 2
        assert link.stderr.strip() == (
            "onwatch: an owner exists already; owners invite people from the Members page"
        )
