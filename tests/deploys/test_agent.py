"""The agent's own parts, in this process: its JSON lines (one answer per request, in
order, an unknown or failing request answered and the next still taken), what of a tar it
unpacks, and a switch's record as it travels. Over a real ssh connection: test_remote.py."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
import tarfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from onwatch.deploys import agent, caddy, remote, switch
from tests.support.ssh_hosts import HOST_PYTHON

pytestmark = pytest.mark.once  # no database of onwatch's: one pass of scripts/test runs it


def served(
    folder: Path, *requests: dict[str, Any] | bytes, paced: bool = True
) -> list[dict[str, Any]]:
    """What the agent answers to `requests` (bytes: what follows a receive, as they are);
    `paced`: each sent once the one before was answered, as onwatch does."""
    sent = [r if isinstance(r, bytes) else json.dumps(r).encode() + b"\n" for r in requests]
    stdout = io.BytesIO()
    here = agent.Agent(folder, io.BytesIO(), stdout)
    here.stdin = Paced(b"".join(sent), here) if paced else io.BytesIO(b"".join(sent))
    here.serve()
    return [json.loads(line) for line in stdout.getvalue().splitlines()]


class Paced(io.BytesIO):
    """stdin whose next line comes once the agent runs nothing."""

    def __init__(self, data: bytes, here: agent.Agent) -> None:
        super().__init__(data)
        self.here = here

    def readline(self, size: int | None = -1) -> bytes:
        while self.here.busy():
            time.sleep(0.01)
        return super().readline(size)


def tar_of(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buffer.getvalue()


def test_free_ports_are_none_kept_for_a_service_stopped_there(tmp_path: Path) -> None:
    """A service stopped on a host keeps its slots though its site left Caddy: a new
    service there must not be given them (it would take them from it at its next deploy)."""
    high = agent._ephemeral_start()
    free = [p for p in range(high // 2, high, 97) if not switch._port_taken(p)][:2]
    avoid = sorted(set(range(high // 2, high)) - set(free))
    [answer] = served(tmp_path, {"id": 1, "op": "free_ports", "args": {"count": 2, "avoid": avoid}})
    assert sorted(answer["value"]) == free


def test_a_build_that_prints_too_much_is_stopped_at_its_limit(tmp_path: Path) -> None:
    folder = tmp_path / "releases" / "1" / "2"
    folder.mkdir(parents=True)
    floods = {
        "yes hello; sleep 60": {"output_bytes": 1000},
        "seq 100; sleep 60": {"output_lines": 5},
    }
    ended = []
    for command, limit in floods.items():
        args = {"folder": str(folder), "command": command, "env": {}, "seconds": 30, **limit}
        *lines, result = served(tmp_path, {"id": 1, "op": "run", "args": args})
        ended.append((result["value"]["exit_code"], result["value"]["reason"], len(lines)))
    assert ended[0][:2] == (None, "printed more than 1,000 bytes, the step's limit")
    assert ended[1] == (None, "printed more than 5 lines, the step's limit", 5)


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
    # below the kernel's range for outgoing connections, which could take an idle slot
    assert all(port < agent._ephemeral_start() for port in answers[0]["value"])
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
    assert refused["message"] == not_copied(why)
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


def test_a_switch_waiting_for_onwatchs_word_stops_when_it_is_late_cancelled_or_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the switch then does on a host (stops the new release, answers): test_remote."""
    monkeypatch.setattr(agent, "WAIT_SECONDS", 0.3)
    here = agent.Agent(tmp_path, io.BytesIO(), io.BytesIO())
    waiting = agent.Request(here, 1, {})
    waiting.answers.put("something else")
    with pytest.raises(agent.Late):
        waiting.wait_for("continue")
    waiting.answers.put("continue")
    waiting.wait_for("continue")  # said in time: it goes on
    waiting.cancelled.set()
    with pytest.raises(agent.Cancelled):
        waiting.wait_for("continue")
    here.gone.set()
    with pytest.raises(agent.ClientGone):
        agent.Request(here, 2, {}).wait_for("continue")


def test_a_refused_receive_reads_its_files_whole_and_no_line_of_them_is_run(
    tmp_path: Path,
) -> None:
    """A line of a file that looks like a request is a file's line, never a request."""
    planted = json.dumps({"id": 9, "op": "remove_folders", "args": {"folders": ["x"]}})
    data = tar_of((entry("notes"), f"\n{planted}\n".encode() * 200))
    receive = {"id": 1, "op": "receive", "args": {"folder": "/etc/x", "size": len(data)}}
    after = {"id": 2, "op": "has_folder", "args": {"folder": str(tmp_path / "releases/1/1")}}
    answers = served(tmp_path, receive, data, after)
    assert answers == [
        {"id": 1, "error": "place", "message": f"/etc/x is not a release folder of {tmp_path}"},
        {"id": 2, "value": False},
    ]


def test_a_line_that_is_not_a_request_is_answered_and_the_agent_goes_on(tmp_path: Path) -> None:
    after = {"id": 2, "op": "has_folder", "args": {"folder": str(tmp_path / "releases/1/1")}}
    answers = served(tmp_path, b"\x89PNG not json\n", b'{"op": "x"}\n', b"[1]\n", after)
    assert [(a["id"], a.get("error")) for a in answers] == [
        (None, "place"),
        (None, "place"),
        (None, "place"),
        (2, None),
    ]
    assert answers[0]["message"].startswith("the agent could not read a request (")
    # Files of no valid size: where they end is unknown, so the agent stops reading.
    bad = {"id": 3, "op": "receive", "args": {"folder": "/x", "size": "lots"}}
    assert served(tmp_path, bad, after) == [
        {
            "id": 3,
            "error": "place",
            "message": "the agent was sent files of no valid size; it stops: deploy again",
        }
    ]


def test_a_request_while_another_runs_is_refused_at_once(tmp_path: Path) -> None:
    folder = tmp_path / "releases" / "1" / "1"
    folder.mkdir(parents=True)
    args = {"folder": str(folder), "command": "sleep 1", "env": {}, "seconds": 30}
    second = {"id": 2, "op": "has_folder", "args": {"folder": str(folder)}}
    answers = served(tmp_path, {"id": 1, "op": "run", "args": args}, second, paced=False)
    assert answers[0] == {
        "id": 2,
        "error": "place",
        "message": "the agent is busy with another request; ask again once it has answered",
    }
    # stdin ended right after: onwatch gone, the build is stopped
    assert answers[1]["id"] == 1 and answers[1]["value"]["reason"] == "cancelled"


def test_a_build_that_leaves_processes_behind_ends_with_its_shell(tmp_path: Path) -> None:
    """One in its group is killed with it; one that left the group (setsid) may keep the
    output open: it is not waited for beyond LAST_OUTPUT_SECONDS."""
    folder = tmp_path / "releases" / "1" / "1"
    folder.mkdir(parents=True)
    for command in ("echo started; sleep 60 &", "setsid sleep 9 & echo started"):
        args: dict[str, Any] = {"folder": str(folder), "command": command, "env": {}, "seconds": 60}
        started = time.monotonic()
        answers = served(tmp_path, {"id": 1, "op": "run", "args": args})
        took = time.monotonic() - started
        assert took < agent.LAST_OUTPUT_SECONDS + 3, (command, took)
        assert [a.get("text") for a in answers[:-1]] == ["started"]
        assert answers[-1]["value"]["exit_code"] == 0


CHAINS = {
    "a link through an earlier link": [
        (entry("b", tarfile.SYMTYPE, "."), b""),
        (entry("up", tarfile.SYMTYPE, "b/b/b/b/../../../.."), b""),
        (entry("up/.ssh/authorized_keys"), b"ssh-ed25519 AAAA intruder\n"),
    ],
    "a file written through a link to a folder outside": [
        (entry("b", tarfile.SYMTYPE, "."), b""),
        (entry("b/b/../../escaped"), b"x"),
    ],
    "a link made to point out by a later one": [
        (entry("x", tarfile.SYMTYPE, "d/.."), b""),
        (entry("d", tarfile.SYMTYPE, "."), b""),
    ],
}


@pytest.mark.parametrize("python", [sys.executable, HOST_PYTHON])
def test_link_chains_that_lead_out_of_the_release_are_refused_on_any_python(
    tmp_path: Path, python: str
) -> None:
    """Debian 12's Python (3.11.2, the test hosts') has no tarfile data filter: the agent's
    own check is all there is there."""
    (tmp_path / "agent.pyz").write_bytes(remote.agent_archive()[1])
    home = tmp_path / "home"
    folder = home / "releases" / "1" / "1"
    for name, members in CHAINS.items():
        data = tar_of(*members)
        receive = {"id": 1, "op": "receive", "args": {"folder": str(folder), "size": len(data)}}
        sent = json.dumps(receive).encode() + b"\n" + data
        done = subprocess.run(
            [python, "-I", str(tmp_path / "agent.pyz"), "serve", str(home)],
            input=sent,
            capture_output=True,
            timeout=60,
        )
        [answer] = [json.loads(line) for line in done.stdout.splitlines()]
        assert answer.get("message", "").startswith("the release holds "), (name, answer)
        assert answer["message"].endswith("remove it from the repository, then deploy again")
        assert list(folder.parent.iterdir()) == [], name
        assert not (tmp_path / ".ssh").exists() and not (home / "releases" / "escaped").exists()


def not_copied(name: str) -> str:
    return (
        f"the release holds {name}, which onwatch does not copy (it is not a plain file, "
        "folder or link inside the release): remove it from the repository, then deploy again"
    )


def test_a_busy_sites_count_is_sent_summed_by_the_second_and_slot(tmp_path: Path) -> None:
    """10,000 answers in 5 s from two slots, a few of them 5xx and some Caddy's own: the
    agent sends a few sums, not every line, and nothing of what the watch judges by is
    lost (requests, 5xx, seconds, each slot's and Caddy's own, by the second)."""
    here = agent.Agent(tmp_path, io.BytesIO(), io.BytesIO())
    here.machine = switch.Machine(tmp_path / "machine")
    log = here.machine.caddy.request_log("busy.test")
    log.parent.mkdir(parents=True)
    lines, answers = [], []
    for n in range(10_000):
        started, upstream = 1000.0 + n / 2000, ("127.0.0.1:4001", "127.0.0.1:4002")[n % 2]
        status = 500 if n % 50 == 0 else 200
        made = n % 1000 == 999
        line: dict[str, object] = {
            "ts": started + 0.004,
            "duration": 0.004,
            "status": 502 if made else status,
        }
        line |= {} if made else {"upstream": upstream, "app_status": status}
        lines.append(json.dumps(line))
        answers.append(caddy._answer(lines[-1].encode()))
    log.write_text("\n".join(lines) + "\n")
    said = agent.counted_from(here, agent.Request(here, 1, {"domain": "busy.test", "offset": 0}))
    sent, raw = len(json.dumps(said)), len(json.dumps([dataclasses.asdict(a) for a in answers]))
    print(f"one look at 10,000 answers: {sent:,} bytes of sums against {raw:,} of lines")
    assert sent * 100 < raw
    assert said["offset"] == log.stat().st_size and "answers" not in said
    sums = [agent.Sum(**s) for s in said["sums"]]
    assert len(sums) == 15  # 5 seconds, 2 slots and Caddy's own
    assert sums == agent.summed(answers)
    assert sum(s.requests for s in sums) == 10_000
    assert sum(s.errors for s in sums) == sum(a.status >= 500 for a in answers) == 210
    assert sum(s.requests for s in sums if s.made) == 10
    assert sum(s.seconds for s in sums) == pytest.approx(sum(a.seconds for a in answers))
