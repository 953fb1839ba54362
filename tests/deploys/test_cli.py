"""`onwatch services add|list` and `onwatch pipelines run --wait` against a real worker
process: the output streams back, and the exit code says whether the tests passed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.child import call
from tests.support.child import deploys as child_deploys
from tests.support.deploys import commit, project
from tests.support.procs import Running, isolated, run

# Its subject lies outside onwatch's own database (processes, a browser, outside tools):
# scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once


def test_pipelines_run_wait_streams_the_log_and_exits_non_zero_when_it_fails(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "repo"
    commit(repo, project(passing=False), "Break the sum")
    with isolated(tmp_path, migrated=True) as env:
        call(child_deploys.make_org, env, "Acme", migrate=True)
        added = run(["services", "add", "shop", str(repo)], env)
        secret = run(["services", "secret", "shop", "API_TOKEN"], env, input="cli-secret-9\n")
        listed = run(["services", "list"], env)
        unknown = run(["pipelines", "run", "nope"], env)
        bad = run(["services", "add", "other", "ext::sh -c id"], env)
        inside = str(Path(env["ONWATCH_DATA_DIR"]) / "work")
        hidden_work = run(["services", "list"], {**env, "ONWATCH_WORK_DIR": inside})
        with Running(["worker"], env) as worker:
            worker.wait_for("ready")
            red = run(["pipelines", "run", "shop", "--wait"], env, timeout=120)
            commit(repo, project(passing=True), "Fix the sum")
            green = run(["pipelines", "run", "shop", "--wait"], env, timeout=120)
    assert added.returncode == 0, added.stderr
    assert "onwatch: added shop" in added.stdout and "ssh-ed25519 " in added.stdout
    assert secret.returncode == 0 and "saved the secret API_TOKEN of shop" in secret.stdout
    assert listed.stdout.startswith(f"shop\t{repo}\tmain\tno pipeline yet")
    assert unknown.returncode == 2
    assert unknown.stderr == "onwatch: there is no service 'nope' (there are: shop)\n"
    assert bad.returncode == 2 and "The repository's address is not usable" in bad.stderr
    # Workspaces in the data directory would be out of the step user's reach, and near
    # what steps must never see: refused before anything starts.
    assert hidden_work.returncode == 2 and hidden_work.stderr.count("\n") == 1
    assert hidden_work.stderr.startswith(f"onwatch: ONWATCH_WORK_DIR={inside} is inside the data")
    assert red.returncode == 1, red.stdout + red.stderr
    assert "AssertionError: 2 != 3" in red.stdout  # the step's own output, streamed
    assert red.stderr.strip().endswith("failed: exited with 1")
    assert green.returncode == 0, green.stdout + green.stderr
    assert "OK" in green.stdout and green.stderr.strip().endswith("succeeded")


def test_a_work_folder_that_cannot_be_made_is_a_warning_not_a_refusal(tmp_path: Path) -> None:
    with isolated(tmp_path, migrated=True) as env:
        call(child_deploys.make_org, env, "Acme", migrate=True)
        (tmp_path / "a-file").write_text("")
        work = str(tmp_path / "a-file" / "work")
        listed = run(["services", "list"], {**env, "ONWATCH_WORK_DIR": work})
    assert listed.returncode == 0, listed.stderr
    assert listed.stderr.count("\n") == 1
    assert listed.stderr.startswith(
        f"onwatch: warning: The pipelines' work folder {work} cannot be made: "
    )
    assert listed.stderr.endswith("(pipelines cannot run until then)\n")


def test_services_delete_asks_for_the_name_and_deletes_nothing_without_it(
    tmp_path: Path,
) -> None:
    with isolated(tmp_path, migrated=True) as env:
        call(child_deploys.make_org, env, "Acme", migrate=True)
        run(["services", "add", "shop", str(tmp_path / "repo")], env)
        refused = run(["services", "delete", "shop"], env, input="blog\n")
        still = run(["services", "list"], env)
        deleted = run(["services", "delete", "shop"], env, input="shop\n")
        scripted = run(["services", "add", "blog", str(tmp_path / "repo")], env)
        confirmed = run(["services", "delete", "blog", "--confirm", "blog"], env)
        left = run(["services", "list"], env)
    assert refused.returncode == 2, refused.stderr
    assert "Type its name to confirm: " in refused.stdout
    assert refused.stderr == (
        "onwatch: Type the service's name, shop, to delete it; nothing was deleted\n"
    )
    assert still.stdout.startswith("shop\t")
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.endswith("onwatch: deleted shop and its 0 pipelines\n")
    assert scripted.returncode == 0 and confirmed.returncode == 0, confirmed.stderr
    assert left.stdout == ""
