"""A job's log on its page: the last lines, the others a page at a time, and a search
that gives each matching line's number and a link into the page that holds it."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from onwatch.core.models import Job, JobLogLine, JobState, Membership
from tests.support.fixtures import signed_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


def job_with_lines(members: dict[str, Any], n: int, state: str = JobState.RUNNING) -> Job:
    org = Membership.objects.get(user=members["viewer"]).org
    job = Job.objects.create(org=org, kind="core.sleep", state=state)
    text = {7: "needle in line 7", 1999: "\x1b[31mneedle\x1b[0m in line 1999"}
    JobLogLine.objects.bulk_create(
        JobLogLine(job=job, text=text.get(i, f"line {i}")) for i in range(1, n + 1)
    )
    return job


def page(members: dict[str, Any], job: Job, **params: str) -> str:
    url = reverse("job_detail", args=[job.pk])
    answer = signed_in(members["viewer"]).get(url, params)
    assert answer.status_code == 200
    return str(answer.content.decode())


def test_a_long_log_shows_its_last_lines_and_links_to_earlier_ones(
    members: dict[str, Any],
) -> None:
    job = job_with_lines(members, 2500)
    body = page(members, job)
    assert 'id="L2500" data-n="2500">line 2500</span>' in body and 'id="L1501"' in body
    assert 'id="L1500"' not in body and body.count('class="line"') == 1000
    assert "Lines 1501–2500 of 2500." in body and 'href="?from=501"' in body
    # Followed live from the last line shown.
    last = JobLogLine.objects.filter(job=job).order_by("-id").first()
    assert last is not None and f'data-after="{last.pk}"' in body


def test_an_earlier_page_is_a_thousand_lines_and_is_not_followed(
    members: dict[str, Any],
) -> None:
    job = job_with_lines(members, 2500)
    body = page(members, job, **{"from": "1"})
    assert 'id="L1"' in body and 'id="L1000"' in body and 'id="L1001"' not in body
    assert "Lines 1–1000 of 2500." in body and 'href="?from=1001"' in body
    assert "data-events" not in body and "job-follow-note" not in body
    assert 'id="log-earlier" href="?from=1" hidden' in body


def test_a_search_lists_matching_lines_with_numbers_and_links_to_their_page(
    members: dict[str, Any],
) -> None:
    job = job_with_lines(members, 2500, JobState.SUCCEEDED)
    body = page(members, job, q="NEEDLE")
    matches = body[body.index('id="log-matches"') :]
    matches = matches[: matches.index("</pre>")]
    assert '<a href="?from=1#L7">7</a>  needle in line 7' in matches
    assert (
        '<a href="?from=1001#L1999">1999</a>  <span class="a-f1">needle</span> in line 1999'
        in matches
    )
    assert matches.count("<a href") == 2
    assert "No line contains" in page(members, job, q="haystack")


def test_a_search_with_many_matches_shows_the_first_and_says_so(
    members: dict[str, Any],
) -> None:
    job = job_with_lines(members, 450, JobState.SUCCEEDED)
    body = page(members, job, q="line")
    assert "These are the first 200 lines that match" in body
    assert '<a href="?from=1#L200">200</a>' in body and "#L201" not in body


def test_bad_paging_and_search_say_what_to_do_and_show_the_last_lines(
    members: dict[str, Any],
) -> None:
    job = job_with_lines(members, 20, JobState.SUCCEEDED)
    body = page(members, job, **{"from": "-3"})
    assert "must be a line number, like 1001" in body and 'id="L20"' in body
    assert "Search for at most 200 characters." in page(members, job, q="x" * 201)
    # Past the end: the last line alone, not an empty page.
    assert "Lines 20–20 of 20." in page(members, job, **{"from": "999"})


def test_colours_show_on_the_page_as_on_the_stream(members: dict[str, Any]) -> None:
    job = job_with_lines(members, 0, JobState.SUCCEEDED)
    JobLogLine.objects.create(job=job, text="\x1b[1;32mPASSED\x1b[0m <b>tests</b>")
    body = page(members, job)
    assert '<span class="a-f2 a-bold">PASSED</span> &lt;b&gt;tests&lt;/b&gt;' in body
    assert "/static/onwatch/ansi.css" in body
