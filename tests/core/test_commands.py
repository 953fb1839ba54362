"""What every app's commands share: which organization `--org` means, and a refusal as one
line with exit code 2."""

from __future__ import annotations

import pytest

from onwatch.core.commands import organization
from onwatch.core.models import Organization
from tests.support.fixtures import make_org

pytestmark = pytest.mark.django_db


def refused(name: str | None, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as stopped:
        organization(name)
    assert stopped.value.code == 2
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and said.startswith("onwatch: "), said
    return said


def test_the_only_organization_needs_no_name_and_several_need_one(
    org: Organization, capsys: pytest.CaptureFixture[str]
) -> None:
    assert organization(None) == org
    make_org("Other")
    assert "several organizations (Acme, Other); say which with --org NAME" in refused(None, capsys)
    assert organization("Other").name == "Other"
    assert "no organization 'Nope' (there are: Acme, Other)" in refused("Nope", capsys)


def test_with_no_organization_it_says_how_to_make_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert "create the owner with onwatch createowner" in refused(None, capsys)
