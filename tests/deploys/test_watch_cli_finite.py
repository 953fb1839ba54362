"""`onwatch services watch SERVICE` refuses a threshold that is not a finite number: an
infinite factor (or one not a number) would let no release ever be judged clearly worse."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.child import call
from tests.support.child import deploys as child_deploys
from tests.support.procs import isolated, run

pytestmark = pytest.mark.once


def test_an_infinite_or_not_a_number_threshold_is_refused_in_one_line(tmp_path: Path) -> None:
    with isolated(tmp_path, migrated=True) as env:
        call(child_deploys.make_org, env, "Acme", migrate=True)
        run(["services", "add", "shop", str(tmp_path)], env)
        refused = [
            run(["services", "watch", "shop", "--error-factor", value], env)
            for value in ("inf", "nan")
        ] + [run(["services", "watch", "shop", "--error-percent", "nan"], env)]
        shown = run(["services", "watch", "shop"], env)
    for bad in refused:
        assert bad.returncode == 2
        assert bad.stderr.strip().splitlines() == [
            "onwatch: The error share is a percentage below 100, the factor 1 or more"
        ]
    assert "over 3 times the share of the release before it" in shown.stdout
