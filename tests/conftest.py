from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Before Django reads its settings: a data directory and key file of the test session's
# own, never the developer's real ones.
_session_dir = Path(tempfile.mkdtemp(prefix="onwatch-tests-"))
os.environ["ONWATCH_DATA_DIR"] = str(_session_dir)
os.environ["ONWATCH_KEY_FILE"] = str(_session_dir / "keyring.json")
os.environ.setdefault("SECRET_KEY", "tests-only-" + "k" * 50)

from onwatch.core.keyring import Keyring  # noqa: E402

Keyring.create(_session_dir / "keyring.json")

# pytest-django sets Django up before it imports this file, so the settings were read
# without the variables above: give the live settings the same values.
from django.conf import settings  # noqa: E402

settings.DATA_DIR = _session_dir
settings.KEY_FILE = _session_dir / "keyring.json"
settings.SECRET_KEY = os.environ["SECRET_KEY"]

pytest_plugins = ["tests.fixtures"]
