"""`onwatch notify test` as people run it: a real process against its own database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.procs import isolated, run
from tests.support.receivers import SmtpReceiver, WebhookReceiver, add_channels, closed_port_url


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    with isolated(tmp_path, migrated=True) as env:
        yield env


def test_it_delivers_to_every_channel_and_says_so(env: dict[str, str]) -> None:
    with WebhookReceiver() as hooks, SmtpReceiver() as smtp:
        add_channels(env, {"hook": hooks.url("/in"), "mail": smtp.url(to="ops@example.com")})
        done = run(["notify", "test"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(done.stdout.splitlines()) == ["hook: delivered", "mail: delivered"]
    [hook] = hooks.hooks
    assert hook.json["title"] == "onwatch test notification"
    [mail] = smtp.mails
    assert mail.rcpt_tos == ["ops@example.com"]
    assert mail.subject == "onwatch test notification"
    assert "alerts reach you on this channel" in mail.text


def test_channel_picks_one_and_an_unreachable_one_exits_non_zero_with_the_reason(
    env: dict[str, str],
) -> None:
    with WebhookReceiver() as hooks:
        add_channels(env, {"hook": hooks.url(), "dead": closed_port_url()})

        only = run(["notify", "test", "--channel", "hook"], env)
        assert only.returncode == 0, only.stderr
        assert only.stdout.splitlines() == ["hook: delivered"]
        assert len(hooks.hooks) == 1

        dead = run(["notify", "test", "--channel", "dead"], env)
    assert dead.returncode == 1
    [line] = dead.stdout.splitlines()
    assert line.startswith("dead: retrying: Delivery failed: A Connection error occurred")
    assert line.endswith("(the worker will try again)")
    assert len(hooks.hooks) == 1


def test_an_unknown_channel_is_one_clear_line(env: dict[str, str]) -> None:
    done = run(["notify", "test", "--channel", "nope"], env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "onwatch: there is no channel 'nope'; see the names under Alert channels"
    ]
