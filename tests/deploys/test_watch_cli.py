"""`onwatch services watch SERVICE`: what each new release's watch is, changed in part, and
a value it cannot take refused in one line with exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.child import call
from tests.support.child import deploys as child_deploys
from tests.support.procs import isolated, run

pytestmark = pytest.mark.once


def test_the_watch_of_a_service_is_shown_set_in_part_and_bad_values_refused(
    tmp_path: Path,
) -> None:
    with isolated(tmp_path, migrated=True) as env:
        call(child_deploys.make_org, env, "Acme", migrate=True)
        run(["services", "add", "shop", str(tmp_path)], env)
        shown = run(["services", "watch", "shop"], env)
        changed = run(
            ["services", "watch", "shop", "--seconds", "60", "--error-percent", "2.5"], env
        )
        slow = run(["services", "watch", "shop", "--latency-ms", "800"], env)
        ignored = run(["services", "watch", "shop", "--latency-factor", "0"], env)
        bad_latency = run(["services", "watch", "shop", "--latency-factor", "0.5"], env)
        off = run(["services", "watch", "shop", "--seconds", "0"], env)
        bad = run(["services", "watch", "shop", "--error-factor", "0.5"], env)
    assert (shown.returncode, shown.stdout) == (
        0,
        "onwatch: shop: each new release is watched for 300 s and rolled back when, with at "
        "least 20 requests answered, more than 5 % of them are errors (5xx) and over 3 times "
        "the share of the release before it while it served (the share alone when fewer than "
        "20 of its answers were counted), or when they take over 500 ms on average and "
        "over 3 times as long as the release before it's\n",
    )
    assert changed.returncode == 0, changed.stderr
    assert "watched for 60 s" in changed.stdout and "more than 2.5 % of them" in changed.stdout
    assert "over 800 ms on average and over 3 times as long" in slow.stdout, slow.stderr
    assert ignored.stdout.endswith("; how long they take does not count\n"), ignored.stderr
    assert bad_latency.returncode == 2
    assert bad_latency.stderr.strip().splitlines() == [
        "onwatch: The latency factor is 0 (latency does not count) or 1 to 1000, its floor 0 "
        "to 600000 ms"
    ]
    assert off.stdout == (
        "onwatch: shop: new releases are not watched: onwatch never rolls one back on its own\n"
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "onwatch: The error share is a percentage below 100, the factor 1 or more"
    ]
