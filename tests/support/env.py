"""The test session's own data directory, key file and secret key, set before Django reads
its settings.

Loaded with `-p tests.support.env` (pytest's addopts), so it is imported while pytest
parses its options: before pytest-django sets Django up and before any conftest, which
would be too late for settings derived from these at import (the audit head file, the
SQLite path). Never the developer's real data directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

SESSION_DIR = Path(tempfile.mkdtemp(prefix="onwatch-tests-"))
# Passable (not readable) by others: pipeline steps run as another user and must reach
# their workspace inside it, as sandbox.py asks of a data directory.
SESSION_DIR.chmod(0o711)
os.environ["ONWATCH_DATA_DIR"] = str(SESSION_DIR)
os.environ["ONWATCH_KEY_FILE"] = str(SESSION_DIR / "keyring.json")
# Never the tester's own ~/.ssh/authorized_keys.
os.environ["ONWATCH_AUTHORIZED_KEYS"] = str(SESSION_DIR / "authorized_keys")
os.environ.setdefault("SECRET_KEY", "tests-only-" + "k" * 50)
# As root, each service gets a user of its own (deploys/svcusers.py), named after its id:
# names of this process only, so test sessions running side by side (and their service
# ids, which repeat) never share one; tests.support.svcusers removes them.
os.environ["ONWATCH_SERVICE_USER_PREFIX"] = f"owt{os.getpid()}-"
# supervisord, whatever the machine runs: where systemd is PID 1 and the tester lingers,
# "auto" would give the suite's apps to the tester's own user manager as units. The
# systemd tests ask for their manager themselves (tests.support.systemd_user.reaching).
os.environ["ONWATCH_PROCESS_MANAGER"] = "supervisord"

# One folder for the whole run, shared by its xdist workers (they inherit the variable from
# the main process, which imports this first): the migrated template of tests.support.template.
_OWN_RUN_DIR = "OW_TESTS_RUN_DIR" not in os.environ
if _OWN_RUN_DIR:
    os.environ["OW_TESTS_RUN_DIR"] = tempfile.mkdtemp(prefix="onwatch-run-")

# After the variables: nothing onwatch imports may read the settings before they are set.
from onwatch.core.keyring import Keyring  # noqa: E402

Keyring.create(SESSION_DIR / "keyring.json")


def pytest_unconfigure(config: Any) -> None:
    """The run's template goes with the process that made its folder (the main one)."""
    if not _OWN_RUN_DIR:
        return
    from tests.support import template

    url = os.environ.get("DATABASE_URL", "")
    made = ("template-postgresql", "testdb-postgresql")
    if url.startswith("postgres") and any((template.run_dir() / f).exists() for f in made):
        template.drop(url)
    shutil.rmtree(template.run_dir(), ignore_errors=True)
