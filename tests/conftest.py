from __future__ import annotations

# Fixtures for every test, from the support package (tests/support/). The test session's
# environment is set earlier still, by tests.support.env (see addopts in pyproject.toml).
pytest_plugins = [
    "tests.support.fixtures",
    "tests.support.backups",
    "tests.support.errors",
    "tests.support.mariadb",
    "tests.support.order",
    "tests.support.passes",
    "tests.support.releases",
    "tests.support.remote_servers",
    "tests.support.svcusers",
    "tests.support.timeline",
]
