"""A Django app that only the tests install: it contributes a dashboard card the way an
app of onwatch does, to prove the dashboard shows what it did not name."""
