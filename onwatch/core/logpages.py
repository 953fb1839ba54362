"""A job's log as pages and search results, so a log of 100,000 lines never reaches the
browser at once: a page shows PAGE_LINES lines (the last ones unless another page is
asked for), and a search lists the matching lines with their numbers and links to the
page that holds each. Line numbers count the job's lines from 1, in the order written."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.utils.safestring import SafeString

from onwatch.core import ansi
from onwatch.core.models import Job, JobLogLine

PAGE_LINES = 1000
MATCHES_SHOWN = 200
SEARCH_MAX = 200  # characters of a search; more is refused, not cut


@dataclass(frozen=True)
class Line:
    n: int
    id: int
    html: SafeString

    @property
    def page_from(self) -> int:
        return page_start(self.n)


@dataclass
class Page:
    lines: list[Line]
    total: int
    first: int  # number of the first line shown (1 when the log is empty)
    # The text of a job from before log lines were rows, or the note left when its lines
    # were aged out: shown as it is, without pages.
    old_log: str = ""
    earlier: int | None = None  # `from` of the page before, if any
    later: int | None = None
    query: str = ""
    matches: list[Line] = field(default_factory=list)
    more_matches: bool = False
    problem: str = ""  # why the request's paging or search was not taken

    @property
    def last_id(self) -> int:
        """The id of the last line shown: where a live stream goes on from."""
        return self.lines[-1].id if self.lines else 0

    @property
    def at_end(self) -> bool:
        return self.first + len(self.lines) > self.total

    @property
    def last(self) -> int:
        return self.first + len(self.lines) - 1


def line(n: int, pk: int, text: str) -> Line:
    return Line(n=n, id=pk, html=ansi.to_html(text))


def page_start(n: int) -> int:
    """The `from` of the page a search result links to (pages counted from line 1)."""
    return (n - 1) // PAGE_LINES * PAGE_LINES + 1


def read_page(job: Job, start: int | None) -> Page:
    """PAGE_LINES lines from line `start`, or the last PAGE_LINES lines when None."""
    rows = JobLogLine.objects.filter(job=job).order_by("id")
    total = rows.count()
    if total == 0:
        return Page(lines=[], total=0, first=1, old_log=job.old_log)
    first = max(1, total - PAGE_LINES + 1) if start is None else min(max(1, start), total)
    got = rows.values_list("id", "text")[first - 1 : first - 1 + PAGE_LINES]
    lines = [line(first + i, pk, text) for i, (pk, text) in enumerate(got)]
    return Page(
        lines=lines,
        total=total,
        first=first,
        earlier=max(1, first - PAGE_LINES) if first > 1 else None,
        later=first + PAGE_LINES if first + PAGE_LINES <= total else None,
    )


def search(job: Job, query: str) -> tuple[list[Line], bool]:
    """The first MATCHES_SHOWN lines containing `query` (any case), numbered; and whether
    there are more."""
    rows = JobLogLine.objects.filter(job=job, text__icontains=query).order_by("id")
    found = list(rows.values_list("id", "text")[: MATCHES_SHOWN + 1])
    matches: list[Line] = []
    n, before = 0, 0
    for pk, text in found[:MATCHES_SHOWN]:
        # Counted from the previous match on, so all the counts together read the job's
        # lines once, however many matches there are.
        n += JobLogLine.objects.filter(job=job, id__gt=before, id__lte=pk).count()
        before = pk
        matches.append(line(n, pk, text))
    return matches, len(found) > MATCHES_SHOWN


def for_request(job: Job, params: dict[str, str]) -> Page:
    """The page and search a request asks for (`from`, `q`); a malformed one is said on
    the page, which then shows the last lines."""
    start, problem = None, ""
    raw = params.get("from", "")
    if raw:
        if raw.isdigit() and int(raw) > 0:
            start = int(raw)
        else:
            problem = "The page asked for (from=…) must be a line number, like 1001."
    page = read_page(job, start)
    page.problem = problem
    query = params.get("q", "").strip()
    if len(query) > SEARCH_MAX:
        page.problem = f"Search for at most {SEARCH_MAX} characters."
    elif query:
        page.query = query
        page.matches, page.more_matches = search(job, query)
    return page
