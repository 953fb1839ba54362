"""Code the tests share: fixtures, real servers and receivers, helpers that start onwatch.

Registered as pytest plugins in tests/conftest.py, so fixtures need no import."""
