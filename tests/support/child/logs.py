"""Child-process functions for the live log tests (see tests.support.child)."""

from __future__ import annotations

import json
import time

from django.contrib.auth import get_user_model
from django.test import Client

from onwatch.core import jobs
from onwatch.core.models import Job, JobLogLine, JobState, Membership, Organization


def seed_streams() -> None:
    """A viewer with a second factor and a session; a running job of theirs with three
    lines, and one of another organization. Prints the ids and the session cookie."""
    from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret

    org = Organization.objects.create(name="Bakery")
    other = Organization.objects.create(name="Other")
    email = "viewer@bakery.example"
    user = get_user_model().objects.create_user(username=email, email=email, password="x" * 20)
    Membership.objects.create(org=org, user=user, role="viewer")
    TOTP.activate(user, generate_totp_secret())
    job = Job.objects.create(org=org, kind="core.sleep", queue="long", state=JobState.RUNNING)
    for text in ("one", "\x1b[32mtwo\x1b[0m <b>", "three"):
        jobs.append_line(job.pk, text)
    hidden = Job.objects.create(org=other, kind="core.sleep", state=JobState.RUNNING)
    client = Client()
    client.force_login(user)
    cookie = client.cookies["sessionid"].value
    print(json.dumps({"job": job.pk, "hidden": hidden.pk, "cookie": cookie}))


def append_lines(job: int, lines: list[str]) -> None:
    """As a running job logs; prints when the last line was committed (time.time())."""
    for text in lines:
        jobs.append_line(job, text)
    print(time.time())


def end_job(job: int, state: str) -> None:
    Job.objects.filter(pk=job).update(state=state)


def append_paced(job: int, n: int, every: float) -> None:
    """`n` lines, one each `every` seconds, each saying when it was committed."""
    for i in range(n):
        jobs.append_line(job, f"paced {i} {time.time()}")
        time.sleep(every)


def seed_long_log(lines: int, state: str) -> None:
    """A job of the (only) organization with `lines` lines, written in bulk as a long
    step would have; every 10,000th says "needle". Prints its id."""
    org = Organization.objects.get()
    job = Job.objects.create(org=org, kind="core.sleep", queue="long", state=state)
    add_lines(job.pk, 1, lines)
    print(job.pk)


def add_lines(job: int, first: int, count: int) -> None:
    def text(i: int) -> str:
        return f"needle at line {i}" if i % 10_000 == 0 else f"line {i} of the long log"

    for start in range(first, first + count, 5000):
        end = min(start + 5000, first + count)
        JobLogLine.objects.bulk_create(
            JobLogLine(job_id=job, text=text(i)) for i in range(start, end)
        )


def add_viewer(email: str) -> None:
    """Another viewer of the (first) organization, with a second factor and a session;
    prints its session cookie."""
    from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret

    org = Organization.objects.order_by("id")[0]
    user = get_user_model().objects.create_user(username=email, email=email, password="x" * 20)
    Membership.objects.create(org=org, user=user, role="viewer")
    TOTP.activate(user, generate_totp_secret())
    client = Client()
    client.force_login(user)
    print(client.cookies["sessionid"].value)


def remove_member(email: str) -> None:
    Membership.objects.filter(user__email=email).delete()


def sign_out(cookie: str) -> None:
    """What signing out does to the session on the server: it is gone."""
    from importlib import import_module

    from django.conf import settings

    import_module(settings.SESSION_ENGINE).SessionStore(cookie).delete()
