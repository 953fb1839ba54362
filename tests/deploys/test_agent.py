"""The agent's own parts, in this process: its JSON lines (one answer per request, in
order, an unknown or failing request answered and the next still taken), what of a tar it
unpacks, and a switch's record as it travels. Over a real ssh connection: test_remote.py."""

from __future__ import annotations

import io
import json
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from onwatch.deploys import agent, caddy, switch

pytestmark = pytest.mark.once  # no database of onwatch's: the SQLite pass runs it


def served(folder: Path, *requests: dict[str, Any] | bytes) -> list[dict[str, Any]]:
    """What the agent answers to `requests` (bytes: what follows a receive, as they are)."""
    sent = [r if isinstance(r, bytes) else json.dumps(r).encode() + b"\n" for r in requests]
    stdin = io.BytesIO(b"".join(sent))
    stdout = io.BytesIO()
    agent.Agent(folder, stdin, stdout).serve()
    return [json.loads(line) for line in stdout.getvalue().splitlines()]


def tar_of(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buffer.getvalue()


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o4777
    return info


def test_each_request_gets_one_answer_and_a_bad_one_does_not_end_the_agent(
    tmp_path: Path,
) -> None:
    answers = served(
        tmp_path,
        {"id": 1, "op": "free_ports", "args": {"count": 2}},
        {"id": 2, "op": "no such thing", "args": {}},
        {"id": 3, "op": "has_folder", "args": {"folder": str(tmp_path / "releases/1/2")}},
        {"id": 4, "op": "has_folder", "args": {"folder": str(tmp_path / "releases/../x")}},
    )
    assert [a["id"] for a in answers] == [1, 2, 3, 4]
    assert len(set(answers[0]["value"])) == 2
    assert answers[1] == {
        "id": 2,
        "error": "place",
        "message": "the agent failed: KeyError: 'no such thing'",
    }
    assert answers[2] == {"id": 3, "value": False}
    assert answers[3]["message"] == (
        f"{tmp_path}/releases/../x is not a release folder of {tmp_path}"
    )


def test_a_tar_is_unpacked_with_what_stays_inside_and_no_special_modes(tmp_path: Path) -> None:
    folder = tmp_path / "releases" / "1" / "1"
    data = tar_of(
        (entry("app"), b"print('hi')\n"),
        (entry("conf", tarfile.DIRTYPE), b""),
        (entry("conf/link", tarfile.SYMTYPE, "../app"), b""),
    )
    receive = {"id": 1, "op": "receive", "args": {"folder": str(folder), "size": len(data)}}
    [answer] = served(tmp_path, receive, data)
    assert answer == {"id": 1, "value": None}
    assert (folder / "conf" / "link").read_text() == "print('hi')\n"
    assert (folder / "app").stat().st_mode & 0o7777 == 0o755  # no setuid, no world write


@pytest.mark.parametrize(
    ("member", "why"),
    [
        (entry("/etc/cron.d/x"), "/etc/cron.d/x"),
        (entry("a/../../x"), "a/../../x"),
        (entry("up", tarfile.SYMTYPE, "../../etc"), "up"),
        (entry("abs", tarfile.SYMTYPE, "/etc/passwd"), "abs"),
        (entry("hard", tarfile.LNKTYPE, "app"), "hard"),
        (entry("dev", tarfile.CHRTYPE), "dev"),
        (entry("fifo", tarfile.FIFOTYPE), "fifo"),
    ],
)
def test_what_would_leave_the_release_is_refused_and_the_next_request_understood(
    tmp_path: Path, member: tarfile.TarInfo, why: str
) -> None:
    folder = tmp_path / "releases" / "1" / "1"
    data = tar_of((entry("app"), b"x"), (member, b""))
    receive = {"id": 1, "op": "receive", "args": {"folder": str(folder), "size": len(data)}}
    after = {"id": 2, "op": "has_folder", "args": {"folder": str(folder)}}
    refused, then = served(tmp_path, receive, data, after)
    assert refused["message"] == f"the release holds {why}, which onwatch does not copy; remove it"
    assert then == {"id": 2, "value": False}  # its bytes were all read; nothing left behind
    assert list(folder.parent.iterdir()) == []


def test_a_switch_record_travels_whole() -> None:
    at = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    record = switch.Switch(
        "shop.test",
        "r2",
        4101,
        previous="r1",
        steps=[switch.Step("switch", at, at, True, "r2 takes requests", live_at=at)],
        warning="",
        felt=switch.Felt(served=10, drain_seconds=0.5),
        still_counting=True,
    )
    travelled = json.loads(json.dumps(agent.record_json(record), default=agent._plain))
    assert agent.record_of(travelled) == record
    site = caddy.Site("shop.test", (4101, 4102), "/up")
    assert agent.site_of(json.loads(json.dumps(agent.site_json(site)))) == site
    release = switch.Release("r2", "run", Path("/srv/r2"), {"A": "1"}, 10, "")
    assert agent.release_of(json.loads(json.dumps(agent.release_json(release)))) == release


def test_a_switch_waiting_for_onwatchs_word_takes_long_silence_as_onwatch_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent, "WAIT_SECONDS", 0.3)
    here = agent.Agent(tmp_path, io.BytesIO(), io.BytesIO())
    waiting = agent.Request(here, 1, {})
    waiting.answers.put("something else")
    with pytest.raises(agent.ClientGone):
        waiting.wait_for("continue")
    waiting.answers.put("continue")
    waiting.wait_for("continue")  # said in time: it goes on
