"""The pipeline step sandbox, with real bubblewrap and real processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from django.test import override_settings

from onwatch.deploys import cgroups, netguard, sandbox, slirp
from onwatch.deploys.sandbox import Limits, SandboxError, Step
from tests.support.child import steps
from tests.support.procs import ROOT
from tests.support.steps import Output, folder, marker, processes_with, reachable_root, uids

# Uses no database of onwatch's: scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once

ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
# Small limits, so each test ends within seconds of one.
SMALL = Limits(seconds=20, memory_bytes=64 * 1024**2, processes=40, output_bytes=1024**2)


@pytest.fixture
def root() -> Iterator[Path]:
    with reachable_root() as path:
        yield path


@pytest.fixture
def workspace(root: Path) -> Path:
    return folder(root, "workspace")


def bash(
    script: str, workspace: Path, limits: Limits = SMALL, caches: dict[str, Path] | None = None
) -> Step:
    return Step(["bash", "-c", script], workspace, ENV, caches=caches or {}, limits=limits)


def test_it_passes_exit_codes_through(workspace: Path) -> None:
    failed = sandbox.run(bash("exit 3", workspace), Output())
    assert (failed.exit_code, failed.reason) == (3, "exited with 3")
    passed = sandbox.run(bash("true", workspace), Output())
    assert (passed.exit_code, passed.reason) == (0, None)


def test_the_step_gets_exactly_its_environment(workspace: Path) -> None:
    out = Output()
    env = {"PATH": "/usr/bin", "SECRET": "two\nlines"}
    assert sandbox.run(Step(["env", "-0"], workspace, env), out).exit_code == 0
    # bwrap adds the working directory, as a shell would.
    expected = [b"PATH=/usr/bin", b"SECRET=two\nlines", f"PWD={workspace}".encode()]
    assert sorted(out.data.split(b"\0")[:-1]) == sorted(expected)


def test_the_step_environment_is_on_no_command_line(workspace: Path) -> None:
    """ps shows every command line to every user; secrets travel another way."""
    secret, seen = marker(), list[int]()

    def look(chunk: bytes) -> None:
        seen.extend(processes_with(secret))

    env = {"PATH": "/usr/bin", "TOKEN": secret}
    done = sandbox.run(Step(["bash", "-c", "echo ready; sleep 0.3"], workspace, env), look)
    assert done.exit_code == 0
    assert seen == []


def test_output_reaches_the_caller_in_chunks_while_the_step_runs(workspace: Path) -> None:
    out = Output()
    started = time.monotonic()
    done = sandbox.run(bash("echo one; echo err >&2; sleep 1; echo two", workspace), out)
    ended = time.monotonic()
    assert done.exit_code == 0
    assert out.data == b"one\nerr\ntwo\n"
    assert done.output_bytes == len(out.data)
    # The first lines came before the sleep ended, not with the rest at the end.
    first_at = out.chunks[0][0]
    assert first_at - started < 0.9, f"first chunk {first_at - started:.2f} s after start"
    assert ended - first_at > 0.8


def test_the_step_runs_as_an_unprivileged_user(workspace: Path) -> None:
    word, seen = marker(), list[list[int]]()

    def look(chunk: bytes) -> None:
        seen.extend(uids(pid) for pid in processes_with(word))

    done = sandbox.run(bash(f"echo ready; : {word}; sleep 0.5", workspace), look)
    assert done.exit_code == 0
    assert seen, "no process of the step was found on the host"
    assert all(0 not in ids for ids in seen), seen


def test_a_step_sees_neither_onwatch_data_nor_key_file_nor_another_workspace(
    root: Path, workspace: Path
) -> None:
    # World-readable on purpose: only the sandbox's mounts keep them from the step.
    data = folder(root, "data")
    (data / "db.sqlite3").write_text("rows")
    key_file = folder(root, "keys") / "keyring.json"
    key_file.write_text("the-keys")
    other = folder(root, "other-service")
    (other / "secret.env").write_text("other-secret")
    for f in (data / "db.sqlite3", key_file, other / "secret.env"):
        f.chmod(0o644)
    out = Output()
    script = f"cat {key_file} {data}/db.sqlite3 {other}/secret.env; ls {data} {root}"
    with override_settings(DATA_DIR=data, KEY_FILE=key_file):
        done = sandbox.run(bash(script, workspace), out)
    assert done.exit_code != 0
    for secret in ("the-keys", "rows", "other-secret"):
        assert secret not in out.text
    assert out.text.count("No such file or directory") == 4, out.text
    # Of the folder that holds them all, the step sees its own workspace only.
    assert out.text.endswith(f"{root}:\nworkspace\n"), out.text


def test_a_step_starts_while_a_file_of_etc_it_reads_is_written_anew(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """useradd writes /etc/passwd anew (a new file renamed over the old) and onwatch adds a
    service's user as other services' steps start: a step whose sandbox bound the file as
    it was replaced failed ("Can't bind mount /oldroot/etc/passwd ... (deleted)", seen in
    the suite). The step reads a copy made as it starts. A file of the test's own stands
    for /etc/passwd (the real one is useradd's to write)."""
    name = f"/etc/onwatch-test.{os.getpid()}"
    monkeypatch.setattr(sandbox, "ETC_FILES", (*sandbox.ETC_FILES, name))
    Path(name).write_text("0\n")
    stop = threading.Event()

    def rewrite() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            Path(f"{name}+").write_text(f"{n}\n")
            os.rename(f"{name}+", name)

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        outs = [Output() for _ in range(30)]
        ends = [sandbox.run(bash(f"cat {name}", workspace), out) for out in outs]
    finally:
        stop.set()
        writer.join()
        os.unlink(name)
    assert [(end.exit_code, end.reason) for end in ends] == [(0, None)] * 30, [
        out.text for out in outs if "bwrap" in out.text
    ]
    assert all(out.text.strip().isdigit() for out in outs), [out.text for out in outs]
    assert len({out.text for out in outs}) > 1, "the file was not written anew meanwhile"


def test_a_step_writes_only_its_workspace_caches_and_private_tmp(
    root: Path, workspace: Path
) -> None:
    cache = folder(root, "uv-cache")
    open_to_all = folder(root, "open", mode=0o777)
    name = marker()
    script = (
        f"echo w > {workspace}/built; echo c > {cache}/wheel; echo t > /tmp/{name}; "
        f"echo x > {open_to_all}/evil; echo x > /usr/{name}; echo x > /etc/{name}; true"
    )
    out = Output()
    done = sandbox.run(bash(script, workspace, caches={"uv": cache}), out)
    assert done.exit_code == 0, out.text
    assert (workspace / "built").read_text() == "w\n"
    assert (cache / "wheel").read_text() == "c\n"
    assert not (open_to_all / "evil").exists()
    assert not Path(f"/tmp/{name}").exists()
    assert not Path(f"/usr/{name}").exists()
    assert not Path(f"/etc/{name}").exists()
    assert out.text.count("Read-only file system") + out.text.count("No such file") == 3


def shared_root(root: Path) -> tuple[Path, Path, Path]:
    """A service's folder as onwatch makes it: a workspace and a cache side by side, and
    another pipeline's workspace with a file in it. The folders are root's, the workspace
    and cache the step user's once handed over."""
    service = folder(root, "service", mode=0o711)
    cache = folder(folder(service, "caches", mode=0o711), "uv")
    (cache / "wheel.py").write_text("cached\n")
    other = folder(service, "6")
    (other / "secret").write_text("other-pipelines-file\n")
    return service, folder(service, "7"), cache


@pytest.mark.skipif(not sandbox.shares_root(), reason="steps run as onwatch's own user")
def test_in_a_shared_root_a_step_hard_links_from_its_cache_and_sees_nothing_else(
    root: Path,
) -> None:
    """uv hard-links from its cache into the workspace where both are on one mount (else
    it copies every file); the rest of the folder that holds them stays out of reach."""
    service, workspace, cache = shared_root(root)
    script = (
        f"ln {cache}/wheel.py {workspace}/wheel.py && stat -c 'links %h' {workspace}/wheel.py; "
        f"ls -A {service}/6; cat {service}/6/secret; touch {service}/6/x {service}/new; true"
    )
    step = Step(["bash", "-c", script], workspace, ENV, {"uv": cache}, SMALL, shared_root=service)
    out = Output()
    assert sandbox.run(step, out).exit_code == 0, out.text
    assert "links 2\n" in out.text
    assert (workspace / "wheel.py").stat().st_ino == (cache / "wheel.py").stat().st_ino
    assert "other-pipelines-file" not in out.text and "No such file" in out.text
    assert sorted(p.name for p in (service / "6").iterdir()) == ["secret"]
    assert not (service / "new").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="steps run as onwatch's own user")
def test_files_linked_into_the_workspace_stay_their_owners_and_the_step_cannot_change_them(
    root: Path, workspace: Path
) -> None:
    """As git.clone_local leaves a workspace: git's objects hard-linked from onwatch's own
    copy of the repository. The step reads them and cannot change them; one that others
    may not read (a closed umask), or that others may write, becomes a file of the
    workspace's own."""
    source = folder(root, "mirror")
    readable, closed, open_ = source / "pack", source / "loose", source / "open"
    modes = ((readable, 0o444), (closed, 0o400), (open_, 0o666))
    for path, mode in modes:
        path.write_text(f"{path.name}\n")
        path.chmod(mode)
        os.link(path, workspace / path.name)
    script = (
        "cat pack loose open; chmod u+w pack; echo x >> pack; echo x >> loose; "
        "echo x >> open; echo done"
    )
    out = Output()
    assert sandbox.run(bash(script, workspace), out).exit_code == 0, out.text
    assert "pack\nloose\nopen\n" in out.text and "done" in out.text
    assert "Operation not permitted" in out.text and "Permission denied" in out.text
    for path, mode in modes:
        st = path.stat()
        assert (path.read_text(), st.st_uid, st.st_mode & 0o777) == (f"{path.name}\n", 0, mode)
    assert (workspace / "pack").stat().st_ino == readable.stat().st_ino
    for name, was in (("loose", closed), ("open", open_)):
        assert (workspace / name).stat().st_ino != was.stat().st_ino
        assert (workspace / name).stat().st_uid != 0


def test_a_shared_root_must_hold_the_workspace_and_only_folders(root: Path) -> None:
    service, workspace, cache = shared_root(root)
    outside = folder(root, "elsewhere")
    with pytest.raises(SandboxError, match="must be inside"):
        sandbox.run(Step(["true"], outside, ENV, {"uv": cache}, shared_root=service), Output())
    if sandbox.shares_root():
        (service / "link").symlink_to("/etc")
        with pytest.raises(SandboxError, match="link is not a folder of onwatch's"):
            sandbox.run(Step(["true"], workspace, ENV, shared_root=service), Output())


def machine_address() -> str:
    """An IPv4 address of this machine other than loopback: what a step reaches it by."""
    said = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True
    )
    found = [line.split()[3].split("/")[0] for line in said.stdout.splitlines()]
    if not found:
        pytest.skip("this machine has no IPv4 address but loopback")
    return found[0]


@contextmanager
def answering(host: str) -> Iterator[int]:
    """A server on host that says hello to whoever connects; its port."""
    with socket.create_server((host, 0)) as server:
        server.settimeout(30)

        def answer() -> None:
            with contextlib.suppress(OSError):
                while True:
                    conn, _ = server.accept()
                    with conn:
                        conn.sendall(b"hello from " + host.encode() + b"\n")

        threading.Thread(target=answer, daemon=True).start()
        yield server.getsockname()[1]


def test_a_step_reaches_neither_this_machine_nor_link_local_addresses_but_registries(
    workspace: Path,
) -> None:
    """What listens here (onwatch's web port, a local database, Caddy's admin API) stays out
    of a step's reach by 127.0.0.1, localhost and slirp4netns's gateway, and what listens
    on every address by this machine's other addresses (its LAN address) too; so does the
    cloud metadata service at 169.254.169.254. A package registry (pypi.org, the one host
    this machine reaches outside) stays reachable."""
    assert sandbox.network_isolated(), "slirp4netns is not installed: apt-get install slirp4netns"
    outside = machine_address()
    with answering("127.0.0.1") as local, answering(outside) as lan:
        script = (
            f"for to in 127.0.0.1/{local} localhost/{local} 10.0.2.2/{local} {outside}/{lan} "
            "169.254.169.254/80 pypi.org/443; "
            # Why a connection failed, as the kernel said it: a blocked address is refused
            # at once ("Permission denied"); one that merely does not answer times out.
            'do if err=$(timeout 10 bash -c "exec 3<>/dev/tcp/$to" 2>&1); then echo "$to: open"; '
            'else echo "$to: refused, ${err##*: }"; fi; done 2>/dev/null; getent hosts localhost'
        )
        out = Output()
        done = sandbox.run(bash(script, workspace), out)
    assert done.exit_code == 0, out.text
    lines = out.text.splitlines()
    assert [line.split(",")[0] for line in lines[:6]] == [
        f"127.0.0.1/{local}: refused",
        f"localhost/{local}: refused",
        f"10.0.2.2/{local}: refused",
        f"{outside}/{lan}: refused",
        "169.254.169.254/80: refused",
        "pypi.org/443: open",
    ], out.text
    # This machine's other addresses and link-local ones are blocked by onwatch's routes,
    # not merely unanswered (no metadata service runs here to answer anyway).
    assert lines[3:5] == [
        f"{outside}/{lan}: refused, Permission denied",
        "169.254.169.254/80: refused, Permission denied",
    ], out.text
    assert "localhost" in lines[6]


def test_the_blocked_addresses_are_this_machines_own_and_link_local(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    blocked = netguard.blocked()
    assert blocked[0] == "169.254.0.0/16"
    assert f"{machine_address()}/32" in blocked
    assert not any(b.startswith("127.") for b in blocked)
    # An address in slirp4netns's own network would take its DNS server away: left out.
    monkeypatch.setattr(netguard, "machine_addresses", lambda: ["192.0.2.9", "10.0.2.3"])
    assert netguard.blocked() == ["169.254.0.0/16", "192.0.2.9/32"]


def test_a_step_resolves_names_through_its_own_network(workspace: Path) -> None:
    """The machine's resolver may sit on its loopback (systemd-resolved's 127.0.0.53), out
    of the step's reach: the step asks slirp4netns's, which forwards to it."""
    out = Output()
    done = sandbox.run(bash("cat /etc/resolv.conf", workspace), out)
    assert done.exit_code == 0, out.text
    assert out.text == "nameserver 10.0.2.3\n"


def test_steps_started_side_by_side_all_get_their_network(workspace: Path) -> None:
    """slirp4netns is attached only once bubblewrap has set up the step's own loopback:
    attached earlier, it brought the loopback up first and bubblewrap's setup failed
    ("loopback: Failed RTM_NEWADDR"), some 1 step in 40 here."""
    failures: list[str] = []

    def steps() -> None:
        for _ in range(30):
            out = Output()
            done = sandbox.run(bash("exec 3<>/dev/tcp/127.0.0.1/9 || true", workspace), out)
            if done.exit_code != 0:
                failures.append(out.text)

    threads = [threading.Thread(target=steps) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_steps_given_one_network_share_it_and_nothing_else(workspace: Path) -> None:
    """A pipeline's steps join the network made for it (one slirp4netns, one set of
    routes) rather than each get one: the same namespace, still kept off this machine and
    its link-local addresses, with routes the step cannot change; their /tmp stays each
    its own, and a step given none has a network of its own."""
    outside = machine_address()
    first = (
        "readlink /proc/self/ns/net; echo left > /tmp/left; ip route add prohibit 192.0.2.1 "
        "2>/dev/null && echo route added; ip route | grep -c prohibit"
    )
    reach = 'if timeout 10 bash -c "exec 3<>/dev/tcp/{0}" 2>/dev/null; then echo "{0}: open"; fi'
    with (
        answering("127.0.0.1") as local,
        answering(outside) as lan,
        sandbox.Network() as network,
    ):
        tries = (f"127.0.0.1/{local}", f"{outside}/{lan}", "pypi.org/443")
        second = "readlink /proc/self/ns/net; ls /tmp; " + "; ".join(map(reach.format, tries))
        outs = [Output(), Output()]
        for script, out in zip((first, second), outs, strict=True):
            step = replace(bash(script, workspace), network=network)
            assert sandbox.run(step, out).exit_code == 0, out.text
        alone = Output()
        assert sandbox.run(bash("readlink /proc/self/ns/net", workspace), alone).exit_code == 0
    netns, *said = outs[0].text.splitlines()
    assert said == ["2"]  # the link-local range and this machine's address; nothing added
    assert outs[1].text.splitlines() == [netns, "pypi.org/443: open"]
    assert alone.text.strip() != netns


def test_a_closed_network_leaves_nothing_of_it_running(workspace: Path) -> None:
    with sandbox.Network() as network:
        done = sandbox.run(replace(bash("true", workspace), network=network), Output())
        assert done.exit_code == 0
        holder, relay = network.child_pid, network.slirp
        assert relay is not None and Path(f"/proc/{holder}").exists()
    assert not Path(f"/proc/{holder}").exists()
    assert network.proc.returncode is not None  # bubblewrap, which reaped it
    deadline = time.monotonic() + slirp.STOP_SECONDS + 5
    while relay.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert relay.proc.returncode is not None


def test_a_network_whose_holder_died_fails_the_step_in_one_line(workspace: Path) -> None:
    with sandbox.Network() as network:
        network.join()  # it has named its process
        os.kill(network.child_pid, signal.SIGKILL)
        step = replace(bash("echo ran", workspace), network=network)
        out = Output()
        with pytest.raises(SandboxError, match="the steps' network could not be made"):
            sandbox.run(step, out)
        assert "ran" not in out.text
    assert network.proc.returncode is not None


def test_without_slirp4netns_steps_share_the_machines_network(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(slirp, "PATH", "/nonexistent")
    assert not sandbox.network_isolated()
    with answering("127.0.0.1") as local:
        out = Output()
        done = sandbox.run(
            bash(f"read -r line < /dev/tcp/127.0.0.1/{local}; echo $line", workspace), out
        )
    assert done.exit_code == 0, out.text
    assert out.text == "hello from 127.0.0.1\n"


def assert_stopped(done: sandbox.Outcome, reason: str, word: str, limit_s: float) -> None:
    assert done.exit_code is None
    assert done.reason == reason
    assert done.seconds < limit_s + 5, f"took {done.seconds:.1f} s"
    assert processes_with(word) == [], "something of the step is still running"
    # The test process itself can still start processes and allocate memory.
    assert subprocess.run(["true"], check=False).returncode == 0
    assert len(bytearray(64 * 1024**2)) == 64 * 1024**2


HOG = "python3 -c 'b = []\nwhile True: b.append(b\"x\" * 2**20)' {word}"


def test_an_endless_loop_is_stopped_at_the_time_limit(workspace: Path) -> None:
    word = marker()
    limits = Limits(seconds=2)
    step = bash(f"while :; do :; done # {word}", workspace, limits)
    done = sandbox.run(step, Output())
    assert_stopped(done, "stopped after 2 s, the step's time limit", word, 2)
    assert done.seconds >= 2


def test_a_fork_bomb_is_stopped_at_the_process_limit(workspace: Path) -> None:
    word = marker()
    bomb = f"b() {{ b | b & }}; b; sleep 60 # {word}"
    done = sandbox.run(bash(bomb, workspace), Output())
    assert_stopped(done, "started more than 40 processes, the step's limit", word, 0)


@pytest.fixture
def without_cgroups(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """As on a machine where onwatch cannot make a cgroup: rlimits and the pid namespace."""
    monkeypatch.setattr(cgroups, "create", lambda *limits: cgroups.Group())
    sandbox.memory_enforced_by.cache_clear()
    yield
    sandbox.memory_enforced_by.cache_clear()


def test_without_cgroups_a_fork_bomb_is_stopped_at_the_process_limit(
    workspace: Path, without_cgroups: None
) -> None:
    assert sandbox.memory_enforced_by() == "rlimit"
    word = marker()
    bomb = f"b() {{ b | b & }}; b; sleep 60 # {word}"
    # As a user of its own: without cgroups the limit is RLIMIT_NPROC, which counts all of
    # a user's processes on the machine, so the bomb's would fill the shared step user's
    # count and a step of another test starting meanwhile would be refused ("exited with
    # 1" in 5 ms, seen in the suite).
    step = replace(bash(bomb, workspace), user="daemon") if os.geteuid() == 0 else None
    done = sandbox.run(step or bash(bomb, workspace), Output())
    assert_stopped(done, "started more than 40 processes, the step's limit", word, 0)


def test_without_cgroups_each_process_has_the_memory_limit(
    workspace: Path, without_cgroups: None
) -> None:
    word, out = marker(), Output()
    done = sandbox.run(bash(HOG.format(word=word), workspace), out)
    assert (done.exit_code, done.reason) == (1, "exited with 1")
    assert "MemoryError" in out.text
    assert done.seconds < 5
    assert processes_with(word) == []


def test_without_cgroups_processes_together_have_the_memory_limit(
    workspace: Path, without_cgroups: None
) -> None:
    word = marker()
    # Each holds 40 MiB, under the limit alone; four of them are not.
    one = "python3 -c 'import time; b = b\"x\" * 40 * 2**20; time.sleep(60)'"
    done = sandbox.run(
        bash(f"for i in 1 2 3 4; do {one} & done; wait # {word}", workspace), Output()
    )
    assert_stopped(done, "used more than 64 MiB of memory, the step's limit", word, 0)


def test_a_memory_hog_is_stopped_at_the_memory_limit(workspace: Path) -> None:
    if sandbox.memory_enforced_by() != "cgroup":
        pytest.skip("onwatch cannot make a memory cgroup here")
    word = marker()
    done = sandbox.run(bash(HOG.format(word=word) + "; sleep 60", workspace), Output())
    assert_stopped(done, "used more than 64 MiB of memory, the step's limit", word, 0)


def test_a_step_printing_gigabytes_is_stopped_at_the_output_limit(workspace: Path) -> None:
    word = marker()
    out = Output()
    done = sandbox.run(bash(f"head -c 5G /dev/zero # {word}", workspace), out)
    assert_stopped(done, "printed more than 1 MiB, the step's limit", word, 0)
    assert len(out.data) == 1024**2
    assert done.output_bytes > 1024**2


def test_a_step_printing_empty_lines_is_stopped_at_the_line_limit(workspace: Path) -> None:
    """Each line is a row of the log: a flood of short ones is stopped by their number
    long before their bytes reach the limit, and no line past it is passed on."""
    word = marker()
    out = Output()
    limits = Limits(seconds=20, output_bytes=1024**2, output_lines=10_000)
    done = sandbox.run(bash(f"yes '' # {word}", workspace, limits), out)
    assert_stopped(done, "printed more than 10,000 lines, the step's limit", word, 0)
    assert bytes(out.data) == b"\n" * 10_000


def test_cancel_stops_the_step_at_once(workspace: Path) -> None:
    word, cancelled = marker(), threading.Event()

    def cancel_on_output(chunk: bytes) -> None:
        cancelled.set()

    step = bash(f"echo started; sleep 60 & sleep 60 # {word}", workspace)
    done = sandbox.run(step, cancel_on_output, cancelled)
    assert_stopped(done, "cancelled", word, 0)


def test_a_step_cancelled_before_it_started_leaves_nothing(workspace: Path) -> None:
    word, cancelled = marker(), threading.Event()
    cancelled.set()
    done = sandbox.run(bash(f"sleep 60 # {word}", workspace), Output(), cancelled)
    assert_stopped(done, "cancelled", word, 0)


def test_a_step_made_ahead_starts_its_command_only_when_started(workspace: Path) -> None:
    """Made while another step runs: set up, networked, and waiting for its turn."""
    step = bash("touch ran && echo ran", workspace)
    with sandbox.Ahead(step) as ahead:
        ahead.wait()
        time.sleep(0.3)  # time enough to run it, were it let
        assert not (workspace / "ran").exists()
        out = Output()
        done = ahead.follow(out, threading.Event())
    assert (done.exit_code, done.reason) == (0, None), out.text
    assert (workspace / "ran").exists() and out.text == "ran\n"


def test_a_sandbox_made_before_its_command_is_known_runs_the_one_given_at_its_start(
    workspace: Path,
) -> None:
    """A pipeline's first step: its sandbox is made while the checkout brings the file
    that names its command. The step is that command, as if given from the start."""
    step = Step(sandbox.LATER, workspace, ENV, limits=SMALL)
    out = Output()
    command = "echo $0: $(tr '\\0' ' ' < /proc/$$/cmdline); exit 4"
    with sandbox.Ahead(step) as ahead:
        ahead.start(["bash", "-c", command, "two words"])
        done = ahead.follow(out, threading.Event())
    assert (done.exit_code, done.reason) == (4, "exited with 4"), out.text
    assert out.text == f"two words: bash -c {command} two words\n"
    with sandbox.Ahead(step) as ahead, pytest.raises(SandboxError, match="longer than 32 KiB"):
        ahead.start(["bash", "-c", "#" * 40_000])


def test_a_step_made_ahead_but_not_run_leaves_nothing(workspace: Path) -> None:
    word = marker()
    ours = f"{cgroups.PREFIX}{os.getpid()}-*"  # tests running beside it make their own
    groups = {p: set(p.glob(ours)) for p, _v2 in cgroups.parents().values()}
    with sandbox.Ahead(bash(f"touch ran # {word}", workspace)) as ahead:
        ahead.wait()
        assert processes_with(word), "the sandbox was not made"
        assert groups != {p: set(p.glob(ours)) for p in groups}
    assert not processes_with(word) and not (workspace / "ran").exists()
    assert groups == {p: set(p.glob(ours)) for p in groups}


def test_a_step_made_ahead_has_its_whole_time_limit_from_its_start(workspace: Path) -> None:
    step = bash("sleep 1.5 && echo done", workspace, Limits(seconds=2))
    with sandbox.Ahead(step) as ahead:
        time.sleep(2.5)  # the step before it, running long
        done = ahead.follow(Output(), threading.Event())
    assert (done.exit_code, done.reason) == (0, None)
    assert 1.5 <= done.seconds < 2


def test_a_step_made_ahead_that_cannot_be_made_fails_when_it_starts(root: Path) -> None:
    data = folder(root, "data")
    with override_settings(DATA_DIR=str(data)):
        ahead = sandbox.Ahead(bash("true", root))
    with ahead, pytest.raises(SandboxError, match="would expose"):
        ahead.start()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs bubblewrap as the step user")
def test_a_sandbox_made_before_its_command_that_dies_first_says_it_could_not_start(
    workspace: Path, root: Path
) -> None:
    """Its bubblewrap ended while the checkout ran (here: a tool folder the step user may
    not enter), so nothing reads the command any more: the step fails as it would had its
    command been given when it was made, bubblewrap's own words in its output."""
    tools = folder(folder(root, "closed", mode=0o700), "tools")
    step = Step(sandbox.LATER, workspace, ENV, readonly=[tools], limits=SMALL)
    out = Output()
    with sandbox.Ahead(step) as ahead:
        ahead.wait()
        assert ahead.launch is not None
        ahead.launch.proc.wait(timeout=10)
        ahead.start(["bash", "-c", "echo ran"])
        done = ahead.follow(out, threading.Event())
    given = Output()  # the same sandbox, its command given when made
    as_given = sandbox.run(Step(["true"], workspace, ENV, readonly=[tools], limits=SMALL), given)
    assert (done.exit_code, done.reason) == (as_given.exit_code, as_given.reason) != (0, None)
    assert out.text == given.text and f"source path {tools}" in out.text


def test_when_onwatch_dies_its_step_dies_too_and_leaves_no_cgroup(workspace: Path) -> None:
    word = marker()
    argv = [sys.executable, "-m", steps.__name__, str(workspace), word]
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "onwatch.settings"}
    worker = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline() == "running\n"
        assert processes_with(word)
    finally:
        worker.kill()
        worker.wait()
    deadline = time.monotonic() + 5
    while processes_with(word):
        assert time.monotonic() < deadline, "the step outlived the onwatch that ran it"
        time.sleep(0.05)
    # The next step sweeps away the cgroups the dead one left.
    assert sandbox.run(bash("true", workspace), Output()).exit_code == 0
    for parent, _v2 in cgroups.parents().values():
        assert not list(parent.glob(f"{cgroups.PREFIX}{worker.pid}-*"))


def test_without_bubblewrap_it_says_what_to_install(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sandbox.LAUNCH_ENV, "PATH", str(tmp_path))
    assert sandbox.problem() == "install bubblewrap: apt-get install bubblewrap"
    with pytest.raises(SandboxError, match="install bubblewrap"):
        sandbox.run(bash("true", workspace), Output())


def test_where_steps_can_run_there_is_no_problem() -> None:
    assert sandbox.problem() is None


def test_when_bubblewrap_may_not_make_namespaces_it_says_so(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What bwrap says where AppArmor forbids user namespaces (Ubuntu 24.04).
    tools = folder(root, "bin")
    bwrap = tools / "bwrap"
    bwrap.write_text(
        '#!/bin/sh\n[ "$1" = --version ] && echo bubblewrap 0.8.0 && exit\n'
        "echo 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n"
    )
    bwrap.chmod(0o755)
    for tool in ("sh", "prlimit", "setpriv"):
        (tools / tool).symlink_to(shutil.which(tool) or tool)
    monkeypatch.setitem(sandbox.LAUNCH_ENV, "PATH", str(tools))
    monkeypatch.setattr(sandbox, "_trial_passed", False)
    assert sandbox.problem() == (
        "bubblewrap cannot make a sandbox here (bwrap: setting up uid map: Permission denied); "
        "let unprivileged users make user namespaces "
        "(on Ubuntu: sysctl kernel.apparmor_restrict_unprivileged_userns=0)"
    )


def test_an_old_bubblewrap_is_named(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tools = folder(root, "bin")
    (tools / "bwrap").write_text("#!/bin/sh\necho bubblewrap 0.6.1\n")  # Ubuntu 22.04's
    (tools / "bwrap").chmod(0o755)
    monkeypatch.setitem(sandbox.LAUNCH_ENV, "PATH", str(tools))
    assert sandbox.problem() == (
        "bubblewrap 0.6.1 is too old for onwatch's sandbox (--size, --disable-userns); "
        "install 0.8 or newer (Debian 12, Ubuntu 24.04)"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs steps as another user")
def test_as_root_it_names_a_step_user_that_does_not_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONWATCH_STEP_USER", "onwatch-no-such-user")
    assert sandbox.problem() == (
        "ONWATCH_STEP_USER=onwatch-no-such-user is not a user on this machine; create it "
        "(adduser --system onwatch-steps) or name another unprivileged user"
    )


def test_a_folder_is_under_itself_and_its_parents_only() -> None:
    under = sandbox._under
    assert under(Path("/a/b"), Path("/a/b")) and under(Path("/a/b/c"), Path("/a"))
    assert under(Path("/a"), Path("/")) and under(Path("/"), Path("/"))
    assert not under(Path("/a/bc"), Path("/a/b")) and not under(Path("/a"), Path("/a/b"))


def test_it_refuses_a_workspace_that_holds_onwatch_data(root: Path) -> None:
    data = folder(root, "data")
    with override_settings(DATA_DIR=data), pytest.raises(SandboxError, match="would expose"):
        sandbox.run(bash("true", root), Output())
    with pytest.raises(SandboxError, match="would expose /usr"):
        sandbox.run(bash("true", Path("/usr/share")), Output())
    with pytest.raises(SandboxError, match="would expose"):
        sandbox.run(bash("true", Path("/")), Output())


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands workspaces to the step user")
def test_as_root_it_says_when_the_step_user_cannot_reach_the_workspace(root: Path) -> None:
    closed = folder(root, "closed", mode=0o700)
    workspace = folder(closed, "workspace")
    with pytest.raises(SandboxError, match=f"{closed} is closed to other users"):
        sandbox.run(bash("true", workspace), Output())


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands workspaces to the step user")
def test_as_root_it_says_when_a_folder_for_workspaces_is_closed_to_the_step_user(
    root: Path,
) -> None:
    closed = folder(root, "work", mode=0o700)
    assert sandbox.out_of_reach("folder", closed) == (
        f"the step's folder {closed} is out of the step user's reach: {closed} is closed to "
        f"other users; keep workspaces and caches under a folder others may pass through "
        f"(chmod o+x {closed}), or run onwatch as its own user"
    )
    closed.chmod(0o711)
    assert sandbox.out_of_reach("folder", closed) is None
