"""`onwatch audit verify` as people run it: a real process against a real database."""

from __future__ import annotations

from pathlib import Path

from tests.procs import django, isolated, run


def test_audit_verify_passes_an_intact_log_and_names_the_first_tampered_entry(
    tmp_path: Path,
) -> None:
    with isolated(tmp_path) as env:
        django(
            """
            from onwatch.core import audit
            for n in range(5):
                audit.record("thing-done", actor=f"person{n}", target=str(n))
            """,
            env,
            migrate=True,
        )
        intact = run(["audit", "verify"], env)
        assert (intact.returncode, intact.stderr) == (0, "")
        assert "audit log intact (5 entries)" in intact.stdout

        # Behind onwatch's back, as someone with database access would.
        django(
            """
            from django.db import connection
            with connection.cursor() as c:
                c.execute("UPDATE core_auditentry SET actor = 'mallory' WHERE seq IN (3, 4)")
            """,
            env,
        )
        tampered = run(["audit", "verify"], env)
    assert tampered.returncode == 1
    assert tampered.stderr.strip() == (
        "onwatch: audit log tampered: entry 3 was changed after it was written"
    )
