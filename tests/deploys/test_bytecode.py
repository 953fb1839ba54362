"""Python's bytecode kept between a service's pipelines, in the service's own cache: the
next pipeline does not compile its dependencies again, and another service's steps can
neither read nor change it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from onwatch.core import jobs
from onwatch.core.audit import SYSTEM
from onwatch.core.models import JobLogLine, Organization
from onwatch.deploys import services, workdir
from onwatch.deploys.models import Pipeline, State
from onwatch.deploys.workdir import (
    bytecode_cache,
    remove_leftovers,
    service_folder,
    share_bytecode,
    unshare_bytecode,
    workspace_of,
)
from tests.support.deploys import commit, service_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("channel")]

# A module in the virtualenv with a fixed time, as a dependency hard-linked from uv's
# cache has: its bytecode stays valid from one workspace to the next. The checkout's own
# m.py, and a copy in /tmp, are given a fixed time too: a commit's file written in the
# same second as the last one's.
PROBE = """set -e
mkdir -p .venv/lib
cp dep.txt .venv/lib/dep.py
cp m.py /tmp/t.py
touch -d @1000000000 .venv/lib/dep.py poison.py m.py /tmp/t.py
python3 probe.py
PYTHONPATH=.venv/lib:/tmp python3 -c "import dep, m, t; print('dep', dep.X, 'm', m.X, t.X)"
ls "$OTHER" 2>&1 | tail -1 || true
"""
# Whether dep.py's bytecode is there before anything imports it; with POISON, bytecode
# that says 6 left where dep.py's goes.
PY = """import importlib.util, os, py_compile
cached = importlib.util.cache_from_source(os.path.abspath(".venv/lib/dep.py"))
print("bytecode", "found" if os.path.exists(cached) else "missing")
if os.environ.get("POISON"):
    py_compile.compile("poison.py", cfile=cached)
"""


def files(poison: bool = False, other: str = "", m: int = 1) -> dict[str, str]:
    env = ("POISON=1 " if poison else "") + f"OTHER={other} "
    return {
        "onwatch.toml": f'[test]\ncommand = "{env}bash probe.sh"\n',
        "probe.sh": PROBE,
        "probe.py": PY,
        "dep.txt": "X = 1\n",
        "m.py": f"X = {m}\n",
        # As long as dep.py: its bytecode passes for dep.py's (same time, same size).
        "poison.py": "X = 6\n",
    }


def run(pipeline: Pipeline) -> str:
    [job] = jobs.run_pending(kinds=[services.KIND])
    pipeline.refresh_from_db()
    log = "\n".join(JobLogLine.objects.filter(job=job).values_list("text", flat=True))
    assert pipeline.state == State.SUCCEEDED, log
    assert not workspace_of(pipeline).exists()
    return log


def test_the_next_pipeline_of_a_service_finds_the_bytecode_of_its_dependencies(
    org: Organization, tmp_path: Path
) -> None:
    commit(tmp_path / "repo", files(), "Probe")
    service = service_for(org, str(tmp_path / "repo"))
    first = run(services.run_pipeline(service, SYSTEM, "cli"))
    assert "bytecode missing" in first and "dep 1 m 1 1" in first
    # The checkout's own file changed, same size, same time: compiled again, not taken
    # for the last commit's.
    commit(tmp_path / "repo", files(m=2), "m is 2")
    second = run(services.run_pipeline(service, SYSTEM, "cli"))
    assert "bytecode found" in second and "dep 1 m 2 2" in second
    # Kept in the service's cache, not in the workspace; the workspace's place goes with it.
    cache = bytecode_cache(service)
    assert [p.name for p in cache.rglob("dep.cpython-*.pyc")]
    assert [p for p in cache.rglob("*") if p.is_symlink()] == []
    assert [p.name for p in cache.rglob("m.cpython-*.pyc")] == []


def test_another_services_steps_neither_read_nor_poison_a_services_bytecode(
    org: Organization, tmp_path: Path
) -> None:
    commit(tmp_path / "a", files(poison=True), "Leaves bytecode that says 6")
    a = service_for(org, str(tmp_path / "a"))
    run(services.run_pipeline(a, SYSTEM, "cli"))
    theirs = bytecode_cache(a)
    commit(tmp_path / "b", files(other=str(theirs)), "Probe")
    fields = services.ServiceFields(name="till", git_url=str(tmp_path / "b"), branch="main")
    b = services.add_service(org, fields, SYSTEM)
    log = run(services.run_pipeline(b, SYSTEM, "cli"))
    assert "bytecode missing" in log and "dep 1 m 1 1" in log
    assert f"ls: cannot access '{theirs}': No such file or directory" in log


def test_a_link_left_in_the_cache_is_replaced_not_followed(tmp_path: Path) -> None:
    """The step user owns the cache: whatever it left on the way is removed, never
    written through (onwatch may be root)."""
    cache, outside = tmp_path / "cache", tmp_path / "outside"
    cache.mkdir()
    outside.mkdir()
    workspace = Path("/work/workspaces/7/41")
    (cache / ".pipelines").symlink_to(outside)
    (cache / ".venv").symlink_to(outside)
    (cache / "usr").write_text("not a folder")
    prefix = share_bytecode(cache, workspace, Path("/work/workspaces/7/caches/uv/python"))
    assert list(outside.iterdir()) == []
    assert prefix == cache / ".pipelines" / "41" and not prefix.is_symlink()
    venv = prefix / "work" / "workspaces" / "7" / "41" / ".venv"
    assert os.readlink(venv) == str(cache / ".venv")
    assert os.readlink(prefix / "usr") == str(cache / "usr")
    for shared in (".venv", "usr", "work/workspaces/7/caches/uv/python"):
        assert (cache / shared).is_dir() and not (cache / shared).is_symlink()
    unshare_bytecode(cache, workspace)
    assert not prefix.exists() and (cache / ".venv").is_dir()


def test_a_dead_workers_pipeline_leaves_no_bytecode_of_its_own(org: Organization) -> None:
    service = service_for(org, "/nonexistent")
    workspace = service_folder(service.pk) / "999"
    workspace.mkdir(parents=True)
    prefix = share_bytecode(bytecode_cache(service), workspace, Path("/opt/uv-python"))
    assert prefix.is_dir()
    assert workspace in remove_leftovers()
    assert not prefix.exists() and (bytecode_cache(service) / ".venv").is_dir()


def test_only_workspaces_have_their_bytecode_unshared(
    org: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deleted service's folder and an old cache are removed, but they are not a
    pipeline's workspace: no bytecode of a pipeline is looked for beside them."""
    service = service_for(org, "/nonexistent")
    workspace = service_folder(service.pk) / "999"
    workspace.mkdir(parents=True)
    gone = service_folder(service.pk + 1000)
    gone.mkdir(parents=True)
    unshared: list[Path] = []
    real = workdir.unshare_bytecode

    def spy(cache: Path, path: Path) -> None:
        unshared.append(path)
        real(cache, path)

    monkeypatch.setattr(workdir, "unshare_bytecode", spy)
    removed = remove_leftovers()
    assert workspace in removed and gone in removed
    assert gone not in unshared and workspace in unshared
    assert all(path.parent.parent.name == "workspaces" for path in unshared)
